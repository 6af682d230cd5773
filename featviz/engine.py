"""The engine: regularized gradient ascent in input space for a batch of objectives, in one
jit-compiled program (vmap over images, a loop over steps). No files, no display.

Each image has its own PRNG key, parameters and optimizer state, so an image depends only on
its objective, its key and the batch shape: the same batch gives the same images bit for bit,
and channel 5 rendered alone or inside a batch of 64 gives the same picture up to rounding
(XLA's kernels for another batch shape round differently).

The program's shapes and code depend only on the model, the objectives' form, the batch size,
the image size, the parameterization, the transforms, the optimizer and the precision. The
number of steps, the learning rate, the redirected-gradient warm-up, the seed and the channels
are data: changing them never recompiles. The host runs the steps in segments of
``SEGMENT`` steps (one call of the program each), so a progress callback sees every segment.

Example:
    >>> import jax
    >>> from featviz import load_model, objectives as obj
    >>> model = load_model()
    >>> renderer = Renderer(model, size=64, steps=8)
    >>> result = renderer([obj.channel("blocks_3", c) for c in (0, 1)], channel_keys(0, [0, 1]))
    >>> result.images.shape, result.trace.shape
    ((2, 64, 64, 3), (2, 8))
    >>> renderer([obj.channel("blocks_3", 2)] * 2, channel_keys(1, [2, 2]), steps=20).trace.shape
    (2, 20)
"""
from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from . import cache, programs, rectifier_rules
from . import objectives as objectives_lib
from .models.base import Model
from .param import Parameterization, image
from .draws import abstract_keys, derive_key, seeded_keys
from .transforms import Transform, compose, standard_transforms

SEGMENT = 32  # steps per call of the compiled program
# the learning rate at the first and the last step, as multiples of ``lr``
DEFAULT_LR_RAMP = (1.6, 0.5)
_BACKGROUND = ThreadPoolExecutor(max_workers=1)  # compiles the final evaluation meanwhile

# Recent XLA:CPU hands matmuls and convolutions to YNNPACK; for this program (small matmuls
# and input gradients inside a loop) XLA's own kernels made a step 10-15% faster on the CPU
# measured (benchmarks/RESULTS.md).
_COMPILER_OPTIONS = {"cpu": {"xla_cpu_experimental_ynn_fusion_type": ""}}
_REFUSED_OPTIONS: set = set()  # platforms whose XLA rejected those options


def compiler_options(platform: str) -> dict:
    """The XLA options featviz compiles its render program with on ``platform``.

    On a GPU, ``FEATVIZ_GPU_AUTOTUNE_LEVEL`` (0-4; XLA's default is 4) sets how much XLA
    autotunes convolutions and matmuls while compiling, which costs compile time and may
    gain speed (``benchmarks/bench_end_to_end.py`` measures both).
    """
    options = dict(_COMPILER_OPTIONS.get(platform, {}))
    level = os.environ.get("FEATVIZ_GPU_AUTOTUNE_LEVEL", "")
    if platform == "gpu" and level.isdigit():
        options["xla_gpu_autotune_level"] = int(level)
    return options


def compile_lowered(lowered, platform: str):
    """Compile with featviz's options for ``platform``; an XLA that does not know an option
    (older or newer than the one measured) compiles without them."""
    options = compiler_options(platform)
    if options and platform not in _REFUSED_OPTIONS:
        try:
            return lowered.compile(compiler_options=options)
        except Exception:  # noqa: BLE001 - XLA reports an unknown option as a generic error
            _REFUSED_OPTIONS.add(platform)
    return lowered.compile()


@dataclass(frozen=True)
class RenderResult:
    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    trace: np.ndarray   # (N, steps) objective under the random transforms, per step
    final: np.ndarray   # (N,) objective of the final image, untransformed
    # (N,) the same on the layers' values after their rectifiers (``final`` where the
    # renderer optimizes those, or no layer read has a pre-activation)
    final_post: np.ndarray
    # (N, H, W): with Renderer(transparency=True), MaCo's transparency map, the absolute
    # gradient of the objective with respect to each pixel, summed over colours and steps
    transparency: np.ndarray | None = None


