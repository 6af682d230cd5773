"""Top-k dataset examples (Zeiler & Fergus, 2014): the image patches that excite a channel most.

Images stream through a jit-compiled batch function; for each channel only the k highest
single-unit activations are kept (value, image, y, x), and the k lowest, and each is shown as
the crop of its source image that the unit sees (its receptive field, measured from
gradients), with its projections back to pixels (deconvnet where the network max-pools,
guided backprop).

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
    >>> result.bottom[0][0].value <= result.bottom[0][1].value < result.examples[0][1].value
    True
    >>> projection_rules(model, "blocks_1")   # no max pooling: deconvnet would not vary
    ('guided',)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass, field as dataclass_field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import jaxprs_in_params
from PIL import Image

from .attribution import ALL_CHANNELS, PROJECTIONS, gradient_image, projection_fn, unit_weights
from .image import make_grid, to_uint8
from .models.base import Model, per_model
from .photos import DatasetError, batches, padded_batch, prefetch

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
    """One unit: its activation, source image name, position in the layer's map, and patch."""
    value: float
    image: str
    y: int
    x: int
    patch: np.ndarray


@dataclass
class TopPatches:
    """A layer's dataset examples: per channel the ``k`` units of highest activation
    (``examples``, best first) and of lowest (``bottom``, lowest first)."""
    layer: str
    size: int
    field: ReceptiveField
    examples: dict[int, list[Example]]
    n_images: int
    bottom: dict[int, list[Example]] = dataclass_field(default_factory=dict)


@per_model
def _batch_extremes_fn(model: Model, layer: str, k: int):
    """jit((params, images, n_valid, channels) -> per channel the k highest and the k lowest
    units over the first n_valid images of the batch: ((values, flat unit indices), (minus
    values, flat unit indices)))."""
    def run(params, images, n_valid, channels):
        acts = model.activations(images, params, [layer])[layer][..., channels]
        valid = (jnp.arange(acts.shape[0]) < n_valid)[:, None, None, None]

        def best(values):  # (channels, k): padding's units rank last
            return jax.lax.top_k(jnp.where(valid, values, -jnp.inf).reshape(-1, len(channels)).T,
                                 k)
        return best(acts), best(-acts)
    return jax.jit(run)


class _Running:
    """Each channel's ``k`` best units so far: values (C, <=k), best first, and units
    (C, <=k, 3) as (image number, y, x)."""

    def __init__(self, n_channels: int, k: int):
        self.k = k
        self.values = np.full((n_channels, 0), -np.inf, np.float32)
        self.units = np.zeros((n_channels, 0, 3), np.int64)

    def merge(self, values, units) -> None:
        values = np.concatenate([self.values, values], axis=1)
        units = np.concatenate([self.units, units], axis=1)
        order = np.argsort(-values, axis=1, kind="stable")[:, :self.k]  # ties: the first seen
        self.values = np.take_along_axis(values, order, 1)
        self.units = np.take_along_axis(units, order[..., None], 1)

    def kept(self) -> set[tuple]:
        """The units kept (a k beyond the units seen keeps padding's -inf ones: not those)."""
        return {tuple(u) for u in self.units[np.isfinite(self.values)].tolist()}


