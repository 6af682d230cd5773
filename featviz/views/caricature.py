"""Caricature (Lucid's ``recipes/caricature.py``) and feature inversion (Mahendran and
Vedaldi, 2015): an image made from noise whose activations at a layer echo a photo's.

A caricature maximizes ``dot(a, a_photo) * cos(a, a_photo) ** power`` at the layer (Lucid's
objective: the dot product exaggerates what the photo has, the cosine keeps its mix); an
inversion (``invert=True``) maximizes ``-|a - a_photo|^2 / |a_photo|^2``, the photo's
activations matched. The views (``view_transforms``) keep the image's size and, on average,
its place, so that each view's map is compared with the photo's own. Every (photo, layer) pair
renders in one batch, one compiled program, whatever the mix of layers.

Example:
    >>> import numpy as np
    >>> from featviz import load_model
    >>> photo = np.random.default_rng(0).uniform(size=(32, 32, 3)).astype(np.float32)
    >>> result = caricature(load_model("tiny"), photo, ["conv1", "conv3"], steps=4, size=32)
    >>> result.images.shape, result.similarity.shape
    ((1, 2, 32, 32, 3), (1, 2))
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .. import transforms as T
from ..channels import check_size
from ..config import RenderConfig
from ..draws import abstract_keys
from ..engine import Renderer, channel_keys
from ..errors import ConfigError
from ..image import as_images
from ..models.base import Model
from ..objectives import Objective
from .accentuation import model_photo, one_image_each, render_batches

DEFAULT_CONFIG = RenderConfig(steps=128)  # what ``caricature`` renders with by default
DEFAULT_POWER = 1.0
COSINE_FLOOR = 0.1  # under the cosine, so that a negative one cannot flip the objective's sign
_TINY = 1e-12


def view_transforms() -> list[T.Transform]:
    """Random views that keep the image's size and, on average, its place: pad 6 and jitter
    12 (a shift of -6..6 px), then zoom by 0.95-1.05 and rotate by -5..5 degrees about the
    centre (Lucid's caricature: pad 8, jitter 8, scale 0.9-1.1, rotate -5..5, jitter 2)."""
    return [T.pad(6), T.jitter(12),
            T.random_scale_rotate([0.95, 0.975, 1.0, 1.025, 1.05], [-5, -2.5, 0, 2.5, 5])]


def _caricature_value(params, acts, image, static):
    target, power = params
    a = acts[static[1]]
    dot = jnp.sum(a * target)
    cosine = dot / (jnp.sqrt(jnp.sum(a * a) * jnp.sum(target * target)) + _TINY)
    return dot * jnp.maximum(cosine, COSINE_FLOOR) ** power


def caricature_objective(layer: str, target, power: float = DEFAULT_POWER) -> Objective:
    """``dot(a, target) * max(cos(a, target), COSINE_FLOOR) ** power`` at ``layer``."""
    return Objective(_caricature_value, (np.asarray(target, np.float32), np.float32(power)),
                     ("caricature", layer), {layer})


def _inversion_value(target, acts, image, static):
    a = acts[static[1]]
    return -jnp.sum((a - target) ** 2) / (jnp.sum(target ** 2) + _TINY)


def inversion_objective(layer: str, target) -> Objective:
    """``-|a - target|^2 / |target|^2`` at ``layer``: feature inversion."""
    return Objective(_inversion_value, np.asarray(target, np.float32), ("inversion", layer),
                     {layer})


def cosine_similarity(acts, target) -> np.ndarray:
    """The cosine between each of a batch of activations and ``target``."""
    flat = np.asarray(acts, np.float64).reshape(len(acts), -1)
    target = np.asarray(target, np.float64).ravel()
    return flat @ target / (np.linalg.norm(flat, axis=1) * np.linalg.norm(target) + _TINY)


@dataclass(frozen=True)
class Caricature:
    """Caricatures (or inversions) of photos at layers.

    Args:
        layers: the layers, in the order of ``images``' second axis.
        images: (photos, layers, H, W, C) in [0, 1].
        photos: (photos, H, W, C), as the network saw them (cropped, resized).
        similarity: (photos, layers), the cosine between the image's activations at its
            layer and its photo's (on the values the layer is optimized as).
        invert: whether they are inversions; power: the caricature's cosine power.
        seconds: the render's wall time, compilation included.
    """

    layers: list[str]
    images: np.ndarray
    photos: np.ndarray
    similarity: np.ndarray
    invert: bool
    power: float
    seconds: float

    def record(self, photo: int = 0) -> dict:
        """One photo's results as JSON values: the settings and the similarity per layer."""
        return {"objective": "inversion" if self.invert else "caricature",
                "power": None if self.invert else self.power, "seconds": round(self.seconds, 3),
                "cosine_similarity": {layer: float(s) for layer, s in
                                      zip(self.layers, self.similarity[photo])}}


def _photos(model: Model, photo_or_photos, size: int) -> np.ndarray:
    """One photo, a batch, or a list of photos of any sizes, as the network sees them."""
    many = photo_or_photos if isinstance(photo_or_photos, (list, tuple)) \
        else as_images(photo_or_photos)
    return np.stack([model_photo(model, p, size) for p in many])


def _checked(config: RenderConfig | None, settings: dict, power: float) -> RenderConfig:
    config = one_image_each((config or DEFAULT_CONFIG).replace(**settings), "caricature")
    if config.view != "channel":
        raise ConfigError(f"caricature matches a whole layer, not a unit's {config.view}; "
                          "leave view at 'channel'")
    if not (isinstance(power, (int, float)) and math.isfinite(power) and power >= 0):
        raise ConfigError(f"power must be a number of at least 0, not {power!r}")
    return config


def _check_views(renderer: Renderer) -> None:
    """Refuse views that change the image's size: their maps could not be compared with the
    photo's."""
    shape = (renderer.size, renderer.size, renderer.model.input_channels)
    made = jax.eval_shape(renderer.settings.transform, abstract_keys(),
                          jax.ShapeDtypeStruct(shape, jnp.float32)).shape
    if tuple(made) != shape:
        raise ConfigError(f"the transforms make {tuple(made)} views of {shape} images; a "
                          "caricature compares a view's activations with the photo's, so they "
                          "must keep the size (e.g. view_transforms())")


def caricature(model: Model, photo_or_photos, layers: str | Sequence[str], *,
               invert: bool = False, power: float = DEFAULT_POWER,
               config: RenderConfig | None = None, transforms=None,
               **settings) -> Caricature:
    """Caricatures (or, with ``invert``, inversions) of each photo at each of ``layers``,
    all in one batch, from ``config.param``'s random start.

    Args:
        photo_or_photos: an image in [0, 1], a batch, or a list of images of any sizes; each
            one's centred square is resized to ``config.size``.
        layers: a layer or several.
        power: the cosine's power in the caricature's objective.
        config: the render settings (default ``DEFAULT_CONFIG``: 128 steps at 128 px);
            keyword ``settings`` change it; ``chunk`` images render at once (None: all).
        transforms: the random views (default ``view_transforms()``); they must keep the size.
    """
    config = _checked(config, settings, power)
    layers = [model.check_layer(name) for name in ([layers] if isinstance(layers, str)
                                                   else layers)]
    for layer in layers:
        check_size(model, layer, config.size)
    photos = _photos(model, photo_or_photos, config.size)
    renderer = Renderer(model, config, transforms=view_transforms() if transforms is None
                        else transforms)
    _check_views(renderer)
    reads = renderer.optimized_layers(layers)
    targets = model.activations(photos, layers=sorted(set(reads.values())))
    pairs = [(p, layer) for p in range(len(photos)) for layer in layers]
    objectives = [inversion_objective(layer, targets[reads[layer]][p]) if invert
                  else caricature_objective(layer, targets[reads[layer]][p], power)
                  for p, layer in pairs]
    start = time.perf_counter()
    images = render_batches(renderer, objectives, channel_keys(config.seed, range(len(pairs))))
    seconds = time.perf_counter() - start
    final = model.activations(images, layers=sorted(set(reads.values())))
    similarity = np.array([cosine_similarity(final[reads[layer]][i:i + 1],
                                             targets[reads[layer]][p])[0]
                           for i, (p, layer) in enumerate(pairs)])
    shape = (len(photos), len(layers))
    return Caricature(layers, images.reshape(shape + images.shape[1:]), photos,
                      similarity.reshape(shape), invert, float(power), seconds)
