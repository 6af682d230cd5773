"""Top-k dataset examples (Zeiler & Fergus, 2014): the image patches that excite a channel most.

Images stream through a jit-compiled batch function; for each channel only the k highest
single-unit activations are kept (value, image, y, x), and each is shown as the crop of its
source image that the unit sees (its receptive field, measured from gradients).

Example:
    >>> from featviz import load_model
    >>> from featviz.photos import sample_photos
    >>> model = load_model()
    >>> field = receptive_field(model, "blocks_1", 64)
    >>> field.stride
    4
    >>> result = top_patches(model, sample_photos(), "blocks_1", [0, 3], k=2, size=64)
    >>> ([len(result.examples[c]) for c in (0, 3)],
    ...  result.examples[0][0].patch.shape[0] == field.size)
    ([2, 2], True)
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from .attribution import ALL_CHANNELS, PROJECTIONS, gradient_image, projection_fn, unit_weights
from .image import make_grid, to_uint8
from .models.base import Model, per_model
from .photos import DatasetError, square_resize

GREY = 0.5


class ReceptiveField(NamedTuple):
    """Unit (y, x) of a layer sees input rows ``offset + y * stride`` up to ``+ size - 1``
    (and the same for columns); the range may run past the image border."""
    size: int
    stride: int
    offset: int


def _boxes(model: Model, layer: str, side: int, units: Sequence[int]) -> list[tuple[int, int]]:
    """(first row, last row) of the input pixels that unit (u, u) depends on, for each u."""
    images = np.random.default_rng(0).random((len(units), side, side, 3), np.float32)
    every = [ALL_CHANNELS] * len(units)  # "linear": no dead unit hides a pixel
    weights = unit_weights(model.layer_shape(layer, side), every, units, units)
    grads = np.asarray(projection_fn(model, layer, "linear")(images, model.params, weights))
    rows = [np.flatnonzero(np.abs(g).sum(axis=(1, 2))) for g in grads]
    return [(int(r[0]), int(r[-1])) for r in rows]


def receptive_field(model: Model, layer: str, size: int, max_side: int = 2048) -> ReceptiveField:
    """Measure a spatial layer's receptive field for ``size`` x ``size`` inputs, from the input
    gradients of two neighbouring central units (so it works for any model). Where the field
    is clipped by the image, the measurement is repeated on larger random inputs."""
    model.check_layer(layer)
    side, at_size = size, None
    while True:
        shape = model.layer_shape(model.spatial_layer(layer), side)
        c = (shape[0] - 1) // 2
        boxes = _boxes(model, layer, side, [c, c + 1]) if shape[0] > 1 else []
        at_size = at_size or (c, boxes)
        if boxes and all(0 < top and bottom < side - 1 for top, bottom in boxes):
            break
        if side * 2 > max_side:
            raise ValueError(f"the receptive field of {layer!r} exceeds {max_side} px")
        side *= 2
    (top, bottom), (next_top, _) = boxes
    stride, rf = next_top - top, bottom - top + 1
    offset = top - c * stride
    c0, boxes0 = at_size  # re-anchor the offset on the real input size where an edge is free
    if boxes0 and boxes0[0][0] > 0:
        offset = boxes0[0][0] - c0 * stride
    elif boxes0 and boxes0[0][1] < size - 1:
        offset = boxes0[0][1] - rf + 1 - c0 * stride
    return ReceptiveField(rf, stride, offset)


def crop(image, top: int, left: int, size: int) -> np.ndarray:
    """The ``size`` x ``size`` window at (top, left) of an (H, W, 3) image; grey past its
    borders."""
    out = np.full((size, size, 3), GREY, np.float32)
    h, w = image.shape[:2]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + size, h), min(left + size, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return out


class Example(NamedTuple):
    """One top unit: its activation, source image name, position in the layer's map, and patch."""
    value: float
    image: str
    y: int
    x: int
    patch: np.ndarray


@dataclass
class TopPatches:
    layer: str
    size: int
    field: ReceptiveField
    examples: dict[int, list[Example]]  # channel -> best first
    n_images: int


@per_model
def _batch_top_fn(model: Model, layer: str, k: int):
    """jit((params, images, n_valid, channels) -> per channel the k best (values, flat unit
    indices) over the first n_valid images of the batch)."""
    def run(params, images, n_valid, channels):
        acts = model.activations(images, params, [layer])[layer][..., channels]
        valid = jnp.arange(acts.shape[0]) < n_valid
        acts = jnp.where(valid[:, None, None, None], acts, -jnp.inf)
        return jax.lax.top_k(acts.reshape(-1, acts.shape[-1]).T, k)
    return jax.jit(run)


