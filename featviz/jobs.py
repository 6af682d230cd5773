"""Render a layer's channels as a job: in chunks that fit memory, each chunk's PNGs and records
written atomically as soon as it finishes, so that a rerun after an interruption skips the
channels already done and loses nothing.

A folder's ``results.json`` records the model, the ``RenderConfig`` and featviz's version the
channels were rendered with: a rerun reuses only channels rendered with the same record.

Example:
    >>> from featviz import load_model
    >>> result = render_channels(load_model(), "blocks_3", [0, 1], "/tmp/featviz-doc",
    ...                          steps=4, size=64, progress=False)
    >>> sorted(result.records)
    [0, 1]
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from . import __version__, distributed, objectives as obj
from .channels import check_channels, check_size
from .config import RenderConfig
from .draws import derive_key
from .engine import Renderer, channel_keys
from .errors import ChunkTooLargeError
from .image import save_png, write_text_atomic
from .memory import auto_chunk_size, chunk_sizes
from .models.base import Model

# Weight of the diversity term between a unit's ``diverse`` images (``objectives.Diversity``;
# benchmarks/RESULTS.md, "Diverse images of a unit").
DIVERSITY_WEIGHT = 20.0
DIVERSE_KEYS = 1 << 20  # the k-th diverse image's key: its channel's key, derived by this + k


@dataclass
class LayerRender:
    """A layer's rendered channels in ``out_dir``.

    Args:
        layer: the layer rendered.
        out_dir: the folder holding ``<layer>_<channel>.png`` and ``results.json``.
        records: channel -> ``{"objective": ..., "png": ...}`` (and ``objective_post``).
        seconds: compile + compute + write.
        timing: ``{"compile": s, "compute": s, "write": s}``.
        reused: channels found already rendered with the same settings (a resumed run).
    """

    layer: str
    out_dir: Path
    records: dict = field(default_factory=dict)
    seconds: float = 0.0
    timing: dict = field(default_factory=dict)
    reused: int = 0

    def image_path(self, c: int, k: int = 0) -> Path:
        """Channel ``c``'s image (``k``: its k-th diverse image)."""
        return self.out_dir / (f"{self.layer}_{c}.png" if k == 0 else f"{self.layer}_{c}_{k}.png")


def job_record(model: Model, renderer: Renderer, layer: str) -> dict:
    """What a folder's renders of ``layer`` were made with: a rerun reuses them only if equal."""
    return {"model": model.name, **renderer.config.record(),
            "optimized_layer": renderer.optimized_layers([layer])[layer], "featviz": __version__}


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


def render_channels(model: Model, layer: str, channels: Sequence[int], out_dir,
                    config: RenderConfig | None = None, *, devices=None, progress: bool = True,
                    **settings) -> LayerRender:
    """Render ``channels`` of ``layer`` into ``out_dir/<layer>_<c>.png`` plus ``results.json``.

    Args:
        model: the network.
        layer: the layer whose channels are rendered.
        channels: channel indices.
        out_dir: the output folder (made if needed).
        config: the render settings (``RenderConfig``); keyword ``settings`` change it.
            ``config.chunk`` channels are rendered at once (None: ``auto_chunk_size``).
        devices: shard each chunk over these devices.
        progress: show a progress bar.

    ``results.json`` holds, per channel, the final image's objective (``config.view``'s: by
    default the channel's mean activation, untransformed; on a rectified layer optimized before
    its rectifier also ``objective_post``, after it) and the seconds spent compiling, computing
    and writing. With ``config.diverse`` = K > 1, each channel also gets K - 1 more images,
    ``<layer>_<c>_<k>.png``, listed under ``diverse``.
    Channels already rendered with the same settings are skipped; in a run of several
    processes each renders its share and process 0 merges the records. A chunk's PNGs are
    written on a background thread while the next chunk renders.
    """
    config = (config or RenderConfig()).replace(**settings)
    model.check_layer(layer)
    check_channels(list(channels), model.channels(layer), layer)
    check_size(model, layer, config.size)
    out_dir = Path(out_dir)
    renderer = unit_renderer(model, config, layer, devices)
    record = job_record(model, renderer, layer)
    result = LayerRender(layer, out_dir, _load_records(out_dir, layer, record, warn=True))
    result.reused = sum(c in result.records for c in channels)
    todo = distributed.share([c for c in channels if c not in result.records])
    _render_todo(renderer, result, todo, record, progress)
    distributed.barrier(f"featviz-{layer}-rendered")
    result.records = _load_records(out_dir, layer, record)
    if jax.process_index() == 0:
        _save_records(result, record, out_dir / "results.json")
    return result


