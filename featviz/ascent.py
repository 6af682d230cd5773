"""The ascent itself, pure and optax-shaped: ``init`` makes a batch's starting state from its
keys, ``run_segment`` runs steps ``start`` to ``stop`` of a render on it. No files, devices or
counters: ``featviz.engine.Renderer`` drives it.

A step vmaps the parameterization and the transforms over the batch, runs the network once on
the whole batch (only up to the layers the objectives read) and vmaps the optimizer's update,
so each image keeps its own optimizer state. Everything that fixes the program's code is in
``AscentSettings`` (static, hashable); the step count, the learning rate's ramp, the warm-up
length, the keys and the objectives' leaves are data, so changing them recompiles nothing.

Example:
    >>> import jax, numpy as np
    >>> from featviz import load_model, objectives as obj
    >>> from featviz.draws import seeded_keys
    >>> from featviz import Renderer
    >>> settings = Renderer(load_model("tiny"), size=32).settings  # featviz's defaults
    >>> keys = seeded_keys(0, [0, 1])
    >>> objectives = obj.stack([obj.channel("conv2", 0), obj.channel("conv2", 1)])
    >>> state = init(settings, keys)
    >>> schedule = Schedule.of(start=0, stop=4, steps=4, lr=0.05, ramp=(1.0, 1.0))
    >>> state, trace, images = segment(settings, settings.model.params, objectives, keys,
    ...                                state, schedule)
    >>> trace.shape == (2, settings.steps_per_call), images.shape
    (True, (2, 32, 32, 3))
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from . import rectifier_rules
from .draws import derive_key
from .models.base import Model, per_model
from .param import Parameterization
from .rates import ramped_rate, with_learning_rate
from .transforms import Transform

SEGMENT = 32  # steps the host runs between two progress reports
# The forms of a segment's program: "rolled" runs its steps in one rolled loop; "unroll<U>" in
# a loop of SEGMENT guarded steps, unrolled U times; "host" runs one step per call, the host
# calling it once per step (``steps_per_call``). ``featviz.engine`` chooses one per network.
LOOPS = ("rolled", "unroll2", "unroll4", "unroll8", "host")


class AscentState(NamedTuple):
    """A batch's image parameters and optimizer states (each with the batch axis first)."""

    params: Any
    opt_state: Any
    # with AscentSettings(transparency=True): (N, H, W) summed absolute image gradients so far
    transparency: jax.Array | None = None


class Schedule(NamedTuple):
    """Which steps a call runs and at what rate (all scalars, data of the program: numpy
    scalars as built, traced arrays inside it)."""

    start: ArrayLike           # first step of this segment (0: start from the keys' images)
    stop: ArrayLike            # one past its last step (at most start + SEGMENT)
    steps: ArrayLike           # steps of the whole render
    lr_first: ArrayLike        # learning rate at step 0 ...
    lr_last: ArrayLike         # ... and at step steps - 1, linear in between
    redirect_until: ArrayLike  # steps before this one use the redirected rectifier gradient

    @classmethod
    def of(cls, *, start: int, stop: int, steps: int, lr: float, ramp: tuple[float, float],
           redirect_steps: int = 8) -> Schedule:
        return cls(np.int32(start), np.int32(stop), np.int32(steps), np.float32(lr * ramp[0]),
                   np.float32(lr * ramp[1]), np.int32(redirect_steps))


@dataclass(frozen=True, eq=False)
class AscentSettings:
    """What fixes the program's code and shapes (besides the objectives' form and the batch
    size). Hashed by identity: a compiled program never outlives the settings it was built for.
    """

    model: Model
    size: int
    param: Parameterization
    transform: Transform
    optimizer: optax.GradientTransformation
    batch_objective: Callable | None = None
    compute_dtype: Any = jnp.float32
    activation: str = "pre"  # "pre": objectives on a rectified layer read its pre-activation
    transparency: bool = False
    loop: str = "rolled"  # the segment's form: one of LOOPS

    @property
    def steps_per_call(self) -> int:
        """Steps one call of the program runs at most (and columns of its trace)."""
        return 1 if self.loop == "host" else SEGMENT

    def optimized_layers(self, layers) -> dict[str, str]:
        """Each layer -> the layer the network is asked for: its pre-activation, if it has one
        and the settings optimize those."""
        pre = self.activation == "pre"
        return {layer: (pre and self.model.pre_activations.get(layer)) or layer
                for layer in layers}


@per_model
def runs_convolutions(model: Model, size: int) -> bool:
    """Whether the network's forward pass on ``size`` px images runs XLA convolutions
    (``conv_general_dilated``), as Keras's and Flax's convolution layers do (featviz's
    EfficientNet-Lite on a CPU runs shifted multiplies and matmuls instead); traced once."""
    x = jax.ShapeDtypeStruct((1, size, size, model.input_channels), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda v: model.apply(model.params, model.preprocess(v)))(x)
    return _has_convolution(jaxpr.jaxpr)


def _has_convolution(jaxpr) -> bool:
    """Whether ``jaxpr`` or one of its inner programs (calls, loops, custom gradients) runs a
    convolution."""
    def inner(value):
        if hasattr(value, "eqns"):
            return [value]
        if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):  # a closed jaxpr
            return [value.jaxpr]
        if isinstance(value, (tuple, list)):
            return [j for v in value for j in inner(v)]
        return []
    return any(eqn.primitive.name == "conv_general_dilated"
               or any(_has_convolution(j) for v in eqn.params.values() for j in inner(v))
               for eqn in jaxpr.eqns)


