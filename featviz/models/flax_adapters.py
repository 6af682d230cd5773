"""Flax modules as featviz models: ``from_linen`` and ``from_nnx`` expose named submodule
outputs and sown values through ``Model.apply(params, x, layers=None) -> {layer: activations}``.

Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Tiny(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
    ...         self.sow("intermediates", "relu1", x)
    ...         return nn.Dense(2, name="out")(x.mean((1, 2)))
    >>> net = Tiny()
    >>> params = net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    >>> model = from_linen(net, params, layers=["conv1", "relu1", "out"])
    >>> model.layer_shapes(16)
    {'conv1': (16, 16, 4), 'relu1': (16, 16, 4), 'out': (2,)}
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn, traverse_util

from ..errors import UnknownLayerError
from .base import ApplyFn, Model, _identity, _requested

_LINEN_HINT = ("are the variables {'params': ...}? does it need apply_kwargs={'train': False}? "
              "pass input_channels= and image_size= if they differ")
_NNX_HINT = ("call module.eval() first, so that BatchNorm and Dropout are in inference mode; pass "
            "input_channels= and image_size= if they differ")


def _with_pre_activations(layers: Sequence[str], pre_activations: dict) -> tuple:
    """The layers an adapter's ``apply`` answers for: the exposed ones and their pre-activations."""
    return tuple(layers) + tuple(v for v in pre_activations.values() if v not in layers)


def _input_channels(apply, params, layers: tuple, preprocess, size: int, hint: str) -> int:
    """How many channels the network's input has: 3 (RGB) if it accepts them, else 1 (grey).
    Every layer is asked for, so that a name the module never produces is refused now."""
    refusals = []
    for channels in (3, 1):
        x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
        try:
            jax.eval_shape(lambda p, v: apply(p, preprocess(v), layers), params, x)
            return channels
        except UnknownLayerError:
            raise
        except Exception as refusal:  # noqa: BLE001 - whatever the module raises
            refusals.append(refusal)
    reason = (str(refusals[0]).strip().splitlines() or [""])[0]
    raise ValueError(f"the module fails on a ({size}, {size}, 3) and on a ({size}, {size}, 1) "
                     f"input; on the first: {type(refusals[0]).__name__}: {reason} ({hint})")


def _pick(found: dict, wanted: tuple, hint: str) -> dict:
    """The wanted layers from what the module produced, in order; a clear error for the rest."""
    missing = set(wanted) - set(found)
    if missing:
        raise UnknownLayerError(
            f"the module never produced layer(s) {sorted(missing)}; name {hint}")
    return {k: found[k] for k in wanted}


def _layer_name(path: tuple) -> str:
    parts = [p for p in path if p != "__call__"]
    return "/".join(parts)


def _sown(intermediates) -> dict:
    """``{layer name: last value}`` of a linen ``intermediates`` collection."""
    flat: dict[tuple, Any] = traverse_util.flatten_dict(dict(intermediates or {}))
    return {_layer_name(path): value[-1] for path, value in flat.items()}


class _LayersReady(Exception):
    """Raised inside a linen forward pass once every requested layer has been computed."""

    def __init__(self, found: dict):
        super().__init__("requested layers computed")
        self.found = found


def _adapted(module, apply: ApplyFn, params: Any, layers: Sequence[str], exposed: tuple, *,
             name: str | None, preprocess: Callable, image_size: int,
             class_names: Sequence[str] | None, pre_activations: dict,
             input_channels: int | None, hint: str) -> Model:
    """The ``Model`` both adapters return: named after the module's class unless ``name`` is
    given, its input channels found by trying the module when not given (``hint``: what to
    check when the module refuses both)."""
    return Model(name=name or type(module).__name__, apply=apply, params=params,
                 layers=tuple(layers), preprocess=preprocess, image_size=image_size,
                 class_names=class_names, pre_activations=pre_activations,
                 input_channels=input_channels or _input_channels(
                     apply, params, exposed, preprocess, image_size, hint))


