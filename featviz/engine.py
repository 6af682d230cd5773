"""The renderer: drives ``featviz.ascent``'s compiled program over a batch of objectives (pad
and shard the batch, run it in segments, report progress, evaluate the final images).

Each image has its own PRNG key, parameters and optimizer state, so an image depends only on
its objective, its key, its settings and how many images share a device: the same batch gives
the same images bit for bit, and channel 5 rendered alone or inside a batch of 64 gives the
same picture up to rounding (XLA's kernels for another batch shape round differently).

The number of steps, the learning rate and its ramp, the redirected-gradient warm-up, the seed
and the channels are data: changing them never recompiles. The host runs the steps in segments
of ``SEGMENT`` steps (one call of the program each, or one call per step where the network runs
faster so: ``segment_loop``), so a progress callback sees every segment.

Example:
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
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from . import ascent, compiler, objectives as objectives_lib, rates
from .ascent import SEGMENT, AscentSettings, AscentState, Schedule
from .config import RenderConfig
from .draws import abstract_keys, seeded_keys
from .errors import ConfigError
from .memory import check_memory
from .models.base import Model
from .models.layers import KERNELS_ENV
from .param import Parameterization, image, named as named_param
from .transforms import Transform, compose, standard_transforms

__all__ = ["SEGMENT", "RenderResult", "Renderer", "channel_keys", "render"]
_BACKGROUND = ThreadPoolExecutor(max_workers=1)  # compiles the final evaluation meanwhile
_PER_CALL = ("steps", "lr", "lr_ramp", "redirect_steps")  # settings a call may override
LOOP_ENV = "FEATVIZ_SEGMENT_LOOP"  # forces the segment's form (``segment_loop``)


@dataclass(frozen=True)
class RenderResult:
    """What a render returns, one row per image.

    Args:
        images: (N, H, W, C) float32 in [0, 1].
        trace: (N, steps) the objective under the random transforms, per step.
        final: (N,) the objective of the final image, untransformed.
        final_post: (N,) the same on the layers' values after their rectifiers (``final``
            where the renderer optimizes those, or no layer read has a pre-activation).
        transparency: (N, H, W) with ``transparency=True``, MaCo's transparency map: the
            absolute gradient of the objective with respect to each pixel, summed over colours
            and steps; else None.
    """

    images: np.ndarray
    trace: np.ndarray
    final: np.ndarray
    final_post: np.ndarray
    transparency: np.ndarray | None = None


def channel_keys(seed: int, indices: Sequence[int]) -> jax.Array:
    """One PRNG key per channel, derived from the seed and the channel index (not its position)."""
    return seeded_keys(seed, indices)


class Renderer:
    """Renders batches of objectives on one model; compiles once per objective form and batch
    size, then reuses the program for any channels, seeds, step counts and learning rates.

    Args:
        model: the network.
        config: the render settings (``featviz.RenderConfig``; default: Lucid's, with Adam's
            rate ramped from 1.6x to 0.5x); keyword ``settings`` (``size=64, steps=8, ...``,
            any of its fields) change it. ``steps``, ``lr``, ``lr_ramp`` and
            ``redirect_steps`` are defaults that each call may override.
        param: a ``Parameterization`` (or a name of one) instead of ``config.param``. One
            that names its own transforms (``param.maco``) brings them, unless ``transforms``
            is given.
        transforms: the random transforms applied before each step (default: Lucid's).
        optimizer: used as given: its own rate, no ramp. Built with
            ``optax.inject_hyperparams`` and a numeric rate (as the default Adam is), its rate
            can be set and ramped by ``lr`` and ``lr_ramp``; otherwise passing them is an error.
        batch_objective: a term on the whole batch's activations (e.g. ``objectives.diversity``).
        devices: shard each batch over these devices (e.g. ``jax.devices()``): each device runs
            the one-device program on its share, so the images depend on how many images each
            device holds, not on how many devices there are.
        transparency: also sum, over the steps, each image's absolute gradient (MaCo's
            transparency map, ``RenderResult.transparency``; ``image.with_alpha`` shows it).

    With ``activation="pre"`` (the default, as in Lucid) an objective on a rectified or capped
    layer (one with ``model.pre_activation(layer)``, e.g. EfficientNet's relu6 ``head``)
    optimizes the values before the rectifier; ``precision="bfloat16"`` runs the network in
    bfloat16 while the image parameters, optimizer and objectives stay float32. During the
    first ``redirect_steps`` steps a rectifier whose gradient is zero passes Lucid's redirected
    gradient instead (``featviz.rectifier_rules``), so that channels which start dead come to
    life.
    """

    def __init__(self, model: Model, config: RenderConfig | None = None, *,
                 param: Parameterization | str | None = None,
                 transforms: Sequence[Transform] | None = None,
                 optimizer: optax.GradientTransformation | None = None,
                 batch_objective=None, devices: Sequence | None = None,
                 transparency: bool = False, **settings):
        config = (config or RenderConfig()).replace(**settings)
        if isinstance(param, str):
            config, param = config.replace(param=param), None
        self.model = model
        self.config, self._rate_settable = rates.resolved(config, optimizer)
        if param is None:
            param = named_param(config.param, config.size)
        # all of the program's code is featviz's defaults: it may go to the program store
        self._code_is_known = (all(v is None for v in (param, transforms, optimizer,
                                                       batch_objective))
                               and not devices and not transparency)
        self.mesh = Mesh(np.asarray(devices), ("batch",)) if devices else None
        if self.mesh is not None and batch_objective is not None:
            raise ConfigError("a batch objective (a diversity term, as diverse=K adds) compares "
                              "images across the batch; render it without devices=... (on one "
                              "device)")
        self.settings = _ascent_settings(model, config, param, transforms, optimizer,
                                         batch_objective, transparency,
                                         segment_loop(model, self.devices[0].platform,
                                                      config.size))
        self._params = self._network_params()
        self._programs = compiler.Executables()

    size = property(lambda self: self.config.size)
    steps = property(lambda self: self.config.steps)
    lr = property(lambda self: self.config.lr)
    lr_ramp = property(lambda self: self.config.lr_ramp)
    redirect_steps = property(lambda self: self.config.redirect_steps)
    compute_dtype = property(lambda self: self.settings.compute_dtype)
    compile_seconds = property(lambda self: self._programs.seconds,
                               doc="Spent tracing, lowering and compiling (or loading) programs.")

    @property
    def devices(self) -> list:
        """The devices a batch runs on."""
        return self.mesh.devices.ravel().tolist() if self.mesh is not None else [jax.devices()[0]]

    def optimized_layers(self, layers) -> dict[str, str]:
        """Each layer -> the layer the network is asked for (its pre-activation, if it has one
        and the renderer optimizes those)."""
        return self.settings.optimized_layers(layers)

    def _network_params(self):
        """The model's parameters in the compute precision, replicated over the mesh: prepared
        once, not per batch."""
        params = jax.tree_util.tree_map(
            lambda a: a.astype(self.compute_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
            self.model.params)
        return self._placed(params, sharded=False)

    def __call__(self, objectives, keys, *, on_segment: Callable[[int], object] | None = None,
                 **overrides) -> RenderResult:
        """Render a list of objectives (or an already stacked batch), one key per image.

        ``steps``, ``lr``, ``lr_ramp`` and ``redirect_steps`` override the renderer's for this
        call (none of them recompiles); ``on_segment(steps)`` is called after each segment
        with the number of steps it ran. A list may mix forms (say channels and a class
        logit): they share one batch and one compiled program.
        """
        config = self._call_config(overrides)
        if isinstance(objectives, (list, tuple)):
            if len(objectives) != len(keys) or not objectives:
                raise ConfigError(f"{len(objectives)} objectives and {len(keys)} keys: pass at "
                                  "least one objective and one key for each "
                                  "(featviz.channel_keys(seed, range(n)))")
            objectives = objectives_lib.stack(objectives)
        return self._render_stacked(objectives, keys, config, on_segment)

    def _call_config(self, overrides: dict) -> RenderConfig:
        """The renderer's config with one call's overrides (None: the renderer's own)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - set(_PER_CALL)
        if unknown:
            raise ConfigError(f"a call may set {', '.join(_PER_CALL)}, not "
                              f"{', '.join(sorted(unknown))}; build another Renderer for that")
        if not self._rate_settable and ("lr" in given or "lr_ramp" in given):
            raise ConfigError(rates.FIXED_RATE)
        return self.config.replace(**given)

    def _placed(self, tree, sharded: bool):
        """``tree`` on the renderer's devices: split along the batch, or replicated."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, NamedSharding(self.mesh, P("batch") if sharded else P()))

    def _padded(self, objectives, keys):
        """The batch padded (repeating its last image) to a multiple of the devices, placed."""
        extra = -keys.shape[0] % (self.mesh.size if self.mesh is not None else 1)
        if extra:
            objectives, keys = jax.tree_util.tree_map(
                lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]),
                (objectives, keys))
        return self._placed((objectives, keys), sharded=True)

    def _blank_state(self, n: int) -> AscentState:
        """Zeros in the shape of a batch of ``n`` images' state (``start == 0`` replaces them)."""
        shapes = jax.eval_shape(partial(ascent.init, self.settings), abstract_keys((n,)))
        return self._placed(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes),
                            sharded=True)

    def _render_stacked(self, objectives, keys, config: RenderConfig, on_segment) -> RenderResult:
        objectives_lib.check_indices(objectives, lambda layer: self.model.layer_shape(layer,
                                                                                     self.size))
        n, unpadded = keys.shape[0], objectives
        objectives, keys = self._padded(objectives, keys)
        state = self._blank_state(keys.shape[0])
        # the final images' forward program compiles (or loads) meanwhile: XLA compiles each
        # program on one core
        blank = np.zeros((n, self.size, self.size, self.model.input_channels), np.float32)
        final_ready = _BACKGROUND.submit(self.final_values, unpadded, blank)
        program = self._executable(objectives, keys, state)
        traces = []
        assert config.lr is not None and config.lr_ramp is not None  # set by rates.resolved
        per_call = self.settings.steps_per_call
        for start in range(0, config.steps, SEGMENT):
            stop, calls = min(start + SEGMENT, config.steps), []
            for first in range(start, stop, per_call):  # one call, or one per step
                schedule = self._placed(Schedule.of(
                    start=first, stop=min(first + per_call, stop), steps=config.steps,
                    lr=config.lr, ramp=config.lr_ramp, redirect_steps=config.redirect_steps),
                    sharded=False)
                state, trace, images = program(self._params, objectives, keys, state, schedule)
                calls.append((trace, min(per_call, stop - first)))
            traces += [np.asarray(t)[:n, :ran] for t, ran in calls]
            if on_segment is not None:
                on_segment(stop - start)
        images = np.asarray(images)[:n]
        if not np.isfinite(images).all():
            warnings.warn("some rendered images are not finite (NaN or infinite): an "
                          "objective's value or gradient was not a number, e.g. a division "
                          "by zero", RuntimeWarning, stacklevel=3)
        final_ready.result()
        transparency = None if state.transparency is None else np.asarray(state.transparency)[:n]
        return RenderResult(images, np.concatenate(traces, axis=1),
                            *self.final_values(unpadded, images), transparency)

    def final_values(self, objectives, images) -> tuple[np.ndarray, np.ndarray]:
        """Each objective on its image as it is, untransformed, in float32, on the layers the
        renderer optimizes and on their post-rectifier values: through the model's own
        compiled forward program (``Model.activations``), which every objective form that
        reads the same layers shares, so the render program carries no second network."""
        reads = self.optimized_layers(objectives.layers)
        wanted = sorted(set(reads) | set(reads.values()))
        acts = self.model.activations(images, layers=wanted) if wanted else {}
        post = np.asarray(ascent.evaluate(objectives, {k: acts[k] for k in reads}, images))
        if all(read == layer for layer, read in reads.items()):
            return post, post
        optimized = {layer: acts[read] for layer, read in reads.items()}
        return np.asarray(ascent.evaluate(objectives, optimized, images)), post

    def compiled(self, objectives, keys):
        """The compiled program for this batch of objectives (compiled once, then cached): its
        ``memory_analysis()`` and ``cost_analysis()`` tell what a batch costs (a rolled
        segment's loop body counts once in the cost analysis, as does the one step of a
        ``"host"`` segment)."""
        if isinstance(objectives, (list, tuple)):
            objectives = objectives_lib.stack(objectives)
        objectives, keys = self._padded(objectives, keys)
        return self._executable(objectives, keys, self._blank_state(keys.shape[0]))

    def _store_key(self, objectives, keys) -> str | None:
        """This batch's key in the program store, or None if its code is not all featviz's."""
        if not self._code_is_known:
            return None
        return compiler.segment_key(self.settings, self._params, objectives, keys,
                                    self.devices[0])

    def _lower(self, *args):
        """The segment program for these arguments, lowered: one device's program, or that
        program run by each device of the mesh on its share of the batch."""
        if self.mesh is None:
            return ascent.segment.lower(self.settings, *args)
        body = jax.shard_map(partial(ascent.run_segment, self.settings), mesh=self.mesh,
                             in_specs=(P(), P("batch"), P("batch"), P("batch"), P()),
                             out_specs=P("batch"), check_vma=False)
        return jax.jit(body).lower(*args)

    def _executable(self, objectives, keys, state):
        """The compiled program for this batch's form and shapes, compiled (or loaded from the
        program store or the persistent cache) once, and checked to fit in device memory."""
        schedule = self._placed(Schedule.of(start=0, stop=0, steps=0, lr=0.0, ramp=(0.0, 0.0),
                                            redirect_steps=0), sharded=False)
        return self._programs.get(
            (objectives, keys), lambda: self._store_key(objectives, keys),
            lambda: self._lower(self._params, objectives, keys, state, schedule),
            self.devices[0].platform,
            check=lambda compiled: check_memory(compiled, keys.shape[0], self.devices))


def segment_loop(model: Model, platform: str, size: int) -> str:
    """The form of the segment's program (``ascent.LOOPS``) for ``model`` on ``platform``:
    ``$FEATVIZ_SEGMENT_LOOP`` if set, else as measured.

    Measured (benchmarks/bench_segment_forms.py, RESULTS.md "The segment's form", 2-core
    x86_64, XLA:CPU, JAX 0.10.2, 4 x 128 px, medians of interleaved rounds, per image-step):
    XLA:CPU runs a convolution inside a loop 2-3x slower than the same convolution called
    alone, guarded (unrolled) steps included. VGG16 block5_conv3: one step per call 0.82 s,
    rolled 1.98 s, unrolled 4x 2.16 s. EfficientNet-Lite0 blocks_8, whose convolutions featviz
    runs on a CPU as shifted multiplies and matmuls: rolled 54 ms, unrolled 2-8x 63-69 ms, one
    step per call 76 ms. So: one step per call for a network with XLA convolutions on a CPU,
    else rolled; other platforms: rolled (not measured)."""
    forced = os.environ.get(LOOP_ENV, "").strip()
    if forced:
        if forced not in ascent.LOOPS:
            raise ConfigError(f"{LOOP_ENV}={forced!r}: use one of {', '.join(ascent.LOOPS)} "
                              "(or unset)")
        return forced
    return "host" if platform == "cpu" and _runs_convolutions(model, size) else "rolled"


def _runs_convolutions(model: Model, size: int) -> bool:
    """``ascent.runs_convolutions``, kept in the model's shape store where it has one (the
    zoo's): a new process looks the answer up instead of tracing the network (about 1 s)."""
    if model.shape_store is None:
        return ascent.runs_convolutions(model, size)
    probe = f"<XLA convolutions on cpu, kernels {os.environ.get(KERNELS_ENV, '')!r}>"
    answer = model.shape_store(model, probe, size,
                               lambda: (int(ascent.runs_convolutions(model, size)),))
    return bool(answer[0])


def _ascent_settings(model: Model, config: RenderConfig, param, transforms, optimizer,
                     batch_objective, transparency: bool, loop: str) -> AscentSettings:
    """The program's static settings, its custom parts checked against the image shape."""
    shape = (config.size, config.size, model.input_channels)
    param = param or image(config.size, channels=model.input_channels)
    _check_image_shape(param, shape)
    if transforms is None:
        transforms = param.transforms() if param.transforms else standard_transforms()
    _check_transforms(transforms, shape)
    return AscentSettings(
        model=model, size=config.size, param=param, transform=compose(transforms),
        # the default's own rate is a placeholder: each call sets the rate it renders with
        optimizer=optimizer or rates.default_optimizer(), batch_objective=batch_objective,
        compute_dtype=jnp.dtype(config.precision), activation=config.activation,
        transparency=transparency, loop=loop)


def _check_image_shape(param: Parameterization, shape: tuple) -> None:
    """Refuse a parameterization whose images are not ``shape`` (say, ``param.maco(32)`` given
    to a renderer of another size), which would fail later deep inside the program."""
    made = jax.eval_shape(param.to_image, jax.eval_shape(param.init, abstract_keys())).shape
    if tuple(made) != tuple(shape):
        raise ConfigError(f"the parameterization makes images of shape {tuple(made)} but this "
                          f"renderer needs {tuple(shape)}: build it for size={shape[0]}, or "
                          f"pass size={made[0]} to the renderer")


def _check_transforms(transforms: Sequence[Transform], shape: tuple) -> None:
    """Refuse a transform that is not ``(key, image) -> image`` (say, ``transforms.pad`` where
    ``transforms.pad(12)`` was meant)."""
    for t in transforms:
        try:
            jax.eval_shape(t, abstract_keys(), jax.ShapeDtypeStruct(shape, jnp.float32))
        except Exception as err:  # noqa: BLE001 - whatever the callable raises
            raise ConfigError(f"{getattr(t, '__qualname__', t)!s} is not a transform "
                              "(key, image) -> image; build one, e.g. transforms.pad(12) or "
                              f"transforms.jitter(8) ({type(err).__name__})") from None


def render(model: Model, objectives: Sequence, *, seed: int = 0, **settings) -> RenderResult:
    """One-off render of a list of objectives; image i uses key ``channel_keys(seed, [i])``.

    Build a ``Renderer`` instead to render many batches with one compiled program.
    """
    return Renderer(model, **settings)(list(objectives), channel_keys(seed, range(len(objectives))))
