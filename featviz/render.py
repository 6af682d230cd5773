"""The engine: regularized gradient ascent in input space for a batch of objectives, in one
jit-compiled program (vmap over images, ``lax.scan`` over steps). No files, no display.

Each image has its own PRNG key, parameters and optimizer state, so an image depends only on
its objective and key: rendering channel 5 alone or inside a batch of 64 gives the same image.

Example:
    >>> import jax
    >>> from featviz import load_model, objectives as obj
    >>> model = load_model()
    >>> renderer = Renderer(model, size=64, steps=8)
    >>> result = renderer([obj.channel("blocks_3", c) for c in (0, 1)], channel_keys(0, [0, 1]))
    >>> result.images.shape, result.trace.shape
    ((2, 64, 64, 3), (2, 8))
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from . import backprop
from . import objectives as objectives_lib
from .models.base import Model
from .param import Parameterization, image
from .transforms import Transform, compose, standard_transforms

# Recent XLA:CPU hands matmuls and convolutions to YNNPACK; for this program (small matmuls
# and input gradients inside a scan) XLA's own kernels made a step 10-15% faster on the CPU
# measured (benchmarks/RESULTS.md).
_WITHOUT_YNNPACK = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def compiler_options(platform: str) -> dict:
    """The XLA options featviz compiles its render program with on ``platform`` ("cpu", ...)."""
    if platform != "cpu":
        return {}
    cpu = jax.local_devices(backend="cpu")[0]
    probe = jax.jit(lambda x: x).lower(jax.device_put(np.zeros(1, np.float32), cpu))
    try:
        probe.compile(compiler_options=_WITHOUT_YNNPACK)
    except Exception:  # an XLA that has no such option (older or newer than this one)
        return {}
    return _WITHOUT_YNNPACK


@dataclass(frozen=True)
class RenderResult:
    images: np.ndarray  # (N, H, W, 3) float32 in [0, 1]
    trace: np.ndarray   # (N, steps) objective under the random transforms, per step
    final: np.ndarray   # (N,) objective of the final image, untransformed


def channel_keys(seed: int, indices: Sequence[int]) -> jax.Array:
    """One PRNG key per channel, derived from the seed and the channel index (not its position)."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(indices, jnp.uint32))