def _linen_apply(module, exposed: tuple, apply_kwargs: dict) -> ApplyFn:
    """``apply`` of a linen module: it runs the module until every requested layer (submodule
    output or sown value) has been computed."""
    hint = "a submodule path or a value sown into 'intermediates'"

    def apply(p, x, layers=None):
        wanted = _requested(layers, exposed)
        found: dict = {}

        def stop_when_ready(next_fun, args, kwargs, context):
            # Before and after every submodule call, look at what has been computed so far
            # (submodule outputs, and values sown in between); once every requested layer is
            # there, leave the forward pass: nothing after it is traced.
            def check():
                found.update(_sown(getattr(context.module.scope.root, "_variables", {})
                                   .get("intermediates")))
                if all(k in found for k in wanted):
                    raise _LayersReady(found)

            check()
            y = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and "/".join(context.module.path) in wanted:
                found["/".join(context.module.path)] = y
            check()
            return y

        try:
            with nn.intercept_methods(stop_when_ready):
                _, state = module.apply(p, x, mutable=["intermediates"], **apply_kwargs)
            found.update(_sown(state.get("intermediates")))
        except _LayersReady:
            pass
        return _pick(found, wanted, hint)

    return apply


def from_linen(module, params, layers: Sequence[str], *, name: str | None = None,
               preprocess: Callable = _identity, image_size: int = 224,
               class_names: Sequence[str] | None = None,
               apply_kwargs: dict | None = None, pre_activations: dict | None = None,
               input_channels: int | None = None) -> Model:
    """Adapt a ``flax.linen`` module: expose the named submodule outputs or sown values.

    A layer name is a submodule path joined by ``/`` (its ``__call__`` output, e.g.
    ``"conv1"`` or ``"block/conv"``) or the name of a value the module stores with
    ``self.sow("intermediates", name, x)``. ``params`` are the module's variables, any
    collections (``params``, ``batch_stats``, ...); ``apply_kwargs`` go to every
    ``module.apply`` call, e.g. ``{"train": False}`` for a network with BatchNorm or Dropout.
    ``pre_activations`` maps a rectified layer to the one holding its values before the
    rectifier (``{"relu1": "conv1"}``), which objectives on it then optimize by default.
    ``input_channels`` is 3 (RGB) or 1 (grey); None: found by trying the module on both.
    """
    apply_kwargs = dict(apply_kwargs or {})
    pre_activations = dict(pre_activations or {})
    exposed = _with_pre_activations(layers, pre_activations)
    return _adapted(module, _linen_apply(module, exposed, apply_kwargs), params, layers,
                    exposed, name=name, preprocess=preprocess, image_size=image_size,
                    class_names=class_names, pre_activations=pre_activations,
                    input_channels=input_channels, hint=_LINEN_HINT)


def from_nnx(module, layers: Sequence[str], *, name: str | None = None,
             preprocess: Callable = _identity, image_size: int = 224,
             class_names: Sequence[str] | None = None,
             pre_activations: dict | None = None, input_channels: int | None = None) -> Model:
    """Adapt a ``flax.nnx`` module: expose values it stores with
    ``self.sow(nnx.Intermediate, name, x)`` and the outputs of submodules (by attribute path
    joined with ``/``, e.g. ``"conv1"``). Its ``nnx.Param`` variables become ``Model.params``;
    its other state (``nnx.BatchNorm``'s running statistics) is used as it is: call
    ``module.eval()`` first, so that BatchNorm uses its running averages and Dropout is off.
    ``pre_activations`` and ``input_channels`` as for ``from_linen``.

    Example:
        >>> from flax import nnx
        >>> class Net(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.conv1 = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        ...     def __call__(self, x):
        ...         x = nnx.relu(self.conv1(x))
        ...         self.sow(nnx.Intermediate, "relu1", x)
        ...         return x.mean((1, 2))
        >>> model = from_nnx(Net(nnx.Rngs(0)), layers=["conv1", "relu1"], image_size=16)
        >>> model.layer_shapes(16)
        {'conv1': (16, 16, 4), 'relu1': (16, 16, 4)}
    """
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    pre_activations = dict(pre_activations or {})
    exposed = _with_pre_activations(layers, pre_activations)

    def apply(p, x, layers=None):
        wanted = _requested(layers, exposed)
        net = nnx.merge(graphdef, p, rest)
        _, captured = nnx.capture(net, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
        found = {}
        for path, variable in nnx.to_flat_state(captured):
            value = variable.get_value() if hasattr(variable, "get_value") else variable.value
            found[_layer_name(tuple(str(k) for k in path))] = value[-1]
        return _pick(found, wanted, "a submodule attribute or a value sown as nnx.Intermediate")

    return _adapted(module, apply, params, layers, exposed, name=name, preprocess=preprocess,
                    image_size=image_size, class_names=class_names,
                    pre_activations=pre_activations, input_channels=input_channels,
                    hint=_NNX_HINT)