@jax.jit
def _evaluate(objectives, activations, images):
    """A stacked batch of objectives, each on its activations and image."""
    return jax.vmap(lambda o, a, img: o(a, img))(objectives, activations, images)


def channel_keys(seed: int, indices: Sequence[int]) -> jax.Array:
    """One PRNG key per channel, derived from the seed and the channel index (not its position)."""
    return seeded_keys(seed, indices)


def default_optimizer(learning_rate: float = 0.05) -> optax.GradientTransformation:
    """Adam whose learning rate is data (``optax.inject_hyperparams``): one compiled program
    serves every learning rate."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def ramped_rate(first, last, step, steps):
    """The learning rate at ``step`` (0-based) of a render of ``steps`` steps: it falls
    linearly from ``first`` to ``last``.

    >>> [float(ramped_rate(4.0, 1.0, i, 4)) for i in range(4)]
    [4.0, 3.0, 2.0, 1.0]
    """
    return first + (last - first) * step / jnp.maximum(steps - 1, 1)


def _has_learning_rate(state) -> bool:
    return isinstance(getattr(state, "hyperparams", None), dict) and \
        "learning_rate" in state.hyperparams


def _settable_rate(optimizer) -> float | None:
    """``optimizer``'s own learning rate if the rate in its state sets its step (an
    ``optax.inject_hyperparams`` optimizer with a numeric rate), else None (a fixed rate, or a
    schedule, which is recomputed at each step whatever the state holds). Two tiny steps
    tell."""
    param = jnp.zeros(2)
    state = optimizer.init(param)
    if not _has_learning_rate(state):
        return None
    def step(lr):
        return optimizer.update(jnp.ones(2), _with_learning_rate(state, lr), param)[0]
    if np.allclose(step(1.0), step(2.0)):
        return None
    return float(state.hyperparams["learning_rate"])


def _with_learning_rate(state, lr):
    """``state`` of an ``inject_hyperparams`` optimizer with its learning rate set to ``lr``
    (a traced scalar); other states unchanged."""
    if not _has_learning_rate(state):
        return state
    rates = jnp.broadcast_to(lr, state.hyperparams["learning_rate"].shape)
    return state._replace(hyperparams={**state.hyperparams, "learning_rate": rates})


@dataclass(frozen=True, eq=False)
class ProgramSettings:
    """What fixes a render program's code and shapes (besides the objectives' form and the
    batch size); frozen, so a compiled program never outlives the settings it was built for."""

    size: int
    param: Parameterization
    transform: Transform
    optimizer: optax.GradientTransformation
    batch_objective: Callable | None
    compute_dtype: jnp.dtype
    mesh: Mesh | None
    activation: str  # "pre": objectives on a rectified layer read its pre-activation
    transparency: bool = False


class Renderer:
    """Renders batches of objectives on one model; compiles once per objective form and batch
    size, then reuses the program for any channels, seeds, step counts and learning rates.

    Defaults are Lucid's: 128 px, 512 steps, Adam(0.05), Fourier + decorrelated colour +
    sigmoid, pad/jitter/scale/rotate/jitter, except that Adam's rate is ramped: it falls
    linearly from ``lr_ramp[0] * lr`` at the first step to ``lr_ramp[1] * lr`` at the last
    (``lr_ramp=(1, 1)`` keeps Lucid's constant rate). The ramp's default, (1.6, 0.5), gives
    images of more contrast that drive their objective as hard (benchmarks/RESULTS.md).

    With ``devices`` (e.g. ``jax.devices()``), each batch is sharded over a 1-D mesh of those
    devices. ``compute_dtype=jnp.bfloat16`` runs the network in bfloat16 (weights and
    activations) while the image parameters, optimizer and objectives stay float32. During the
    first ``redirect_steps`` steps, a rectifier whose gradient is zero for an image passes
    Lucid's redirected gradient instead (``featviz.rectifier_rules``), so that channels which
    start dead come to life.

    ``activation="pre"`` (the default, as in Lucid): an objective on a rectified or capped
    layer (one with ``model.pre_activation(layer)``, e.g. EfficientNet's relu6 ``head``)
    optimizes the values before the rectifier, whose gradient a saturated unit does not stop;
    ``"post"`` optimizes the layer's own values. Results hold the objective on both.

    ``steps``, ``lr``, ``lr_ramp`` and ``redirect_steps`` are defaults that each call may
    override. A custom ``optimizer`` is used as given: its own rate, no ramp. Built with
    ``optax.inject_hyperparams`` and a numeric rate (as the default Adam is), its rate can be
    set and ramped by ``lr`` and ``lr_ramp``; otherwise passing them is an error.

    A parameterization may name the transforms it is meant for (``param.maco`` does); they
    replace the standard ones unless ``transforms`` is given. With ``transparency=True`` the
    program also sums, over the steps, the absolute gradient of each objective with respect to
    its image (MaCo's transparency map, ``RenderResult.transparency``; ``image.with_alpha``
    shows it).
    """

    def __init__(self, model: Model, *, size: int = 128, steps: int = 512, lr: float | None = None,
                 lr_ramp: tuple[float, float] | None = None,
                 param: Parameterization | None = None,
                 transforms: Sequence[Transform] | None = None,
                 optimizer: optax.GradientTransformation | None = None,
                 batch_objective=None, devices: Sequence | None = None,
                 compute_dtype=jnp.float32, redirect_steps: int = 8, activation: str = "pre",
                 transparency: bool = False):
        if activation not in ("pre", "post"):
            raise ValueError(f"activation must be 'pre' or 'post', not {activation!r}")
        if not (isinstance(size, (int, np.integer)) and size >= 1):
            raise ValueError(f"size must be a whole number of pixels, at least 1, not {size!r}")
        self.model = model
        self.steps, self.redirect_steps = steps, redirect_steps
        own_rate = 0.05 if optimizer is None else _settable_rate(optimizer)  # Lucid's, or its own
        self._rate_settable = own_rate is not None
        if (lr is not None or lr_ramp is not None) and not self._rate_settable:
            raise ValueError(_FIXED_RATE)
        # a fixed-rate optimizer never reads it: 0.05 stands in
        self.lr = float(lr if lr is not None else own_rate if own_rate is not None else 0.05)
        # a custom optimizer is used as given: no ramp unless one is asked for
        self.lr_ramp = _checked_ramp(lr_ramp) if lr_ramp is not None else \
            DEFAULT_LR_RAMP if optimizer is None else (1.0, 1.0)
        # all of the program's code is featviz's defaults: it may go to the program store
        self._code_is_known = (all(v is None for v in (param, transforms, optimizer,
                                                       batch_objective))
                               and not devices and not transparency)
        param = param or image(size, channels=model.input_channels)
        _check_image_shape(param, (size, size, model.input_channels))
        if transforms is None:
            transforms = param.transforms() if param.transforms else standard_transforms()
        _check_transforms(transforms, (size, size, model.input_channels))
        self.settings = ProgramSettings(
            size=size, param=param, transform=compose(transforms),
            # the default's own rate is a placeholder: each call sets the rate it renders with
            optimizer=optimizer or default_optimizer(), batch_objective=batch_objective,
            compute_dtype=jnp.dtype(compute_dtype),
            mesh=Mesh(np.asarray(devices), ("batch",)) if devices else None,
            activation=activation, transparency=transparency)
        self.traces = 0           # how many times the program was traced (i.e. compiled)
        self.compile_seconds = 0.0  # spent tracing, lowering and compiling (or loading) programs
        self._program = jax.jit(self._segment)
        self._executables: dict = {}
        self._params = self._network_params()

    @property
    def size(self) -> int:
        return self.settings.size

    @property
    def compute_dtype(self):
        return self.settings.compute_dtype

    @property
    def mesh(self) -> Mesh | None:
        return self.settings.mesh

    @property
    def devices(self) -> list:
        """The devices a batch runs on."""
        return self.mesh.devices.ravel().tolist() if self.mesh is not None else [jax.devices()[0]]

    def _network_params(self):
        """The model's parameters in the compute precision, replicated over the mesh: prepared
        once, not per batch."""
        params = jax.tree_util.tree_map(
            lambda a: a.astype(self.compute_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
            self.model.params)
        if self.mesh is not None:
            params = jax.device_put(params, NamedSharding(self.mesh, P()))
        return params

    def _layers_needed(self, objectives) -> tuple:
        layers = set(objectives.layers)
        layer_of_batch_term = getattr(self.settings.batch_objective, "layer", None)
        if self.settings.batch_objective is not None:
            layers |= {layer_of_batch_term} if layer_of_batch_term else set(self.model.layers)
        return tuple(sorted(layers))

    def optimized_layers(self, layers) -> dict[str, str]:
        """Each layer -> the layer the network is asked for: its pre-activation, if it has one
        and the renderer optimizes those."""
        pre = self.settings.activation == "pre"
        return {layer: (pre and self.model.pre_activations.get(layer)) or layer
                for layer in layers}

    def _objective_values(self, model_params, objectives, images, transformed, redirect):
        """Each image's objective (and the activations): the network runs only up to the
        layers the objectives read; ``redirect`` (a traced boolean) switches the rectifiers
        to the redirected gradient."""
        reads = self.optimized_layers(self._layers_needed(objectives))
        x = self.model.preprocess(transformed).astype(self.compute_dtype)
        wanted = tuple(sorted(set(reads.values())))
        acts = rectifier_rules.evaluate(lambda p, v: self.model.apply(p, v, wanted), model_params,
                                        x, rule="unblocked", on=redirect)
        acts = {layer: acts[read].astype(jnp.float32) for layer, read in reads.items()}
        return _evaluate(objectives, acts, images), acts

    def final_values(self, objectives, images) -> tuple[np.ndarray, np.ndarray]:
        """Each objective on its image as it is, untransformed, in float32, on the layers the
        renderer optimizes and on their post-rectifier values: through the model's own
        compiled forward program (``Model.activations``), which every objective form that
        reads the same layers shares, so the render program carries no second network."""
        reads = self.optimized_layers(objectives.layers)
        wanted = sorted(set(reads) | set(reads.values()))
        acts = self.model.activations(images, layers=wanted) if wanted else {}
        post = np.asarray(_evaluate(objectives, {k: acts[k] for k in reads}, images))
        if all(read == layer for layer, read in reads.items()):
            return post, post
        optimized = {layer: acts[read] for layer, read in reads.items()}
        return np.asarray(_evaluate(objectives, optimized, images)), post

    def _initial_state(self, init_keys):
        params = jax.vmap(self.settings.param.init)(init_keys)
        state = params, jax.vmap(self.settings.optimizer.init)(params)
        if self.settings.transparency:  # the transparency map so far
            state += (jnp.zeros((init_keys.shape[0], self.size, self.size), jnp.float32),)
        return state

    def _segment(self, model_params, objectives, keys, state, start, stop, steps, lr_first,
                 lr_last, redirect_until):
        """Steps ``start`` to ``stop`` (at most ``SEGMENT``) of ``steps`` from ``state`` (from
        the keys' initial images when ``start`` is 0), the learning rate ramped from
        ``lr_first`` to ``lr_last`` over the ``steps``; returns the new state, the objective per
        step, and the images."""
        self.traces += 1
        settings = self.settings
        init_keys = jax.vmap(lambda k: derive_key(k, 0))(keys)
        step_keys = jax.vmap(lambda k: derive_key(k, 1))(keys)
        state = jax.tree_util.tree_map(lambda fresh, s: jnp.where(start == 0, fresh, s),
                                       self._initial_state(init_keys), state)
        params, opt_state = state[:2]

        def loss_of_images(images, keys_now, redirect):
            transformed = jax.vmap(settings.transform)(keys_now, images)
            values, acts = self._objective_values(model_params, objectives, images, transformed,
                                                  redirect)
            total = values.sum()
            if settings.batch_objective is not None:
                total = total + settings.batch_objective(acts)
            return -total, values

        def loss(p, keys_now, redirect):
            return loss_of_images(jax.vmap(settings.param.to_image)(p), keys_now, redirect)

        def step(i, carry):
            p, opt, trace = carry[:3]
            keys_now = jax.vmap(lambda k: derive_key(k, i))(step_keys)
            if settings.transparency:  # the gradient passes through the images, kept on the way
                images, to_params = jax.vjp(jax.vmap(settings.param.to_image), p)
                image_grads, values = jax.grad(loss_of_images, has_aux=True)(
                    images, keys_now, i < redirect_until)
                grads, = to_params(image_grads)
                extra = (carry[3] + jnp.abs(image_grads).sum(-1),)
            else:
                grads, values = jax.grad(loss, has_aux=True)(p, keys_now, i < redirect_until)
                extra = ()
            opt = _with_learning_rate(opt, ramped_rate(lr_first, lr_last, i, steps))
            updates, opt = jax.vmap(settings.optimizer.update)(grads, opt, p)
            trace = jax.lax.dynamic_update_slice(trace, values[:, None], (0, i - start))
            return (optax.apply_updates(p, updates), opt, trace) + extra

        trace = jnp.zeros((keys.shape[0], SEGMENT), jnp.float32)
        params, opt_state, trace, *extra = jax.lax.fori_loop(
            start, stop, step, (params, opt_state, trace) + tuple(state[2:]))
        return (params, opt_state, *extra), trace, jax.vmap(settings.param.to_image)(params)

    def __call__(self, objectives, keys, *, steps: int | None = None, lr: float | None = None,
                 lr_ramp: tuple[float, float] | None = None, redirect_steps: int | None = None,
                 on_segment: Callable[[int], None] | None = None) -> RenderResult:
        """Render a list of objectives (or an already stacked batch), one key per image.

        ``steps``, ``lr``, ``lr_ramp`` and ``redirect_steps`` override the renderer's defaults
        for this call (none of them recompiles); ``on_segment(steps)`` is called after each
        segment with the number of steps it ran.
        A list may mix forms (say channels and a class logit): they share one batch and one
        compiled program, in which each image computes its own form.
        """
        run = dict(steps=self.steps if steps is None else steps,
                   lr=self.lr if lr is None else lr,
                   lr_ramp=self.lr_ramp if lr_ramp is None else _checked_ramp(lr_ramp),
                   redirect_steps=self.redirect_steps if redirect_steps is None else redirect_steps,
                   on_segment=on_segment)
        if run["steps"] < 1:
            raise ValueError(f"steps must be at least 1, not {run['steps']}")
        if not (np.isfinite(run["lr"]) and run["lr"] > 0):
            raise ValueError(f"lr must be a positive number, not {run['lr']!r}")

        if (lr is not None or lr_ramp is not None) and not self._rate_settable:
            raise ValueError(_FIXED_RATE)
        if isinstance(objectives, (list, tuple)):
            if len(objectives) != len(keys) or not objectives:
                raise ValueError(f"{len(objectives)} objectives and {len(keys)} keys: pass at "
                                 "least one objective and one key for each "
                                 "(featviz.channel_keys(seed, range(n)))")
            objectives = objectives_lib.stack(objectives)
        return self._render_stacked(objectives, keys, **run)

    def _state_shapes(self, n: int):
        """Shapes and dtypes of the parameters and optimizer state of a batch of ``n`` images."""
        keys = abstract_keys((n,))
        return jax.eval_shape(self._initial_state, keys)

    def _placed(self, tree, sharded: bool):
        """``tree`` on the renderer's devices: split along the batch, or replicated."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, NamedSharding(self.mesh, P("batch") if sharded else P()))

    def _render_stacked(self, objectives, keys, *, steps, lr, lr_ramp, redirect_steps,
                        on_segment) -> RenderResult:
        objectives_lib.check_indices(objectives, lambda layer: self.model.layer_shape(layer,
                                                                                     self.size))
        n, unpadded = keys.shape[0], objectives
        if self.mesh is not None:  # pad the batch to a multiple of the devices
            extra = -n % self.mesh.size
            objectives, keys = jax.tree_util.tree_map(
                lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]), (objectives, keys))
        objectives, keys = self._placed((objectives, keys), sharded=True)
        state = self._placed(jax.tree_util.tree_map(
            lambda s: np.zeros(s.shape, s.dtype), self._state_shapes(keys.shape[0])), sharded=True)
        scalars = self._placed((np.int32(steps), np.float32(lr * lr_ramp[0]),
                                np.float32(lr * lr_ramp[1]), np.int32(redirect_steps)),
                               sharded=False)
        # the final images' forward program compiles (or loads) meanwhile: XLA compiles each
        # program on one core
        blank = np.zeros((n, self.size, self.size, self.model.input_channels), np.float32)
        final_ready = _BACKGROUND.submit(self.final_values, unpadded, blank)
        program = self._executable(objectives, keys, state)
        traces = []
        for start in range(0, steps, SEGMENT):
            stop = min(start + SEGMENT, steps)
            bounds = self._placed((np.int32(start), np.int32(stop)), sharded=False)
            state, trace, images = program(self._params, objectives, keys, state,
                                           *bounds, *scalars)
            traces.append(np.asarray(trace)[:n, :stop - start])
            if on_segment is not None:
                on_segment(stop - start)
        images = np.asarray(images)[:n]
        if not np.isfinite(images).all():
            warnings.warn("some rendered images are not finite (NaN or infinite): an "
                          "objective's value or gradient was not a number, e.g. a division "
                          "by zero", RuntimeWarning, stacklevel=3)
        final_ready.result()
        transparency = np.asarray(state[2])[:n] if self.settings.transparency else None
        return RenderResult(images, np.concatenate(traces, axis=1),
                            *self.final_values(unpadded, images), transparency)

    def compiled(self, objectives, keys):
        """The compiled program for this batch of objectives (compiled once, then cached): its
        ``memory_analysis()`` and ``cost_analysis()`` tell what a batch costs (one segment's
        loop body counts once in the cost analysis)."""
        if isinstance(objectives, (list, tuple)):
            objectives = objectives_lib.stack(objectives)
        state = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                       self._state_shapes(keys.shape[0]))
        return self._executable(*self._placed((objectives, keys, state), sharded=True))

    def _store_key(self, objectives, keys) -> str | None:
        """This batch's key in the program store, or None if its code is not all featviz's
        (``featviz.programs``)."""
        signature = programs.objective_signature(objectives)
        if not (self._code_is_known and self.model.program_id and signature
                and jax.process_count() == 1):  # several processes: JAX's cache keys topology
            return None
        device = self.devices[0]
        return programs.program_key({
            "program": "render segment", "model": self.model.program_id,
            "weights": programs.weight_signature(self._params),
            "size": self.size, "compute_dtype": str(self.compute_dtype),
            "objectives": signature, "keys": (keys.shape, str(keys.dtype)),
            "reads": sorted(self.optimized_layers(objectives.layers).items()),
            "platform": device.platform, "device": device.device_kind,
            "options": compiler_options(device.platform)})

    def _executable(self, objectives, keys, state):
        """The compiled program for this batch's form and shapes, compiled (or loaded from the
        persistent cache) once, and checked to fit in device memory."""
        leaves, form = jax.tree_util.tree_flatten(objectives)
        cache_key = (form, tuple((np.shape(a), str(a.dtype)) for a in leaves), keys.shape)
        if cache_key not in self._executables:
            cache.enable_persistent_cache()
            began = time.perf_counter()
            store_key = self._store_key(objectives, keys)
            compiled = programs.load(store_key) if store_key else None
            if compiled is None:
                scalars = self._placed((np.int32(0),) * 3 + (np.float32(0),) * 2 + (np.int32(0),),
                                       sharded=False)
                lowered = self._program.lower(self._params, objectives, keys, state, *scalars)
                hits = programs.jax_cache_hits()
                compiled = compile_lowered(lowered, self.devices[0].platform)
                if store_key and programs.jax_cache_hits() == hits:  # compiled here, now
                    programs.save(store_key, compiled)
            self.compile_seconds += time.perf_counter() - began
            check_memory(compiled, keys.shape[0], self.devices)
            self._executables[cache_key] = compiled
        return self._executables[cache_key]