def _render_todo(renderer: Renderer, result: LayerRender, todo: list, record: dict,
                 progress: bool) -> None:
    """Render the channels ``todo`` chunk by chunk, each written as soon as it is done."""
    from tqdm import tqdm

    steps, layer = renderer.steps, result.layer
    timing = {"compile": 0.0, "compute": 0.0, "write": 0.0}
    with tqdm(total=len(todo) * steps, desc=layer, disable=not progress or not todo, leave=False,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}") as bar, \
            ThreadPoolExecutor(max_workers=1) as writer:
        began = time.perf_counter()
        chunk = _fitting_chunk(renderer, layer, len(todo)) if todo else 1
        pending = None
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            n = len(part)
            padded = part + [part[-1]] * (chunk - n)  # same batch size: no recompile
            out = renderer(*unit_batch(renderer.config, layer, padded),
                           on_segment=lambda ran, k=n: bar.update(k * ran))
            timing["compile"] = renderer.compile_seconds
            timing["compute"] = time.perf_counter() - began - renderer.compile_seconds
            if pending is not None:
                pending.result()  # the previous chunk is on disk before this one's records go
            pending = writer.submit(_write_chunk, result, part, out, record, timing)
        if pending is not None:
            pending.result()


def unit_renderer(model: Model, config: RenderConfig, layer: str, devices=None) -> Renderer:
    """The renderer of ``layer``'s units: with ``config.diverse`` > 1, one whose diversity term
    pushes apart each unit's own images."""
    diversity = None if config.diverse == 1 else obj.diversity(layer, DIVERSITY_WEIGHT,
                                                               group=config.diverse)
    return Renderer(model, config, devices=devices, batch_objective=diversity)


def unit_batch(config: RenderConfig, layer: str, channels: Sequence[int]) -> tuple[list, Any]:
    """The objectives and keys of ``channels``' images: ``config.view`` of each channel,
    ``config.diverse`` consecutive images per channel (the first with the channel's own key,
    so one image per unit is the plain render)."""
    per_unit = config.diverse
    objectives = [obj.unit(layer, c, config.view) for c in channels for _ in range(per_unit)]
    keys = channel_keys(config.seed, channels)
    if per_unit > 1:
        copies = jnp.tile(jnp.arange(per_unit, dtype=jnp.uint32), len(channels))
        base = jnp.repeat(keys, per_unit, axis=0)
        derived = jax.vmap(derive_key)(base, DIVERSE_KEYS + copies)
        data = jnp.where((copies == 0)[:, None], jax.random.key_data(base),
                         jax.random.key_data(derived))
        keys = jax.random.wrap_key_data(data, impl=jax.random.key_impl(base))
    return objectives, keys


def _fitting_chunk(renderer: Renderer, layer: str, n_channels: int) -> int:
    """The channels to render at once, their program compiled: the config's chunk of images,
    or the automatic size, made smaller (and balanced again) if its program does not fit in
    device memory; each chunk holds whole groups of ``diverse`` images."""
    requested, per_unit = renderer.config.chunk, renderer.config.diverse
    images = requested or auto_chunk_size(renderer.settings, renderer.devices, layer,
                                          n_channels * per_unit)
    chunk = max(1, min(images // per_unit, n_channels))
    while True:
        try:
            renderer.compiled(*unit_batch(renderer.config, layer, [0] * chunk))
            return chunk
        except ChunkTooLargeError as err:
            if requested or chunk == 1:
                raise
            chunk = max(1, chunk_sizes(n_channels * per_unit, err.fits,
                                       len(renderer.devices)) // per_unit)


def _write_chunk(result: LayerRender, part: Sequence[int], out, record: dict, timing: dict):
    """Write one rendered chunk's PNGs, then the records that list them."""
    began = time.perf_counter()
    per_unit = record["diverse"]
    for j, c in enumerate(part):
        rows = []
        for k in range(per_unit):
            i, path = j * per_unit + k, result.image_path(c, k)
            save_png(out.images[i], path)
            rows.append({"objective": float(out.final[i]), "png": path.name})
            if record["optimized_layer"] != result.layer:
                rows[-1]["objective_post"] = float(out.final_post[i])
        result.records[c] = {**rows[0], **({"diverse": rows[1:]} if rows[1:] else {})}
    timing["write"] += time.perf_counter() - began
    result.timing = {k: round(v, 3) for k, v in timing.items()}
    result.seconds = round(sum(timing.values()), 3)
    _save_records(result, record, _records_path(result.out_dir))


def _save_records(result: LayerRender, record: dict, path: Path) -> None:
    doc = {"layer": result.layer, "settings": record, "seconds": round(result.seconds, 3),
           "timing": result.timing,
           "channels": {str(c): r for c, r in sorted(result.records.items())}}
    write_text_atomic(json.dumps(doc, indent=1), path)
