"""Adam's learning rate: its default, its ramp over a render, and what a custom optimizer lets
be set.

featviz's Adam takes its rate as data (``optax.inject_hyperparams``), so one compiled program
serves every rate and every ramp. A custom optimizer is used as given (its own rate, no ramp)
unless it is built the same way with a numeric rate; then ``lr`` and ``lr_ramp`` apply to it.

Example:
    >>> import optax
    >>> settable_rate(default_optimizer(0.5)), settable_rate(optax.adam(0.1))
    (0.5, None)
    >>> [float(ramped_rate(4.0, 1.0, i, 4)) for i in range(4)]
    [4.0, 3.0, 2.0, 1.0]
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

from .config import DEFAULT_LR, DEFAULT_LR_RAMP, RenderConfig
from .errors import ConfigError

FIXED_RATE = ("this optimizer sets its own learning rate; pass it without lr= and lr_ramp=, "
              "or build it as optax.inject_hyperparams(optax.adam)(learning_rate=0.05) "
              "(a number, not a schedule) to set and ramp the rate")


def default_optimizer(learning_rate: float = DEFAULT_LR) -> optax.GradientTransformation:
    """Adam whose learning rate is data: one compiled program serves every learning rate."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def ramped_rate(first, last, step, steps):
    """The learning rate at ``step`` (0-based) of a render of ``steps`` steps: it falls
    linearly from ``first`` to ``last``."""
    return first + (last - first) * step / jnp.maximum(steps - 1, 1)


def has_learning_rate(state) -> bool:
    """Whether an optimizer state carries a learning rate that can be set."""
    return isinstance(getattr(state, "hyperparams", None), dict) and \
        "learning_rate" in state.hyperparams


def with_learning_rate(state, lr):
    """``state`` of an ``inject_hyperparams`` optimizer with its learning rate set to ``lr``
    (a traced scalar); other states unchanged."""
    if not has_learning_rate(state):
        return state
    rates = jnp.broadcast_to(lr, state.hyperparams["learning_rate"].shape)
    return state._replace(hyperparams={**state.hyperparams, "learning_rate": rates})


def settable_rate(optimizer) -> float | None:
    """``optimizer``'s own learning rate if the rate in its state sets its step (an
    ``inject_hyperparams`` optimizer with a numeric rate), else None (a fixed rate, or a
    schedule, which is recomputed at each step whatever the state holds). Two tiny steps tell."""
    param = jnp.zeros(2)
    state = optimizer.init(param)
    if not has_learning_rate(state):
        return None

    def step(lr):
        return optimizer.update(jnp.ones(2), with_learning_rate(state, lr), param)[0]
    if np.allclose(step(1.0), step(2.0)):
        return None
    return float(state.hyperparams["learning_rate"])


def resolved(config: RenderConfig, optimizer) -> tuple[RenderConfig, bool]:
    """``config`` with its rate and ramp filled in for ``optimizer`` (None: featviz's Adam),
    and whether the rate can be set; ``ConfigError`` where a rate is asked of an optimizer
    that sets its own."""
    own = DEFAULT_LR if optimizer is None else settable_rate(optimizer)
    if (config.lr is not None or config.lr_ramp is not None) and own is None:
        raise ConfigError(FIXED_RATE)
    # a fixed-rate optimizer never reads the rate: the default stands in
    lr = config.lr if config.lr is not None else own if own is not None else DEFAULT_LR
    ramp = config.lr_ramp if config.lr_ramp is not None else \
        DEFAULT_LR_RAMP if optimizer is None else (1.0, 1.0)
    return config.replace(lr=lr, lr_ramp=ramp), own is not None
