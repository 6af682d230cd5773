"""Render a layer's channels in chunks that fit memory, and tile them into a labeled atlas.

Each chunk's PNGs and records are written atomically as soon as it finishes, so a rerun
after an interruption skips the channels already done and loses nothing.

Example:
    >>> from featviz import load_model
    >>> parse_channels("0-3,7", 16)
    [0, 1, 2, 3, 7]
    >>> result = render_channels(load_model(), "blocks_3", [0, 1], "/tmp/featviz-doc",
    ...                          steps=4, size=64, progress=False)
    >>> sorted(result.records)
    [0, 1]
"""
from __future__ import annotations

import json
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import jax
import numpy as np
from jax.extend.core import jaxprs_in_params

from . import __version__, distributed
from . import objectives as obj
from .draws import abstract_keys
from .image import load_image, make_grid, save_png, write_text_atomic
from .models.base import Model
from .param import named as named_param
from .engine import ChunkTooLargeError, Renderer, channel_keys, free_memory_bytes


class ChannelRangeError(ValueError):
    """Channel indices outside a layer's range, or a malformed channel list."""


class SizeError(ValueError):
    """An image size too small for the chosen layer."""


def parse_channels(spec: str | None, n_channels: int, layer: str | None = None) -> list[int]:
    """Parse ``"0-7,12"`` (or ``"all"``/None for every channel) into sorted unique indices of
    a layer of ``n_channels`` (named in the error, where given)."""
    if spec is None or spec.strip().lower() == "all":
        return list(range(n_channels))
    chosen = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            lo, _, hi = part.partition("-")
            lo_i = int(lo)
            hi_i = int(hi) if hi else lo_i
        except ValueError:
            raise ChannelRangeError(f"bad channel list {spec!r}; write e.g. 0-7,12") from None
        if lo_i > hi_i:
            raise ChannelRangeError(f"bad channel range {part!r}; write low-high, e.g. 0-7")
        chosen.update(range(lo_i, hi_i + 1))
    bad = [c for c in sorted(chosen) if not 0 <= c < n_channels]
    if bad:
        owner = f"layer {layer}" if layer else "this layer"
        raise ChannelRangeError(f"channel {bad[0]} is out of range; {owner} has channels "
                                f"0-{n_channels - 1}")
    return sorted(chosen)


def check_size(model: Model, layer: str, size: int) -> None:
    """Raise ``SizeError`` unless a ``size`` px image gives ``layer`` a map of at least 2 x 2."""
    shape = model.layer_shape(model.check_layer(layer))
    if len(shape) < 3:
        return
    stride = max(1, round(model.image_size / shape[0]))
    minimum = max(16, 2 * stride)
    if size < minimum:
        raise SizeError(f"--size {size} is too small for layer {layer} (stride {stride}); "
                        f"use --size {minimum} or more")


CPU_CHUNK = 8  # fastest image-steps per second on XLA:CPU (benchmarks/RESULTS.md)
MEMORY_SHARE = 0.8  # of the free accelerator memory that a chunk may fill
PIPELINE_CANVASES = 16  # image-sized float32 buffers per image outside the network


_KEPT_FOR_BACKWARD = ("dot_general", "conv_general_dilated", "custom_vjp_call")