class Renderer:
    """Renders batches of objectives on one model with fixed settings; compiles once per
    objective form and batch size, then reuses the program for any channel indices.

    Defaults are Lucid's: 128 px, 512 steps, Adam(0.05), Fourier + decorrelated colour +
    sigmoid, pad/jitter/scale/rotate/jitter. With ``devices`` (e.g. ``jax.devices()``), each
    batch is sharded over a 1-D mesh of those devices; the images do not depend on how many.
    ``compute_dtype=jnp.bfloat16`` runs the network in bfloat16 (weights and activations) while
    the image parameters, optimizer and objectives stay float32. During the first
    ``redirect_steps`` steps, a rectifier whose gradient is zero for an image passes Lucid's
    redirected gradient instead (``featviz.backprop``), so that channels which start dead come
    to life; later steps take the plain gradient, which is about twice as fast on a CPU.
    """

    def __init__(self, model: Model, *, size: int = 128, steps: int = 512,
                 param: Parameterization | None = None,
                 transforms: Sequence[Transform] | None = None,
                 optimizer: optax.GradientTransformation | None = None,
                 batch_objective=None, devices: Sequence | None = None,
                 compute_dtype=jnp.float32, redirect_steps: int = 8):
        self.model, self.size, self.steps = model, size, steps
        self.compute_dtype = jnp.dtype(compute_dtype)
        self.redirect_steps = redirect_steps
        self.mesh = Mesh(np.asarray(devices), ("batch",)) if devices else None
        self.param = param or image(size)
        self.transform = compose(standard_transforms() if transforms is None else transforms)
        self.optimizer = optimizer or optax.adam(0.05)
        self.batch_objective = batch_objective
        self.traces = 0  # how many times the program was traced (i.e. compiled)
        self._program = jax.jit(self._run)
        self._executables: dict = {}
        self._params = self._network_params()

    def _network_params(self):
        """The model's parameters in the compute precision, replicated over the mesh: prepared
        once, not per batch."""
        params = jax.tree_util.tree_map(
            lambda a: a.astype(self.compute_dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a,
            self.model.params)
        if self.mesh is not None:
            params = jax.device_put(params, NamedSharding(self.mesh, P()))
        return params

    @property
    def devices(self) -> list:
        """The devices a batch runs on."""
        return self.mesh.devices.ravel().tolist() if self.mesh is not None else [jax.devices()[0]]

    def _objective_values(self, model_params, objectives, images, transformed, redirect=False):
        x = self.model.preprocess(transformed).astype(self.compute_dtype)
        if redirect:
            acts = backprop.evaluate(self.model.apply, model_params, x, rule="redirected")
        else:
            acts = self.model.apply(model_params, x)
        acts = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), acts)
        values = jax.vmap(lambda o, a, img: o(a, img))(objectives, acts, images)
        return values, acts

    def _run(self, model_params, objectives, keys):
        self.traces += 1
        init_keys, step_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
        params = jax.vmap(self.param.init)(init_keys)
        opt_state = jax.vmap(self.optimizer.init)(params)

        def loss(p, keys_now, redirect):
            images = jax.vmap(self.param.to_image)(p)
            transformed = jax.vmap(self.transform)(keys_now, images)
            values, acts = self._objective_values(model_params, objectives, images, transformed,
                                                  redirect)
            total = values.sum()
            if self.batch_objective is not None:
                total = total + self.batch_objective(acts)
            return -total, values

        def step(carry, i):
            p, state = carry
            keys_now = jax.vmap(lambda k: jax.random.fold_in(k, i))(step_keys)
            def gradient(redirect):
                return lambda: jax.grad(loss, has_aux=True)(p, keys_now, redirect)

            if 0 < self.redirect_steps < self.steps:
                grads, values = jax.lax.cond(i < self.redirect_steps, gradient(True), gradient(False))
            else:  # one step body: half the compilation
                grads, values = gradient(self.redirect_steps > 0)()
            updates, state = jax.vmap(self.optimizer.update)(grads, state, p)
            return (optax.apply_updates(p, updates), state), values

        (params, _), trace = jax.lax.scan(step, (params, opt_state), jnp.arange(self.steps))
        images = jax.vmap(self.param.to_image)(params)
        final, _ = self._objective_values(model_params, objectives, images, images)
        return images, trace.T, final

    def __call__(self, objectives, keys) -> RenderResult:
        """Render a list of objectives (or an already stacked batch), one key per image.

        A list may mix forms (say channels and a class logit): each form is rendered as its own
        batch (a batch objective such as diversity then acts within each form's batch).
        """
        if not isinstance(objectives, (list, tuple)):
            return self._render_stacked(objectives, keys)
        groups: dict = {}
        for i, o in enumerate(objectives):
            groups.setdefault(jax.tree_util.tree_structure(o), []).append(i)
        parts = [(idx, self._render_stacked(objectives_lib.stack([objectives[i] for i in idx]),
                                            keys[np.asarray(idx)]))
                 for idx in groups.values()]
        order = np.argsort(np.concatenate([idx for idx, _ in parts]))
        return RenderResult(*(np.concatenate([getattr(r, f) for _, r in parts])[order]
                              for f in ("images", "trace", "final")))

    def _render_stacked(self, objectives, keys) -> RenderResult:
        n, params = keys.shape[0], self._params
        if self.mesh is not None:  # pad the batch to a multiple of the devices, then shard it
            extra = -n % self.mesh.size
            objectives, keys = jax.tree_util.tree_map(
                lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)]), (objectives, keys))
            objectives, keys = jax.device_put((objectives, keys), NamedSharding(self.mesh, P("batch")))
        images, trace, final = self._executable(params, objectives, keys)(params, objectives, keys)
        return RenderResult(np.asarray(images)[:n], np.asarray(trace)[:n], np.asarray(final)[:n])

    def compiled(self, objectives, keys):
        """The compiled program for this batch of objectives (compiled once, then cached): its
        ``memory_analysis()`` and ``cost_analysis()`` tell what a batch costs."""
        if isinstance(objectives, (list, tuple)):
            objectives = objectives_lib.stack(objectives)
        return self._executable(self._params, objectives, keys)

    def _executable(self, params, objectives, keys):
        """The compiled program for this batch's form and shapes, compiled once and checked to
        fit in device memory."""
        leaves, form = jax.tree_util.tree_flatten(objectives)
        cache_key = (form, tuple((a.shape, str(a.dtype)) for a in leaves), keys.shape)
        if cache_key not in self._executables:
            compiled = self._program.lower(params, objectives, keys).compile(
                compiler_options=compiler_options(self.devices[0].platform))
            check_memory(compiled, keys.shape[0], self.devices)
            self._executables[cache_key] = compiled
        return self._executables[cache_key]


class ChunkTooLargeError(ValueError):
    """A batch of images that would not fit in device memory."""


def free_memory_bytes(device) -> int:
    """Memory still free on ``device`` (for CPU devices: the host's available memory)."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(compiled, batch: int, devices) -> None:
    """Raise ``ChunkTooLargeError`` (with a chunk size that fits) if the compiled program needs
    more memory per device than the devices have free."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return
    need = (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes)
    free = min(free_memory_bytes(d) for d in devices)
    if need > free:
        fits = max(1, int(batch * 0.8 * free / need))
        raise ChunkTooLargeError(
            f"a chunk of {batch} images needs {need / 2**30:.1f} GiB per device but only "
            f"{free / 2**30:.1f} GiB is free; use --chunk {fits} (or fewer)")


def render(model: Model, objectives: Sequence, *, seed: int = 0, **settings) -> RenderResult:
    """One-off render of a list of objectives; image i uses key ``fold_in(key(seed), i)``.

    Build a ``Renderer`` instead to render many batches with one compiled program.
    """
    return Renderer(model, **settings)(list(objectives), channel_keys(seed, range(len(objectives))))
