"""What a layer's channels do on one photo: their activation maps, tiled as a labeled grid.

Example:
    >>> import numpy as np
    >>> from featviz import load_model
    >>> model = load_model()
    >>> maps = layer_maps(model, np.full((64, 64, 3), 0.5, np.float32), "blocks_3", [0, 5])
    >>> maps.shape
    (2, 8, 8)
    >>> activation_grid(maps, [0, 5]).dtype
    dtype('uint8')
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import matplotlib
import numpy as np

from .image import make_grid, one_image
from .models.base import Model, per_model


@per_model
def layer_fn(model: Model, layer: str):
    """Jit-compiled ``(params, images01) -> activations of layer`` for a batch, cached per model."""
    model.check_layer(layer)
    return jax.jit(lambda params, images: model.activations(images, params, [layer])[layer])


def layer_maps(model: Model, image, layer: str,
               channels: Sequence[int] | None = None) -> np.ndarray:
    """Activation maps (C, h, w) of ``layer`` for one (H, W, 3) image in [0, 1]."""
    model.spatial_layer(layer)
    acts = np.asarray(layer_fn(model, layer)(model.params, one_image(image)))[0]
    maps = np.moveaxis(acts, -1, 0)
    return maps if channels is None else maps[list(channels)]


def activation_grid(maps, channels: Sequence[int], shared_scale: bool = True,
                    tile: int = 96, columns: int | None = None) -> np.ndarray:
    """Color (C, h, w) maps with viridis and tile them, labeled by channel, into a uint8 image.

    ``shared_scale``: one color scale for all tiles (compare channels' strengths) instead of
    one per tile (see each channel's pattern). Tiles are upscaled by an integer factor (nearest
    neighbour, so units stay visible) to about ``tile`` pixels.
    """
    maps = np.asarray(maps, np.float32)
    axes = None if shared_scale else (1, 2)
    lo, hi = maps.min(axis=axes, keepdims=True), maps.max(axis=axes, keepdims=True)
    scaled = (maps - lo) / np.where(hi > lo, hi - lo, 1.0)
    colored = matplotlib.colormaps["viridis"](scaled)[..., :3]
    factor = max(1, round(tile / max(maps.shape[1:])))
    tiles = colored.repeat(factor, axis=1).repeat(factor, axis=2)
    labels = [f"ch {c} max {m:.2f}" for c, m in zip(channels, maps.max(axis=(1, 2)))]
    return make_grid(tiles, columns=columns, labels=labels)