class ChunkTooLargeError(ValueError):
    """A batch of images that would not fit in device memory; ``fits`` is a size that does."""

    def __init__(self, message: str, fits: int):
        super().__init__(message)
        self.fits = fits


_FIXED_RATE = ("this optimizer sets its own learning rate; pass it without lr= and lr_ramp=, "
               "or build it as optax.inject_hyperparams(optax.adam)(learning_rate=0.05) "
               "(a number, not a schedule) to set and ramp the rate")
RAMP_RANGE = (1e-3, 1e3)  # the multiples a ramp may take


def _checked_ramp(ramp) -> tuple[float, float]:
    """``ramp`` as two floats, or a ValueError unless it is two numbers in ``RAMP_RANGE``."""
    try:
        if isinstance(ramp, str):
            raise TypeError
        first, last = (float(r) for r in ramp)
    except (TypeError, ValueError):
        raise ValueError(f"lr_ramp must be two numbers (first, last), not {ramp!r}") from None
    low, high = RAMP_RANGE
    if not all(low <= r <= high for r in (first, last)):  # also refuses NaN
        raise ValueError(f"lr_ramp must be two numbers from {low:g} to {high:g}, not {ramp!r}")
    return first, last


def _check_image_shape(param: Parameterization, shape: tuple) -> None:
    """Refuse a parameterization whose images are not ``shape`` (say, ``param.maco(32)`` given
    to a renderer of another size), which would fail later deep inside the program."""
    made = jax.eval_shape(param.to_image, jax.eval_shape(param.init, abstract_keys())).shape
    if tuple(made) != tuple(shape):
        raise ValueError(f"the parameterization makes images of shape {tuple(made)} but this "
                         f"renderer needs {tuple(shape)}: build it for size={shape[0]}, or "
                         f"pass size={made[0]} to the renderer")


