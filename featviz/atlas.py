"""A layer's atlas: its channels' feature visualizations tiled into one labeled grid.

The channels are rendered as a resumable job (``featviz.jobs.render_channels``) into
``<atlas stem>_channels/``, then tiled.

Example:
    >>> from featviz import load_model
    >>> result = render_atlas(load_model(), "blocks_3", [0, 1], "/tmp/featviz-doc-atlas.png",
    ...                       steps=4, size=64, progress=False)
    >>> load_image("/tmp/featviz-doc-atlas.png").shape[2], sorted(result.records)
    (3, [0, 1])
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from .image import load_image, make_grid, save_png
from .jobs import LayerRender, render_channels
from .models.base import Model


def atlas_image(result: LayerRender, channels: Sequence[int], columns: int | None = None):
    """Tile the rendered channels into one labeled uint8 grid."""
    images = np.stack([load_image(result.image_path(c)) for c in channels])
    return make_grid(images, columns=columns, labels=[f"{result.layer}:{c}" for c in channels])


def render_atlas(model: Model, layer: str, channels: Sequence[int], out_png, config=None, *,
                 columns: int | None = None, **settings) -> LayerRender:
    """Render channels (resumably, into ``<out_png stem>_channels/``) and write the atlas PNG
    (process 0 of a multi-process run writes it); ``config`` and ``settings`` as for
    ``render_channels``."""
    out_png = Path(out_png)
    result = render_channels(model, layer, channels, out_png.with_name(out_png.stem + "_channels"),
                             config, **settings)
    if jax.process_index() == 0:
        save_png(atlas_image(result, channels, columns), out_png)
    return result
