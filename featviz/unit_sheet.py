"""One channel on one sheet, in Zeiler & Fergus's layout: the image that drives it hardest
(feature visualization), the photo patches that excite it most, and those patches projected
back to pixels through deconvnet and guided-backprop rectifiers.

    featviz unit --layer L --channel C [--images DIR] [--k 9] [--steps N] --out sheet.png

Example:
    >>> from featviz import load_model
    >>> sheet = unit_sheet(load_model("tiny"), "conv2", 3, k=4, steps=4, size=32, image_size=32)
    >>> sheet.dtype, sheet.shape[2]
    (dtype('uint8'), 3)
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .attribution import PROJECTIONS
from .config import RenderConfig
from .image import make_grid
from .jobs import unit_batch, unit_renderer
from .models.base import Model
from .photos import PhotoSource
from .top_patches import patch_projections, resized_tile, top_patches

TILE = 80  # side of a patch tile on the sheet, pixels
TITLE_HEIGHT = 16


def _titled_row(parts: list[tuple[str, np.ndarray]], pad: int = 8) -> np.ndarray:
    """Parts (title, uint8 image) side by side on white, each under its title; a part narrower
    than its title gets the title's width, so titles never overlap."""
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    slots = [max(part.shape[1], int(np.ceil(measure.textlength(title, font=font))))
             for title, part in parts]
    height = max(p.shape[0] for _, p in parts) + TITLE_HEIGHT
    canvas = Image.new("RGB", (sum(slots) + pad * (len(parts) + 1), height + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = pad
    for (title, part), slot in zip(parts, slots):
        draw.text((x, 2), title, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(part), (x, TITLE_HEIGHT))
        x += slot + pad
    return np.asarray(canvas)


UNIT_CONFIG = RenderConfig(steps=256)  # a unit sheet's default render settings


def unit_sheet(model: Model, layer: str, channel: int, config: RenderConfig | None = None, *,
               images=None, k: int = 9, image_size: int | None = None,
               **settings) -> np.ndarray:
    """The sheet of ``channel`` of ``layer`` as a uint8 (H, W, 3) image.

    Args:
        model: the network.
        layer: a layer with a spatial map.
        channel: the channel shown.
        config: how its feature visualization is rendered (default: ``UNIT_CONFIG``);
            keyword ``settings`` (``steps=64, size=96, ...``) change it.
        images: the folder of photos searched for the top patches, with its subfolders
            (``PhotoSource``: streamed, an unreadable file skipped after one warning; default:
            scikit-image's photos).
        k: top patches shown, with their deconvnet and guided projections.
        image_size: the side the photos are searched at (default: the model's input size).
    """
    config = (config or UNIT_CONFIG).replace(**settings)
    layer = model.spatial_layer(layer)
    image_size = image_size or model.image_size
    photos = PhotoSource(images, image_size)  # a missing or empty folder: refused at once
    render = unit_renderer(model, config, layer)(*unit_batch(config, layer, [channel]))
    found = top_patches(model, photos(), layer, [channel], k=k, size=image_size)
    examples = found.examples[channel]
    sources = {e.image: photos.load(e.image) for e in examples}  # only the few photos shown
    projections = patch_projections(model, layer, channel, examples, sources, found.field)
    columns = int(np.ceil(np.sqrt(len(examples))))

    def grid(pictures, labels=None):
        return make_grid(np.stack([resized_tile(p, TILE) for p in pictures]), columns=columns,
                         labels=labels)
    patches = grid([e.patch for e in examples], [f"{e.value:.2f}" for e in examples])
    side = patches.shape[0]
    found_title = "top patch" if len(examples) == 1 else f"top {len(examples)} patches"
    shown = f"{layer}:{channel} {'' if config.view == 'channel' else config.view + ' '}"
    if config.diverse == 1:
        parts = [(shown + "feature visualization", resized_tile(render.images[0], side))]
    else:
        parts = [(shown + f"{config.diverse} diverse images",
                  grid(list(render.images), [""] * config.diverse))]
    parts += [(f"{found_title} (activation)", patches)]
    parts += [(f"{rule} projections", grid(projections[rule], [""] * len(examples)))
              for rule in PROJECTIONS]
    return _titled_row(parts)
