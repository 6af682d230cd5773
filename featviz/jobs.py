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

import jax

from . import __version__, distributed, objectives as obj
from .channels import check_channels, check_size
from .config import RenderConfig
from .engine import Renderer, channel_keys
from .errors import ChunkTooLargeError
from .image import save_png, write_text_atomic
from .memory import auto_chunk_size, chunk_sizes
from .models.base import Model


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

    def image_path(self, c: int) -> Path:
        return self.out_dir / f"{self.layer}_{c}.png"


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

    ``results.json`` holds, per channel, the final image's objective (the channel's mean
    activation, untransformed; on a rectified layer optimized before its rectifier also
    ``objective_post``, after it) and the seconds spent compiling, computing and writing.
    Channels already rendered with the same settings are skipped; in a run of several
    processes each renders its share and process 0 merges the records. A chunk's PNGs are
    written on a background thread while the next chunk renders.
    """
    config = (config or RenderConfig()).replace(**settings)
    model.check_layer(layer)
    check_channels(list(channels), model.channels(layer), layer)
    check_size(model, layer, config.size)
    out_dir = Path(out_dir)
    renderer = Renderer(model, config, devices=devices)
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
            out = renderer([obj.channel(layer, c) for c in padded],
                           channel_keys(renderer.config.seed, padded),
                           on_segment=lambda ran, k=n: bar.update(k * ran))
            timing["compile"] = renderer.compile_seconds
            timing["compute"] = time.perf_counter() - began - renderer.compile_seconds
            if pending is not None:
                pending.result()  # the previous chunk is on disk before this one's records go
            pending = writer.submit(_write_chunk, result, part, out, record, timing)
        if pending is not None:
            pending.result()


def _fitting_chunk(renderer: Renderer, layer: str, n_channels: int) -> int:
    """The chunk size to render with, its program compiled: the config's, or the automatic
    size, made smaller (and balanced again) if its program does not fit in device memory."""
    requested = renderer.config.chunk
    chunk = max(1, min(requested or auto_chunk_size(renderer.settings, renderer.devices, layer,
                                                    n_channels), n_channels))
    while True:
        try:
            renderer.compiled([obj.channel(layer, 0)] * chunk, channel_keys(0, [0] * chunk))
            return chunk
        except ChunkTooLargeError as err:
            if requested or chunk == 1:
                raise
            chunk = chunk_sizes(n_channels, err.fits, len(renderer.devices))


def _write_chunk(result: LayerRender, part: Sequence[int], out, record: dict, timing: dict):
    """Write one rendered chunk's PNGs, then the records that list them."""
    began = time.perf_counter()
    for j, c in enumerate(part):
        save_png(out.images[j], result.image_path(c))
        result.records[c] = {"objective": float(out.final[j]), "png": result.image_path(c).name}
        if record["optimized_layer"] != result.layer:
            result.records[c]["objective_post"] = float(out.final_post[j])
    timing["write"] += time.perf_counter() - began
    result.timing = {k: round(v, 3) for k, v in timing.items()}
    result.seconds = round(sum(timing.values()), 3)
    _save_records(result, record, _records_path(result.out_dir))


def _save_records(result: LayerRender, record: dict, path: Path) -> None:
    doc = {"layer": result.layer, "settings": record, "seconds": round(result.seconds, 3),
           "timing": result.timing,
           "channels": {str(c): r for c, r in sorted(result.records.items())}}
    write_text_atomic(json.dumps(doc, indent=1), path)
