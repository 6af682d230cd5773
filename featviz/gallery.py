"""A static HTML site of a network's units, after OpenAI Microscope: an index of the model's
layers with a class search, a page per layer (its units, an activation atlas where one is in
its folder, Zeiler & Fergus's grid of top patches), and a page per unit: its channel, centre
neuron and negative images, diverse images, top and bottom dataset examples with projections,
the earlier layer's units that contribute most to it and the classes it drives most. Plain
files with relative links: open ``index.html`` from disk.

    featviz gallery --out site/ [--layers blocks_3,blocks_8|all] [--channels 0-3] [--images DIR]
                    [--k 9] [--devices N] [every render option: --steps N --size PX --diverse K]

Each part is recorded with the settings it was made with (``featviz.site_data``), every file
written atomically, so a rerun after an interruption, with other photos or with other render
options redoes only what is missing or changed.

Several processes (one per host, ``featviz.distributed``) share the renders, and process 0
writes the dataset examples, links and pages into the shared folder:

    srun --nodes=4 --ntasks-per-node=1 featviz gallery --out /shared/site/ --distributed auto

Example:
    >>> from featviz import load_model
    >>> site = build_gallery(load_model("tiny"), "/tmp/featviz-gallery-doc", ["conv3"], "0-1",
    ...                      steps=2, size=32, k=2, diverse=1, progress=False)
    >>> sorted(p.name for p in (site / "conv3").glob("*.html"))
    ['0.html', '1.html', 'index.html']
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from . import distributed
from .channels import check_size, parse_channels
from .config import RenderConfig
from .image import save_webp, write_text_atomic
from .models.base import Model
from .photos import DatasetError, PhotoSource
from .site_data import layer_examples, layer_links, layer_renders
from .site_pages import (
    THUMB_SIDE,
    LayerData,
    class_search_index,
    index_page,
    layer_page,
    preview,
    slug,
    unit_page,
)
from .unit_links import class_labels, has_classes

GALLERY_CONFIG = RenderConfig(steps=256, diverse=4)  # a gallery's default render settings


def photo_source(images=None, size: int | None = None) -> PhotoSource:
    """The photos of the folder ``images`` (searched recursively, loaded at ``size``), or
    ``sample_photos()`` when None; ``DatasetError`` at once for a missing folder or one
    without a readable image."""
    source = PhotoSource(images, size)
    if next(source(), None) is None:
        raise DatasetError(f"no readable images in {images}")
    return source


def network_order(model: Model, layers: Sequence[str]) -> list[str]:
    """``layers`` in the order the network computes them (a pre-activation just before the
    layer it rectifies).

    >>> from featviz import load_model
    >>> network_order(load_model("tiny"), ["conv3", "conv2_conv", "conv1"])
    ['conv1', 'conv2_conv', 'conv3']
    """
    rectified = {pre: layer for layer, pre in model.pre_activations.items()}

    def position(layer: str) -> float:
        if layer in model.layers:
            return model.layers.index(layer)
        return model.layers.index(rectified[layer]) - 0.5
    return sorted(layers, key=position)


def chosen_units(model: Model, layers: Sequence[str], channels: str | None,
                 size: int) -> dict[str, list[int]]:
    """Each layer (in network order) -> the units ``channels`` picks; every layer checked to
    have a spatial map large enough at ``size`` px."""
    for layer in layers:
        check_size(model, model.spatial_layer(layer), size)
    return {layer: parse_channels(channels, model.channels(layer), layer)
            for layer in network_order(model, layers)}


def _compact_copy(source: Path, target: Path, side: int | None = None) -> None:
    """The render ``source`` as a WebP at ``target`` (``side`` px square, or its own size),
    unless ``target`` is as new as ``source`` already."""
    if target.exists() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return
    with Image.open(source) as im:
        im = im.convert("RGB")
        small = im if side is None else im.resize((side, side), Image.Resampling.LANCZOS)
    save_webp(np.asarray(small), target)


def _thumbnails(renders: dict, view: str, out_dir: Path) -> dict[int, str]:
    """Each unit's ``view`` render as a ``THUMB_SIDE`` px WebP, and each diverse image's
    ``preview`` (each made again only when its render is newer); channel -> thumbnail path
    relative to ``out_dir``."""
    for record in renders.get("diverse", {}).values():
        for r in [record, *record.get("diverse", [])]:
            _compact_copy(out_dir / r["png"], out_dir / preview(r["png"]))
    thumbs = {c: f"thumbs/{c}.webp" for c in renders[view]}
    for c, record in renders[view].items():
        _compact_copy(out_dir / record["png"], out_dir / thumbs[c], THUMB_SIDE)
    return thumbs


def _build_layer(model: Model, layer: str, channels: list[int], out: Path, config: RenderConfig,
                 photos: PhotoSource, *, earlier: str | None, k: int, image_size: int,
                 devices, progress: bool, timing: dict) -> LayerData | None:
    """Render, search and measure one layer (each part resumed); what its pages show. In a
    run of several processes each renders its share; only process 0 goes on (the others get
    None)."""
    out_dir = out / slug(layer)
    began = time.perf_counter()
    renders = layer_renders(model, layer, channels, out_dir, config, devices=devices,
                            progress=progress)  # every process's renders, after their barrier
    if jax.process_index() != 0:
        return None
    thumbs = _thumbnails(renders, config.view, out_dir)
    rendered = time.perf_counter()
    examples = layer_examples(model, layer, channels, photos, out_dir, k=k,
                              image_size=image_size, progress=progress)
    searched = time.perf_counter()
    links = layer_links(model, layer, channels, photos, out_dir, earlier=earlier,
                        image_size=image_size)
    timing[layer] = {"render": round(rendered - began, 2),
                     "examples": round(searched - rendered, 2),
                     "links": round(time.perf_counter() - searched, 2)}
    return LayerData(layer, channels, renders, examples, links, thumbs, earlier,
                     (out_dir / "activation_atlas.png").is_file())


def _class_search(model: Model, out: Path, shown: dict[str, LayerData]) -> dict | None:
    """The index's class search data from every shown unit's class vector, or None for a
    model without class scores."""
    if not has_classes(model):
        return None
    units, scores = [], []
    for data in shown.values():
        for c in data.channels:
            units.append((f"{data.layer}:{c}", f"{data.slug}/{c}.html",
                          f"{data.slug}/{data.thumbs[c]}"))
            vector = data.links["channels"][str(c)]["class_vector"]
            scores.append(np.load(out / data.slug / vector))
    return class_search_index(units, np.stack(scores), class_labels(model))


def write_pages(model: Model, out: Path, shown: dict[str, LayerData], config: RenderConfig,
                image_size: int) -> None:
    """Every unit's page, every layer's page and the index."""
    for data in shown.values():
        earlier = shown.get(data.earlier) if data.earlier else None
        for c in data.channels:
            write_text_atomic(unit_page(data, c, earlier, config), out / data.slug / f"{c}.html")
        write_text_atomic(layer_page(data, model.channels(data.layer)),
                          out / data.slug / "index.html")
    shapes = model.layer_shapes(image_size)
    write_text_atomic(index_page(model.name, shapes, list(shown.values()),
                                 _class_search(model, out, shown), config, image_size),
                      out / "index.html")


def build_gallery(model: Model, out, layers: Sequence[str], channels: str | None = "0-15",
                  config: RenderConfig | None = None, *, k: int = 9, images=None,
                  image_size: int | None = None, devices=None, progress: bool = True,
                  **settings) -> Path:
    """Write the site into ``out`` and return its path.

    Args:
        model: the network.
        out: the site's folder.
        layers: the layers shown (in network order on the site; each unit's links go to the
            layer shown before its own).
        channels: a spec like ``"0-3,7"`` (or "all") applied to every layer.
        config: the render settings (default: ``GALLERY_CONFIG``); keyword ``settings``
            (``steps=64, size=96, diverse=2, ...``) change it. Every view is rendered with
            them; ``config.view`` is the unit's image on layer pages and the index.
        k: top and bottom dataset examples per unit.
        images: a folder of photos (default: ``sample_photos()``) searched at
            ``image_size`` px (default: the model's input size).
        devices: shard each render chunk over these devices (diverse images: one device).
        progress: show progress bars.

    The seconds each layer's parts took are written to ``timing.json``. In a run of several
    processes (``featviz.distributed``) the renders are shared among them and process 0 writes
    the rest; every process returns once the site is complete.
    """
    config = (config or GALLERY_CONFIG).replace(**settings)
    image_size = image_size or model.image_size
    chosen = chosen_units(model, layers, channels, config.size)
    layers = list(chosen)
    photos = photo_source(images, image_size)
    out, shown, timing = Path(out), {}, {}
    for i, (layer, chans) in enumerate(chosen.items()):
        data = _build_layer(model, layer, chans, out, config, photos,
                            earlier=layers[i - 1] if i else None, k=k, image_size=image_size,
                            devices=devices, progress=progress, timing=timing)
        if data is not None:
            shown[layer] = data
    if jax.process_index() == 0:
        began = time.perf_counter()
        write_pages(model, out, shown, config, image_size)
        timing["pages"] = round(time.perf_counter() - began, 2)
        write_text_atomic(json.dumps(timing, indent=1), out / "timing.json")
    distributed.barrier("featviz-gallery-written")
    return out