def _check_transforms(transforms: Sequence[Transform], shape: tuple) -> None:
    """Refuse a transform that is not ``(key, image) -> image`` (say, ``transforms.pad`` where
    ``transforms.pad(12)`` was meant)."""
    for t in transforms:
        try:
            jax.eval_shape(t, abstract_keys(), jax.ShapeDtypeStruct(shape, jnp.float32))
        except Exception as err:  # noqa: BLE001 - whatever the callable raises
            raise ValueError(f"{getattr(t, '__qualname__', t)!s} is not a transform "
                             "(key, image) -> image; build one, e.g. transforms.pad(12) or "
                             f"transforms.jitter(8) ({type(err).__name__})") from None


def free_memory_bytes(device) -> int:
    """Memory still free on ``device`` (for CPU devices: the host's available memory, page
    cache included, as the kernel reports it in /proc/meminfo)."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def program_bytes(compiled) -> int:
    """Device memory a compiled program needs: its arguments, outputs and temporaries."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return 0
    return (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes)


def check_memory(compiled, batch: int, devices) -> None:
    """Raise ``ChunkTooLargeError`` (with a chunk size that fits) if the compiled program needs
    more memory per device than the devices have free."""
    need = program_bytes(compiled)
    free = min(free_memory_bytes(d) for d in devices)
    if need > free:
        fits = max(1, int(batch * 0.8 * free / need))
        raise ChunkTooLargeError(
            f"a chunk of {batch} images needs {need / 2**30:.1f} GiB per device but only "
            f"{free / 2**30:.1f} GiB is free; use --chunk {fits} (or fewer)", fits)


def render(model: Model, objectives: Sequence, *, seed: int = 0, **settings) -> RenderResult:
    """One-off render of a list of objectives; image i uses key ``channel_keys(seed, [i])``.

    Build a ``Renderer`` instead to render many batches with one compiled program.
    """
    return Renderer(model, **settings)(list(objectives), channel_keys(seed, range(len(objectives))))