def _kept_bytes(jaxpr) -> int:
    """Bytes of the outputs of a jaxpr's matmuls, convolutions and custom-gradient calls (the
    values a backward pass keeps; elementwise work between them fuses), sub-programs included."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name.startswith(_KEPT_FOR_BACKWARD):
            total += sum(v.aval.size * v.aval.dtype.itemsize for v in eqn.outvars)
        elif not eqn.primitive.name.startswith("custom_"):
            total += sum(_kept_bytes(sub) for sub in jaxprs_in_params(eqn.params))
    return total


def image_bytes(renderer: Renderer, layer: str) -> int:
    """An estimate of the device memory one image of a render needs: twice the values the
    network's forward pass up to ``layer`` keeps for its backward pass (the gradients take
    about as much), at the size the transforms hand the network, plus ``PIPELINE_CANVASES``
    canvases for the parameterization, transforms and optimizer. It is read from the traced
    program; nothing is compiled (on the CPU it came out 1.1-1.5x the compiled programs'
    footprint for stem, blocks_8 and head)."""
    size = renderer.size
    canvas = jax.eval_shape(renderer.settings.transform, abstract_keys(),
                            jax.ShapeDtypeStruct((size, size, renderer.model.input_channels),
                                                 np.float32)).shape
    x = jax.ShapeDtypeStruct((1,) + tuple(canvas), renderer.compute_dtype)
    forward = jax.make_jaxpr(lambda p, v: renderer.model.apply(p, v, [layer]))(
        renderer.model.params, x)
    return 2 * _kept_bytes(forward.jaxpr) + PIPELINE_CANVASES * x.size * 4


def chunk_sizes(n_channels: int, largest: int, n_devices: int = 1) -> int:
    """The chunk size that renders ``n_channels`` in as few chunks as ``largest`` allows, all
    of (nearly) the same size and a multiple of the devices: 1280 channels that fit 1000 at a
    time run as 2 x 640, not 1000 plus a padded 1000."""
    largest = max(n_devices, largest // n_devices * n_devices)
    n_chunks = -(-n_channels // largest)
    per_chunk = -(-n_channels // n_chunks)
    return -(-per_chunk // n_devices) * n_devices


def auto_chunk_size(renderer: Renderer, layer: str, n_channels: int) -> int:
    """Channels per chunk: on CPUs the cache-friendly ``CPU_CHUNK`` per device; on
    accelerators as many as fit in ``MEMORY_SHARE`` of the free device memory (estimated by
    ``image_bytes``); balanced over the chunks either way."""
    devices = renderer.devices
    if devices[0].platform == "cpu":
        largest = CPU_CHUNK * len(devices)
    else:
        free = min(free_memory_bytes(d) for d in devices)
        largest = int(MEMORY_SHARE * free / max(image_bytes(renderer, layer), 1)) * len(devices)
    return chunk_sizes(n_channels, min(largest, 4096), len(devices))


@dataclass
class LayerRender:
    layer: str
    out_dir: Path
    records: dict = field(default_factory=dict)  # channel -> {"objective": ..., "png": ...}
    seconds: float = 0.0  # compile + compute + write
    timing: dict = field(default_factory=dict)  # {"compile": s, "compute": s, "write": s}
    reused: int = 0  # channels found already rendered with the same settings (a resumed run)

    def image_path(self, c: int) -> Path:
        return self.out_dir / f"{self.layer}_{c}.png"


def _records_path(out_dir: Path) -> Path:
    """results.json; in a run of several processes, process i keeps its own results.p<i>.json
    until process 0 merges them."""
    if jax.process_count() == 1:
        return out_dir / "results.json"
    return out_dir / f"results.p{jax.process_index()}.json"


def _load_records(out_dir: Path, layer: str, settings: dict, warn: bool = False) -> dict:
    """The records of ``layer``'s channels already rendered in ``out_dir`` with ``settings``;
    with ``warn``, a warning names the settings that differ where the folder holds renders of
    this layer made otherwise (they are rendered again and their records replaced)."""
    records = {}
    for path in sorted(out_dir.glob("results*.json")):
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if saved.get("layer") != layer:
            continue
        if saved.get("settings") == settings:
            records.update({int(c): r for c, r in saved.get("channels", {}).items()
                            if (out_dir / r["png"]).exists()})
        elif warn and saved.get("channels"):
            old = saved.get("settings") or {}
            changed = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in settings.items()
                                if old.get(k) != v)
            warnings.warn(f"{path} lists {len(saved['channels'])} channels of {layer} rendered "
                          f"with other settings ({changed}): they are not reused, and the "
                          "channels rendered now replace that list", stacklevel=3)
    return records


def render_channels(model: Model, layer: str, channels: Sequence[int], out_dir, *,
                    steps: int = 512, size: int = 128, seed: int = 0,
                    chunk_size: int | None = None,
                    lr: float = 0.05, lr_ramp: tuple[float, float] | None = None,
                    devices=None, precision: str = "float32",
                    activation: str = "pre", param: str = "fourier",
                    progress: bool = True) -> LayerRender:
    """Render ``channels`` of ``layer`` into ``out_dir/<layer>_<c>.png`` plus ``results.json``
    (per channel, the final image's objective: the channel's mean activation, untransformed,
    before the rectifier on a rectified layer with ``activation="pre"`` (the default) and,
    there, also after it as ``objective_post``; and the seconds spent compiling, computing
    and writing).

    Channels already rendered with the same settings (a previous, interrupted run) are skipped.
    ``lr_ramp`` ramps Adam's ``lr`` (None: the renderer's default ramp). ``chunk_size`` channels are rendered at once (None: ``auto_chunk_size``). ``devices``
    shards each chunk over those devices; ``precision="bfloat16"`` runs the network in bfloat16
    (image parameters stay float32); ``param`` names the image parameterization
    (``featviz.param.PARAMETERIZATIONS``: Lucid's Fourier basis, pixels, or MaCo); in a run of
    several processes each renders its share
    of the channels and process 0 merges the records. A chunk's PNGs are encoded and written
    on a background thread while the next chunk renders.
    """
    from tqdm import tqdm

    model.check_layer(layer)
    n = model.channels(layer)
    if any(not 0 <= c < n for c in channels):
        raise ChannelRangeError(f"channel out of range; layer {layer} has channels 0-{n - 1}")
    check_size(model, layer, size)
    out_dir = Path(out_dir)
    renderer = Renderer(model, size=size, steps=steps, lr=lr, lr_ramp=lr_ramp, devices=devices,
                        compute_dtype=precision, activation=activation,
                        param=named_param(param, size))
    optimized = renderer.optimized_layers([layer])[layer]
    settings = {"model": model.name, "steps": steps, "size": size, "seed": seed, "lr": lr,
                "lr_ramp": list(renderer.lr_ramp),
                "precision": precision, "redirect_steps": renderer.redirect_steps,
                "optimized_layer": optimized, "param": param, "featviz": __version__}
    result = LayerRender(layer, out_dir, _load_records(out_dir, layer, settings, warn=True))
    result.reused = sum(c in result.records for c in channels)
    todo = distributed.share([c for c in channels if c not in result.records])
    timing = {"compile": 0.0, "compute": 0.0, "write": 0.0}
    with tqdm(total=len(todo) * steps, desc=layer, disable=not progress or not todo, leave=False,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}") as bar, \
            ThreadPoolExecutor(max_workers=1) as writer:
        began = time.perf_counter()
        chunk = _fitting_chunk(renderer, layer, len(todo), chunk_size) if todo else 1
        pending = None
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            padded = part + [part[-1]] * (chunk - len(part))  # same batch size: no recompile
            out = renderer([obj.channel(layer, c) for c in padded], channel_keys(seed, padded),
                           on_segment=lambda ran, k=len(part): bar.update(k * ran))
            timing["compile"] = renderer.compile_seconds
            timing["compute"] = time.perf_counter() - began - renderer.compile_seconds
            if pending is not None:
                pending.result()  # the previous chunk is on disk before this one's records go
            pending = writer.submit(_write_chunk, result, part, out, settings, timing)
        if pending is not None:
            pending.result()
    distributed.barrier(f"featviz-{layer}-rendered")
    result.records = _load_records(out_dir, layer, settings)
    if jax.process_index() == 0:
        _save_records(result, settings, out_dir / "results.json")
    return result


def _fitting_chunk(renderer: Renderer, layer: str, n_channels: int, requested: int | None) -> int:
    """The chunk size to render with, its program compiled: ``requested``, or the automatic
    size, made smaller (and balanced again) if its program does not fit in device memory."""
    chunk = max(1, min(requested or auto_chunk_size(renderer, layer, n_channels), n_channels))
    while True:
        try:
            renderer.compiled([obj.channel(layer, 0)] * chunk, channel_keys(0, [0] * chunk))
            return chunk
        except ChunkTooLargeError as err:
            if requested or chunk == 1:
                raise
            chunk = chunk_sizes(n_channels, err.fits, len(renderer.devices))


def _write_chunk(result: LayerRender, part: Sequence[int], out, settings: dict, timing: dict):
    """Write one rendered chunk's PNGs, then the records that list them."""
    began = time.perf_counter()
    for j, c in enumerate(part):
        save_png(out.images[j], result.image_path(c))
        result.records[c] = {"objective": float(out.final[j]), "png": result.image_path(c).name}
        if settings["optimized_layer"] != result.layer:
            result.records[c]["objective_post"] = float(out.final_post[j])
    timing["write"] += time.perf_counter() - began
    result.timing = {k: round(v, 3) for k, v in timing.items()}
    result.seconds = round(sum(timing.values()), 3)
    _save_records(result, settings, _records_path(result.out_dir))


def _save_records(result: LayerRender, settings: dict, path: Path) -> None:
    doc = {"layer": result.layer, "settings": settings, "seconds": round(result.seconds, 3),
           "timing": result.timing, "channels": {str(c): r for c, r in sorted(result.records.items())}}
    write_text_atomic(json.dumps(doc, indent=1), path)


def atlas_image(result: LayerRender, channels: Sequence[int], columns: int | None = None):
    """Tile the rendered channels into one labeled uint8 grid."""
    images = np.stack([load_image(result.image_path(c)) for c in channels])
    return make_grid(images, columns=columns, labels=[f"{result.layer}:{c}" for c in channels])


def render_atlas(model: Model, layer: str, channels: Sequence[int], out_png, *,
                 columns: int | None = None, **settings) -> LayerRender:
    """Render channels (resumably, into ``<out_png stem>_channels/``) and write the atlas PNG
    (process 0 of a multi-process run writes it)."""
    out_png = Path(out_png)
    result = render_channels(model, layer, channels, out_png.with_name(out_png.stem + "_channels"),
                             **settings)
    if jax.process_index() == 0:
        save_png(atlas_image(result, channels, columns), out_png)
    return result
