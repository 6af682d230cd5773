"""What a gallery's pages show of a layer, computed resumably into the layer's folder:

* ``layer_renders``: each unit's image for every view (channel, centre neuron, negative) and
  its diverse images, one ``render_channels`` job per view (``renders/``, ``renders/<view>/``);
* ``layer_examples``: each unit's top and bottom dataset patches, the top ones' projections and
  a Zeiler & Fergus grid of the top nine, as WebP pictures (the projections lossless;
  ``examples/``, recorded in ``examples.json``);
* ``layer_links``: the earlier layer's units that contribute most to each unit and the classes
  each drives most (``links.json``, and each unit's full class vector in ``classes/``).

A record lists the settings its work was made with (the photos by fingerprint); a rerun keeps
the units recorded with the same settings whose files are all there and redoes the others.

Example:
    >>> from featviz import load_model
    >>> from featviz.photos import PhotoSource
    >>> model = load_model("tiny")
    >>> doc = layer_examples(model, "conv2", [1], PhotoSource(None, 32), "/tmp/featviz-doc-ex",
    ...                      k=2, image_size=32, progress=False)
    >>> sorted(doc["channels"]["1"]), len(doc["channels"]["1"]["top"])
    (['bottom', 'grid', 'top'], 2)
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import __version__
from .config import VIEWS, RenderConfig
from .image import make_grid, save_npy, save_webp, write_text_atomic
from .jobs import render_channels
from .models.base import Model
from .photos import PhotoSource
from .site_pages import TILE_SIDE
from .top_patches import (
    ReceptiveField,
    patch_projections,
    projection_rules,
    resized_tile,
    top_patches,
)
from .unit_links import ANALYSIS_PHOTOS, class_labels, strongest, unit_links

EXAMPLE_SIDE = TILE_SIDE  # a dataset patch or projection is saved at most as wide as shown
GRID_TILE = 48  # a patch's side in a layer's grid of top patches
LINKS_SHOWN = 5  # contributing units and classes listed per unit


def layer_renders(model: Model, layer: str, channels: Sequence[int], out_dir,
                  config: RenderConfig, *, devices=None, progress: bool = True) -> dict:
    """Render every view of ``channels`` (``config``'s other settings) and, with
    ``config.diverse`` > 1, that many diverse images of ``config.view``; returns view (or
    "diverse") -> channel -> record, each record's ``png`` relative to ``out_dir``.
    ``config.view``'s images go to ``renders/``, the others' to ``renders/<view>/``."""
    out_dir = Path(out_dir)
    jobs = {view: config.replace(view=view, diverse=1) for view in VIEWS}
    if config.diverse > 1:
        jobs["diverse"] = config
    renders = {}
    for name, job in jobs.items():
        folder = Path("renders") / ("" if name == config.view else name)
        # a diversity term compares a unit's images: those render on one device
        result = render_channels(model, layer, channels, out_dir / folder, job,
                                 devices=None if name == "diverse" else devices,
                                 progress=progress)
        renders[name] = {c: _relative_pngs(result.records[c], folder) for c in channels}
    return renders


def _relative_pngs(record: dict, folder: Path) -> dict:
    """A render record with its PNG names (its diverse ones too) as paths under ``folder``."""
    moved = {**record, "png": (folder / record["png"]).as_posix()}
    if "diverse" in record:
        moved["diverse"] = [_relative_pngs(r, folder) for r in record["diverse"]]
    return moved


def _load_record(path: Path, settings: dict) -> dict:
    """The record file at ``path`` if it was written with ``settings``, else a new one."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        saved = {}
    return saved if saved.get("settings") == settings else {"settings": settings, "channels": {}}


def _files(row) -> list[str]:
    """The files a unit's record names: every string in its dicts but an "image" name (a
    photo's, not a file of the site)."""
    if isinstance(row, dict):
        return [f for key, value in row.items() for f in
                ([value] if isinstance(value, str) and key != "image" else _files(value))]
    if isinstance(row, list):
        return [f for item in row if not isinstance(item, str) for f in _files(item)]
    return []


def _todo(channels: Sequence[int], record: dict, out_dir: Path) -> list[int]:
    """The units of ``channels`` that the record lacks, or whose files are not all there."""
    units = record["channels"]
    return [c for c in channels if str(c) not in units
            or not all((out_dir / f).is_file() for f in _files(units[str(c)]))]


def layer_examples(model: Model, layer: str, channels: Sequence[int], photos: PhotoSource,
                   out_dir, *, k: int = 9, image_size: int = 224, batch: int = 16,
                   progress: bool = True) -> dict:
    """Save each unit's top-``k`` and bottom-``k`` dataset patches, the top ones' projections
    (``projection_rules``) and a grid of its top nine under ``out_dir/examples``, and return
    ``examples.json``'s contents. Units already recorded with the same settings are kept;
    the others are found in one pass over ``photos()``."""
    out_dir = Path(out_dir)
    rules = projection_rules(model, layer)
    settings = {"model": model.name, "layer": layer, "k": k, "image_size": image_size,
                "photos": photos.key, "projections": list(rules), "side": EXAMPLE_SIDE,
                "format": "webp", "featviz": __version__}
    doc = _load_record(out_dir / "examples.json", settings)
    todo = _todo(channels, doc, out_dir)
    if todo:
        found = top_patches(model, photos(), layer, todo, k=k, size=image_size, batch=batch,
                            progress=progress)
        load = lru_cache(maxsize=4 * k)(photos.load)  # the photos a few units share
        doc.update(receptive_field=found.field.size, images=found.n_images)
        for c in todo:  # each unit recorded once its files are written: a rerun resumes
            sources = {e.image: load(e.image) for e in found.examples[c]}
            doc["channels"][str(c)] = _save_examples(model, layer, c, found, sources, rules,
                                                     out_dir)
            write_text_atomic(json.dumps(doc, indent=1), out_dir / "examples.json")
    return doc


def _save_examples(model: Model, layer: str, c: int, found, sources: dict,
                   rules: Sequence[str], out_dir: Path) -> dict:
    """Write one unit's patches, projections and grid; its record."""
    field: ReceptiveField = found.field
    side = min(field.size, EXAMPLE_SIDE)
    top = found.examples[c]
    projections = patch_projections(model, layer, c, top, sources, field, rules)

    def saved(picture, name: str, lossless: bool = False) -> str:
        save_webp(resized_tile(picture, side), out_dir / "examples" / name, lossless)
        return f"examples/{name}"

    row = {"top": [], "bottom": [], "grid": f"examples/grid_{c}.webp"}
    for i, e in enumerate(top):
        entry = {"value": e.value, "image": Path(e.image).name,
                 "patch": saved(e.patch, f"top_{c}_{i}.webp")}
        entry.update({rule: saved(projections[rule][i], f"top_{c}_{i}_{rule}.webp", True)
                      for rule in rules})  # a projection's colours are its message: lossless
        row["top"].append(entry)
    for i, e in enumerate(found.bottom[c]):
        row["bottom"].append({"value": e.value, "image": Path(e.image).name,
                              "patch": saved(e.patch, f"bottom_{c}_{i}.webp")})
    save_webp(_grid_of_nine([e.patch for e in top[:9]]), out_dir / row["grid"])
    return row


def _grid_of_nine(patches: list) -> np.ndarray:
    """Up to nine patches on a 3 x 3 grid of ``GRID_TILE`` px tiles (white where fewer)."""
    tiles = [resized_tile(p, GRID_TILE) for p in patches]
    tiles += [np.full_like(tiles[0], 255)] * (9 - len(tiles))
    return make_grid(np.stack(tiles), columns=3)


def layer_links(model: Model, layer: str, channels: Sequence[int], photos: PhotoSource,
                out_dir, *, earlier: str | None, image_size: int = 224,
                limit: int = ANALYSIS_PHOTOS) -> dict:
    """Each unit's ``LINKS_SHOWN`` strongest contributing units of ``earlier`` and classes
    (``featviz.unit_links``), as ``links.json``'s contents; each unit's whole class vector
    goes to ``classes/<c>.npy`` (for the site's class search). Units already recorded with
    the same settings are kept."""
    out_dir = Path(out_dir)
    settings = {"model": model.name, "layer": layer, "earlier": earlier,
                "image_size": image_size, "photos": photos.key, "limit": limit,
                "featviz": __version__}
    doc = _load_record(out_dir / "links.json", settings)
    todo = _todo(channels, doc, out_dir)
    if todo:
        links = unit_links(model, layer, todo, photos(), earlier=earlier, size=image_size,
                           limit=limit)
        labels = class_labels(model) if links.classes is not None else None
        for j, c in enumerate(todo):
            row: dict = {}
            if links.contributions is not None:
                row["contributions"] = strongest(links.contributions[j], LINKS_SHOWN)
            if links.classes is not None:
                row["classes"] = strongest(links.classes[j], LINKS_SHOWN, labels)
                row["class_vector"] = f"classes/{c}.npy"
                save_npy(links.classes[j], out_dir / row["class_vector"])
            doc["channels"][str(c)] = row
        doc["images"] = links.n_images
        write_text_atomic(json.dumps(doc, indent=1), out_dir / "links.json")
    return doc
