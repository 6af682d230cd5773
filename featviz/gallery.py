"""A static HTML gallery of a network's channels: an index of layers, an atlas page per layer,
and a page per channel with its feature visualization, its top dataset patches and their
deconvnet projections. Plain files with relative links: open ``index.html`` from disk.

    featviz gallery --out site/ [--layers blocks_3,blocks_8] [--channels 0-3] [--images DIR]
                    [--k 9] [every render option: --steps N --size PX --lr ... --chunk N]

Renders go through ``featviz.jobs.render_channels`` and the patches are recorded per layer in
``patches.json``, every file written atomically, so a rerun after an interruption redoes only
the channels that were not finished.

Example:
    >>> from featviz import load_model
    >>> site = build_gallery(load_model(), "/tmp/featviz-gallery-doc", ["blocks_1"], "0-1",
    ...                      steps=2, size=64, k=2, image_size=64, progress=False)
    >>> sorted(p.name for p in (site / "blocks_1").glob("*.html"))
    ['0.html', '1.html', 'index.html']
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .attribution import PROJECTIONS
from .channels import check_size, parse_channels
from .config import RenderConfig
from .image import save_png, write_text_atomic
from .jobs import render_channels
from .models.base import Model
from .photos import DatasetError, iter_images, sample_photos, square_resize, warn_once
from .top_patches import patch_projections, top_patches

Photos = Callable[[], Iterator[tuple[str, np.ndarray]]]

CSS = """body{font:15px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;
color:#222}a{color:#05c}nav{margin-bottom:1em}nav a{margin-right:1em}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0 0 1em 0}
figcaption{font-size:12px;color:#555}img{display:block;border:1px solid #ccc}
.pair{display:flex;gap:3px}.pixel{image-rendering:pixelated}.layer{margin:1.5em 0}
.strip{display:flex;gap:4px}"""


def _page(title: str, body: str, nav: Sequence[tuple[str, str]] = ()) -> str:
    links = "".join(f'<a href="{href}">{html.escape(text)}</a>' for href, text in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<title>{html.escape(title)}</title><link rel="icon" href="data:,">'
            f"<style>{CSS}</style></head>\n<body><nav>{links}</nav><h1>{html.escape(title)}</h1>"
            f"\n{body}\n</body></html>\n")


def _img(src: str, width: int, alt: str, pixel: bool = False) -> str:
    cls = ' class="pixel"' if pixel else ""
    return (f'<img src="{quote(src)}" width="{width}" height="{width}" '
            f'alt="{html.escape(alt)}"{cls}>')


def _slug(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", layer)


def photo_source(images=None, size: int | None = None) -> Photos:
    """A function returning a fresh ``(name, image)`` iterator over the .jpg/.png files of the
    folder ``images`` (loaded at ``size``), or over ``sample_photos()`` when None. Raises
    ``DatasetError`` at once for a missing folder or one without a readable image."""
    if images is None:
        return sample_photos

    skipped = warn_once()

    def photos():
        return iter_images(images, size, skipped)
    if next(photos(), None) is None:
        raise DatasetError(f"no readable images in {images}")
    return photos


def _load_json(path: Path, settings: dict) -> dict:
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return saved if saved.get("settings") == settings else {}


def _save_channel(model: Model, layer: str, c: int, examples, field, sources: dict,
                  out_dir: Path) -> list[dict]:
    """Write one channel's patches and their projections (cut to the same window); its rows."""
    projections = patch_projections(model, layer, c, examples, sources, field)
    rows = []
    for i, e in enumerate(examples):
        row = {"value": e.value, "image": Path(e.image).name, "y": e.y, "x": e.x,
               "patch": f"patches/{c}_{i}.png"}
        save_png(e.patch, out_dir / row["patch"])
        for rule in PROJECTIONS:
            row[rule] = f"patches/{c}_{i}_{rule}.png"
            save_png(projections[rule][i], out_dir / row[rule])
        rows.append(row)
    return rows


def layer_patches(model: Model, layer: str, channels: Sequence[int], photos: Photos, out_dir,
                  *, source: str = "", k: int = 9, image_size: int = 224,
                  progress: bool = True) -> dict:
    """Save each channel's top-``k`` patches, with their deconvnet and guided-backprop
    projections, as PNGs under ``out_dir`` and return ``patches.json``'s contents. Channels
    already done with the same settings (``source`` names the photos) are kept; the others
    are found in one pass over ``photos()``."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    settings = {"model": model.name, "k": k, "image_size": image_size, "photos": source,
                "projections": list(PROJECTIONS)}
    doc = _load_json(out_dir / "patches.json", settings) or {"settings": settings, "channels": {}}
    done = {c for c, rows in doc["channels"].items()
            if all((out_dir / r[f]).exists() for r in rows for f in ("patch",) + PROJECTIONS)}
    todo = [c for c in channels if str(c) not in done]
    if not todo:
        return doc
    found = top_patches(model, photos(), layer, todo, k=k, size=image_size)
    doc["receptive_field"], doc["images"] = found.field.size, found.n_images
    needed = {e.image for examples in found.examples.values() for e in examples}
    sources = {name: square_resize(im, image_size) for name, im in photos() if name in needed}
    for c in tqdm(todo, desc=f"{layer} patches", unit="ch", disable=not progress, leave=False):
        doc["channels"][str(c)] = _save_channel(model, layer, c, found.examples[c], found.field,
                                                sources, out_dir)
        write_text_atomic(json.dumps(doc, indent=1), out_dir / "patches.json")
    return doc


def _channel_page(layer: str, c: int, channels: Sequence[int], render: dict, patches: dict,
                  steps: int, size: int) -> str:
    i = channels.index(c)
    nav = [("../index.html", "all layers"), ("index.html", f"{layer} atlas")]
    nav += [(f"{channels[i - 1]}.html", "previous")] if i > 0 else []
    nav += [(f"{channels[i + 1]}.html", "next")] if i + 1 < len(channels) else []
    tiles = "".join(
        f'<figure><div class="pair">{_img(r["patch"], 128, "patch", pixel=True)}'
        + "".join(_img(r[rule], 128, f"{rule} projection", pixel=True) for rule in PROJECTIONS)
        + f'</div><figcaption>{r["value"]:.2f} &middot; {html.escape(r["image"])}</figcaption>'
        "</figure>"
        for r in patches["channels"][str(c)])
    body = (f'<figure>{_img("renders/" + render["png"], 256, f"{layer} channel {c}")}'
            f"<figcaption>feature visualization: {steps} steps at {size} px; mean activation "
            f"{render['objective']:.2f}</figcaption></figure>\n<h2>Top dataset patches</h2>"
            f"<p>The units of this channel with the highest activation over "
            f"{patches['images']} photos: each one's receptive field "
            f"({patches['receptive_field']} px), then the unit projected back to pixels by "
            f"deconvnet (Zeiler &amp; Fergus, 2014) and by guided backprop (Springenberg et "
            f"al., 2015). In a network without max pooling (such as EfficientNet-Lite) "
            f"deconvnet has no input-dependent switches, so it projects a unit to almost the "
            f"same pattern for every patch; guided backprop also masks by the forward pass's "
            f"rectifiers, so it follows the patch.</p>\n<div class=\"grid\">{tiles}</div>")
    return _page(f"{layer} channel {c}", body, nav)


def _atlas_page(layer: str, renders: dict, channels: Sequence[int]) -> str:
    thumbs = "".join(f'<figure><a href="{c}.html">'
                     f'{_img("renders/" + renders[c]["png"], 128, f"channel {c}")}</a>'
                     f"<figcaption>channel {c}</figcaption></figure>" for c in channels)
    return _page(f"{layer} atlas", f'<div class="grid">{thumbs}</div>',
                 [("../index.html", "all layers")])


def _index_page(model: Model, layers: dict, steps: int, size: int) -> str:
    parts = []
    for layer, (slug, renders, channels) in layers.items():
        strip = "".join(_img(f"{slug}/renders/{renders[c]['png']}", 64, f"channel {c}")
                        for c in channels[:8])
        parts.append(f'<div class="layer"><h2><a href="{slug}/index.html">{html.escape(layer)}'
                     f"</a></h2><p>{len(channels)} of {model.channels(layer)} channels</p>"
                     f'<a class="strip" href="{slug}/index.html">{strip}</a></div>')
    intro = (f"<p>Model {html.escape(model.name)}: each layer's channels rendered by gradient "
             f"ascent ({steps} steps at {size} px), with the dataset patches that excite them.</p>")
    return _page("featviz gallery", intro + "".join(parts))


def _check_layer(model: Model, layer: str, size: int) -> None:
    check_size(model, model.spatial_layer(layer), size)


GALLERY_CONFIG = RenderConfig(steps=256)  # a gallery's default render settings


def build_gallery(model: Model, out, layers: Sequence[str], channels: str | None = "0-15",
                  config: RenderConfig | None = None, *, k: int = 9, images=None,
                  image_size: int | None = None, devices=None, progress: bool = True,
                  **settings) -> Path:
    """Write the site into ``out`` and return its path.

    Args:
        model: the network.
        out: the site's folder.
        layers: the layers shown.
        channels: a spec like ``"0-3,7"`` (or "all") applied to every layer.
        config: the render settings (default: ``GALLERY_CONFIG``); keyword ``settings``
            (``steps=64, size=96, ...``) change it.
        k: top patches per channel.
        images: a folder of photos (default: ``sample_photos()``) searched at
            ``image_size`` px (default: the model's input size).
        devices: shard each render chunk over these devices.
        progress: show progress bars.
    """
    config = (config or GALLERY_CONFIG).replace(**settings)
    steps, size = config.steps, config.size
    image_size = image_size or model.image_size
    for layer in layers:
        _check_layer(model, layer, size)
    chosen = {layer: parse_channels(channels, model.channels(layer), layer) for layer in layers}
    photos = photo_source(images, image_size)
    out, done = Path(out), {}
    for layer, chans in chosen.items():
        slug = _slug(layer)
        renders = render_channels(model, layer, chans, out / slug / "renders", config,
                                  devices=devices, progress=progress).records
        patches = layer_patches(model, layer, chans, photos, out / slug, k=k,
                                source=str(images or "sample_photos"), image_size=image_size,
                                progress=progress)
        for c in chans:
            write_text_atomic(_channel_page(layer, c, chans, renders[c], patches, steps, size),
                              out / slug / f"{c}.html")
        write_text_atomic(_atlas_page(layer, renders, chans), out / slug / "index.html")
        done[layer] = (slug, renders, chans)
    write_text_atomic(_index_page(model, done, steps, size), out / "index.html")
    return out