@jax.jit
def evaluate(objectives, activations, images):
    """A stacked batch of objectives, each on its activations and image."""
    return jax.vmap(lambda o, a, img: o(a, img))(objectives, activations, images)


def layers_needed(settings: AscentSettings, objectives) -> tuple:
    """The layers a step reads: the objectives', and the batch term's (all, if it names none)."""
    layers = set(objectives.layers)
    if settings.batch_objective is not None:
        own = getattr(settings.batch_objective, "layer", None)
        layers |= {own} if own else set(settings.model.layers)
    return tuple(sorted(layers))


def objective_values(settings: AscentSettings, model_params, objectives, images, transformed,
                     redirect):
    """Each image's objective (and the activations): the network runs only up to the layers
    the objectives read; ``redirect`` (a traced boolean) switches the rectifiers to the
    redirected gradient."""
    model = settings.model
    reads = settings.optimized_layers(layers_needed(settings, objectives))
    x = model.preprocess(transformed).astype(settings.compute_dtype)
    wanted = tuple(sorted(set(reads.values())))
    acts = rectifier_rules.evaluate(lambda p, v: model.apply(p, v, wanted), model_params,
                                    x, rule="unblocked", on=redirect)
    acts = {layer: acts[read].astype(jnp.float32) for layer, read in reads.items()}
    return evaluate(objectives, acts, images), acts


def init(settings: AscentSettings, init_keys) -> AscentState:
    """The starting state of a batch: each image's parameters from its key, fresh optimizers."""
    params = jax.vmap(settings.param.init)(init_keys)
    transparency = None
    if settings.transparency:
        transparency = jnp.zeros((init_keys.shape[0], settings.size, settings.size), jnp.float32)
    return AscentState(params, jax.vmap(settings.optimizer.init)(params), transparency)


def _loss(settings, model_params, objectives, step_keys, redirect):
    """The batch's negated objective as a function of its images: what a step descends."""
    def of_images(images, i):
        keys_now = jax.vmap(lambda k: derive_key(k, i))(step_keys)
        transformed = jax.vmap(settings.transform)(keys_now, images)
        values, acts = objective_values(settings, model_params, objectives, images,
                                        transformed, redirect(i))
        total = values.sum()
        if settings.batch_objective is not None:
            total = total + settings.batch_objective(acts)
        return -total, values
    return of_images


def run_segment(settings: AscentSettings, model_params, objectives, keys, state: AscentState,
                schedule: Schedule):
    """Steps ``schedule.start`` to ``schedule.stop`` of a render from ``state`` (from the keys'
    starting images when ``start`` is 0; at most ``settings.steps_per_call`` steps); returns
    the new state, the objective per step (one column per step of a block
    ``settings.steps_per_call`` wide), and the images."""
    init_keys = jax.vmap(lambda k: derive_key(k, 0))(keys)
    step_keys = jax.vmap(lambda k: derive_key(k, 1))(keys)
    state = jax.tree_util.tree_map(lambda fresh, s: jnp.where(schedule.start == 0, fresh, s),
                                   init(settings, init_keys), state)
    to_images = jax.vmap(settings.param.to_image)
    loss_of_images = _loss(settings, model_params, objectives, step_keys,
                           lambda i: i < schedule.redirect_until)

    def gradients(p, i, transparency):
        if not settings.transparency:
            return jax.grad(lambda q: loss_of_images(to_images(q), i), has_aux=True)(p) + (None,)
        images, to_params = jax.vjp(to_images, p)  # the gradient passes through the images
        image_grads, values = jax.grad(loss_of_images, has_aux=True)(images, i)
        grads, = to_params(image_grads)
        return grads, values, transparency + jnp.abs(image_grads).sum(-1)

    def step(i, carry):
        (p, opt, transparency), trace = carry
        grads, values, transparency = gradients(p, i, transparency)
        rate = ramped_rate(schedule.lr_first, schedule.lr_last, i, schedule.steps)
        updates, opt = jax.vmap(settings.optimizer.update)(grads, with_learning_rate(opt, rate),
                                                           p)
        trace = jax.lax.dynamic_update_slice(trace, values[:, None], (0, i - schedule.start))
        return AscentState(optax.apply_updates(p, updates), opt, transparency), trace

    trace = jnp.zeros((keys.shape[0], settings.steps_per_call), jnp.float32)
    state, trace = _looped(settings.loop, step, schedule, (state, trace))
    return state, trace, to_images(state.params)


def _looped(loop: str, step, schedule: Schedule, carry):
    """``step`` over steps ``schedule.start`` to ``schedule.stop`` in the form ``loop``."""
    if loop == "host":  # the host calls the program once per step
        return step(schedule.start, carry)
    if loop == "rolled":
        return jax.lax.fori_loop(schedule.start, schedule.stop, step, carry)
    def guarded(j, c):  # an unrolled loop needs a static trip count: SEGMENT steps, guarded
        i = schedule.start + j
        return jax.lax.cond(i < schedule.stop, step, lambda _, unchanged: unchanged, i, c)
    return jax.lax.fori_loop(0, SEGMENT, guarded, carry, unroll=int(loop.removeprefix("unroll")))


segment = jax.jit(run_segment, static_argnums=0)