def _batches(images: Iterable[tuple[str, np.ndarray]], size: int, batch: int):
    it = iter(images)
    while chunk := list(itertools.islice(it, batch)):
        yield [name for name, _ in chunk], np.stack([square_resize(im, size) for _, im in chunk])


def top_patches(model: Model, images: Iterable[tuple[str, np.ndarray]], layer: str,
                channels: Sequence[int], k: int = 9, size: int = 224,
                batch: int = 16) -> TopPatches:
    """For each channel, the ``k`` units with the highest activation over all ``images``
    (``(name, image)`` pairs of any size, e.g. from ``iter_images`` or ``sample_photos``; each
    is cut to its largest centered square and resized to ``size``), with their receptive-field
    patches."""
    channels = [int(c) for c in channels]
    field = receptive_field(model, layer, size)
    h, w = model.layer_shape(layer, size)[:2]
    k_batch = min(k, batch * h * w)
    fn = _batch_top_fn(model, layer, k_batch)
    best_vals = np.full((len(channels), 0), -np.inf, np.float32)
    best_units = np.zeros((len(channels), 0, 3), np.int64)  # (image id, y, x)
    patches: dict[tuple, np.ndarray] = {}
    names: list[str] = []
    for batch_names, pixels in _batches(images, size, batch):
        n = len(batch_names)
        padded = np.concatenate([pixels, np.zeros((batch - n,) + pixels.shape[1:], np.float32)])
        vals, idx = map(np.asarray, fn(model.params, padded, n, np.asarray(channels)))
        b, y, x = np.unravel_index(idx, (batch, h, w))
        units = np.stack([b + len(names), y, x], axis=-1)
        vals = np.concatenate([best_vals, vals], axis=1)
        units = np.concatenate([best_units, units], axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")[:, :k]
        best_vals = np.take_along_axis(vals, order, 1)
        best_units = np.take_along_axis(units, order[..., None], 1)
        # a k beyond the units seen keeps the padded images' -inf units: no patch for those
        kept = {tuple(u) for u in best_units[np.isfinite(best_vals)].tolist()}
        patches = {u: patches[u] if u[0] < len(names) else
                   crop(pixels[u[0] - len(names)], field.offset + u[1] * field.stride,
                        field.offset + u[2] * field.stride, field.size) for u in kept}
        names += batch_names
    if not names:
        raise DatasetError("no readable images to search")
    examples = {c: [Example(float(v), names[i], y, x, patches[i, y, x])
                    for v, (i, y, x) in zip(best_vals[j], best_units[j].tolist()) if np.isfinite(v)]
                for j, c in enumerate(channels)}
    return TopPatches(layer, size, field, examples, len(names))


def patch_grid(examples: Sequence[Example], tile: int = 96,
               columns: int | None = None) -> np.ndarray:
    """Tile a channel's examples, each patch resized to ``tile`` px and labeled with its
    activation, into a uint8 image."""
    resample = (Image.Resampling.NEAREST if examples[0].patch.shape[0] < tile
                else Image.Resampling.BILINEAR)
    tiles = [np.asarray(Image.fromarray(to_uint8(e.patch)).resize((tile, tile), resample))
             for e in examples]
    return make_grid(np.stack(tiles), columns=columns, labels=[f"{e.value:.3f}" for e in examples])


def patch_projections(model: Model, layer: str, channel: int, examples: Sequence[Example],
                      sources: dict, field: ReceptiveField) -> dict[str, list[np.ndarray]]:
    """For each projection rule (deconvnet, guided), each example's projection (the gradient
    of its unit through the rule's rectifiers) as a picture cut to the example's patch window;
    ``sources`` maps an example's image name to the image it was found in (at search size)."""
    images = np.stack([sources[e.image] for e in examples])
    weights = unit_weights(model.layer_shape(layer, images.shape[1]), [channel] * len(examples),
                           [e.y for e in examples], [e.x for e in examples])
    windows = [(field.offset + e.y * field.stride, field.offset + e.x * field.stride)
               for e in examples]
    out = {}
    for rule in PROJECTIONS:
        grads = np.asarray(projection_fn(model, layer, rule)(images, model.params, weights))
        out[rule] = [crop(gradient_image(g) / 255.0, top, left, field.size)
                     for g, (top, left) in zip(grads, windows)]
    return out