def top_patches(model: Model, images: Iterable[tuple[str, np.ndarray]], layer: str,
                channels: Sequence[int], k: int = 9, size: int = 224, batch: int = 16,
                progress: bool = True) -> TopPatches:
    """For each channel, the ``k`` units with the highest activation over all ``images``
    (``(name, image)`` pairs of any size, e.g. from ``iter_images`` or ``sample_photos``; each
    is cut to its largest centered square and resized to ``size``) and the ``k`` with the
    lowest, with their receptive-field patches. The images stream through in batches of
    ``batch``, the next batch decoded on a background thread while one is computed; memory
    holds only the examples kept, whatever the number of images. ``progress``: a progress bar
    with images per second."""
    from tqdm import tqdm

    channels = [int(c) for c in channels]
    field = receptive_field(model, layer, size)
    h, w = model.layer_shape(layer, size)[:2]
    fn = _batch_extremes_fn(model, layer, min(k, batch * h * w))
    top, low = _Running(len(channels), k), _Running(len(channels), k)
    patches: dict[tuple, np.ndarray] = {}
    names: dict[int, str] = {}
    seen = 0
    total = len(images) if isinstance(images, Sized) else None
    with tqdm(total=total, desc=f"{layer} dataset", unit="img", disable=not progress,
              leave=False) as bar:
        for batch_names, pixels in prefetch(batches(images, size, batch)):
            n = len(batch_names)
            highest, lowest = fn(model.params, padded_batch(pixels, batch), n,
                                 np.asarray(channels))
            for running, (vals, idx) in ((top, highest), (low, lowest)):
                b, y, x = np.unravel_index(np.asarray(idx), (batch, h, w))
                running.merge(np.asarray(vals), np.stack([b + seen, y, x], axis=-1))
            kept = top.kept() | low.kept()
            names = {i: names[i] if i < seen else batch_names[i - seen] for i, _, _ in kept}
            patches = {u: patches[u] if u[0] < seen else
                       crop(pixels[u[0] - seen], field.offset + u[1] * field.stride,
                            field.offset + u[2] * field.stride, field.size) for u in kept}
            seen += n
            bar.update(n)
    if not seen:
        raise DatasetError("no readable images to search")

    def examples(running: _Running, sign: float) -> dict[int, list[Example]]:
        return {c: [Example(sign * float(v), names[i], y, x, patches[i, y, x])
                    for v, (i, y, x) in zip(running.values[j], running.units[j].tolist())
                    if np.isfinite(v)] for j, c in enumerate(channels)}
    return TopPatches(layer, size, field, examples(top, 1.0), seen, examples(low, -1.0))


def patch_grid(examples: Sequence[Example], tile: int = 96,
               columns: int | None = None) -> np.ndarray:
    """Tile a channel's examples, each patch resized to ``tile`` px and labeled with its
    activation, into a uint8 image."""
    tiles = np.stack([resized_tile(e.patch, tile) for e in examples])
    return make_grid(tiles, columns=columns, labels=[f"{e.value:.3f}" for e in examples])


def resized_tile(image, side: int) -> np.ndarray:
    """A float image in [0, 1] as a ``side`` x ``side`` uint8 tile: nearest-neighbour when
    enlarged (units stay visible), bilinear when reduced."""
    im = Image.fromarray(to_uint8(image))
    resample = Image.Resampling.NEAREST if im.size[0] < side else Image.Resampling.BILINEAR
    return np.asarray(im.resize((side, side), resample))


def _uses_primitive(jaxpr, name: str) -> bool:
    """Whether ``jaxpr`` or any program inside it binds the primitive ``name``."""
    return any(eqn.primitive.name == name
               or any(_uses_primitive(sub, name) for sub in jaxprs_in_params(eqn.params))
               for eqn in jaxpr.eqns)


@per_model
def has_max_pool(model: Model, layer: str) -> bool:
    """Whether the forward pass up to ``layer`` max-pools (a ``reduce_window_max``, as Flax's,
    Keras's and ``lax``'s max pooling compute). Only then does a deconvnet projection depend
    on the input: its switches are the poolings' argmax; its rectifiers pass every positive
    gradient, whatever the forward pass did."""
    x = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, model.input_channels),
                             jnp.float32)
    traced = jax.make_jaxpr(lambda v: model.activations(v, layers=[layer]))(x)
    return _uses_primitive(traced.jaxpr, "reduce_window_max")


def projection_rules(model: Model, layer: str) -> tuple[str, ...]:
    """The projections worth showing for ``layer``'s examples: guided backprop, and deconvnet
    too where the network max-pools before it (``has_max_pool``)."""
    return PROJECTIONS if has_max_pool(model, layer) else ("guided",)


def patch_projections(model: Model, layer: str, channel: int, examples: Sequence[Example],
                      sources: dict, field: ReceptiveField,
                      rules: Sequence[str] = PROJECTIONS) -> dict[str, list[np.ndarray]]:
    """For each projection rule of ``rules`` (deconvnet, guided), each example's projection
    (the gradient of its unit through the rule's rectifiers) as a picture cut to the example's
    patch window; ``sources`` maps an example's image name to the image it was found in (at
    search size)."""
    images = np.stack([sources[e.image] for e in examples])
    weights = unit_weights(model.layer_shape(layer, images.shape[1]), [channel] * len(examples),
                           [e.y for e in examples], [e.x for e in examples])
    windows = [(field.offset + e.y * field.stride, field.offset + e.x * field.stride)
               for e in examples]
    out = {}
    for rule in rules:
        grads = np.asarray(projection_fn(model, layer, rule)(images, model.params, weights))
        out[rule] = [crop(gradient_image(g) / 255.0, top, left, field.size)
                     for g, (top, left) in zip(grads, windows)]
    return out
