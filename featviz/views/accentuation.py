"""Feature accentuation (Hamblin, Fel, Saha, Konkle and Alvarez, 2024): a photo changed so
that a unit responds more, while it stays close to the photo in an earlier layer's space.

The ascent starts from the photo itself (its coefficients in featviz's Fourier basis,
``photo_param``), maximizes the unit's objective on random views of the image (Lucid's
transforms), and subtracts ``penalty`` times the relative L2 distance between the image's and
the photo's activations at ``penalty_layer``, read on the image as it is (untransformed, so
that the two maps line up pixel for pixel), times the RMS of the photo's activations at the
unit's layer (so that one weight suits layers of any scale). All channels render in one batch.

The distance reported is that relative L2 distance at ``penalty_layer``,
``|f(image) - f(photo)| / |f(photo)|``, and the pixels' RMS difference (values in [0, 1]).

Example:
    >>> import numpy as np
    >>> from featviz import load_model
    >>> photo = np.random.default_rng(0).uniform(size=(32, 32, 3)).astype(np.float32)
    >>> result = accentuate(load_model("tiny"), photo, "conv2", [0, 1], steps=4, size=32)
    >>> result.images.shape, result.penalty_layer
    ((2, 32, 32, 3), 'conv1')
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from .. import objectives as obj
from ..channels import check_channels, check_size
from ..config import RenderConfig
from ..engine import Renderer, channel_keys
from ..errors import ConfigError
from ..image import one_image
from ..models.base import Model, per_model
from ..photos import square_resize
from .photo_param import photo_parameterization

# what ``accentuate`` renders with by default (benchmarks/bench_accentuation.py)
DEFAULT_CONFIG = RenderConfig(steps=64, lr=0.02)
DEFAULT_PENALTY = 3.0  # weight of the distance, in units of the layer's RMS on the photo
_TINY = 1e-12  # keeps the distance's gradient finite where the image is the photo


@dataclass(frozen=True)
class Accentuation:
    """Accentuated images of one photo, one per channel, with what they did.

    Args:
        layer, channels: the units accentuated.
        penalty_layer: where the distance to the photo is measured and penalized.
        images: (N, H, W, C) in [0, 1].
        photo: (H, W, C), the photo as the network saw it (cropped, resized).
        before: (N,) each unit's objective on the photo (for ``view="channel"``, the
            channel's mean activation); after: the same on its accentuated image.
        distance: (N,) relative L2 distance at ``penalty_layer`` to the photo's activations.
        pixel_rmse: (N,) RMS difference of the pixels from the photo's.
        seconds: the render's wall time, compilation included.
    """

    layer: str
    channels: list[int]
    penalty_layer: str
    images: np.ndarray
    photo: np.ndarray
    before: np.ndarray
    after: np.ndarray
    distance: np.ndarray
    pixel_rmse: np.ndarray
    seconds: float

    def record(self) -> dict:
        """What the command writes as JSON: per channel, the objective before and after, the
        distance and the pixels' RMS difference."""
        return {"layer": self.layer, "penalty_layer": self.penalty_layer,
                "distance_measure": "|f(image) - f(photo)| / |f(photo)| at penalty_layer",
                "seconds": round(self.seconds, 3),
                "channels": {str(c): {"before": float(b), "after": float(a),
                                      "distance": float(d), "pixel_rmse": float(p)}
                             for c, b, a, d, p in zip(self.channels, self.before, self.after,
                                                      self.distance, self.pixel_rmse)}}


def model_photo(model: Model, photo, size: int) -> np.ndarray:
    """``photo`` (any array ``featviz.image.as_images`` takes) as the network sees it: its
    centred square at ``size`` px, grey (H, W, 1) for a network that takes grey images."""
    image = square_resize(one_image(photo)[0], size)
    return np.asarray(model.as_input(image), np.float32)


def default_penalty_layer(model: Model, layer: str) -> str:
    """The spatial layer halfway to ``layer`` (among the spatial layers before it; ``layer``
    itself if none comes before): for EfficientNet-Lite0's ``blocks_8``, ``blocks_3``."""
    model.check_layer(layer)
    owner = next((k for k, pre in model.pre_activations.items() if pre == layer), layer)
    spatial = model.spatial_layers()
    before = [name for name in model.layers[:model.layers.index(owner)] if name in spatial]
    return before[len(before) // 2] if before else layer


@per_model
def _distance_fn(model: Model, layer: str):
    """The objective function of ``feature_distance(model, layer, ...)``: one per model and
    layer, so that every batch that uses it shares one compiled program."""
    def distance(target, acts, image, static):
        x = model.preprocess(model.as_input(image[None]))
        a = model.apply(model.params, x, (layer,))[layer][0].astype(jnp.float32)
        return (jnp.sqrt(jnp.sum((a - target) ** 2) + _TINY)
                / jnp.sqrt(jnp.sum(target ** 2) + _TINY))
    return distance


def feature_distance(model: Model, layer: str, target) -> obj.Objective:
    """An objective (a positive penalty: subtract it): the relative L2 distance between the
    image's activations at ``layer`` and ``target`` (a photo's, ``model.layer_shape(layer,
    size)``). It runs the network up to ``layer`` on the image as it is, not on the random
    view the other objectives see, so that the two maps line up."""
    return obj.Objective(_distance_fn(model, layer), np.asarray(target, np.float32),
                         ("feature_distance", layer))


def relative_distance(acts, target) -> np.ndarray:
    """``|a - target| / |target|`` for each of a batch of activations ``acts``."""
    acts, target = np.asarray(acts, np.float64), np.asarray(target, np.float64)
    axes = tuple(range(1, acts.ndim))
    return np.sqrt(((acts - target) ** 2).sum(axes) / (target ** 2).sum())


def render_batches(renderer: Renderer, objectives: list, keys) -> np.ndarray:
    """The images of ``objectives``: one batch, or batches of ``renderer.config.chunk``."""
    chunk = renderer.config.chunk or len(objectives)
    return np.concatenate([renderer(objectives[i:i + chunk], keys[i:i + chunk]).images
                           for i in range(0, len(objectives), chunk)])


def one_image_each(config: RenderConfig, view: str) -> RenderConfig:
    """``config``, unless it asks for several images per objective (``diverse``), which the
    photo views (``view`` names one in the message) do not make."""
    if config.diverse != 1:
        raise ConfigError(f"{view} makes one image per objective; use diverse=1, and another "
                          "seed for another image")
    return config


def _checked_config(config: RenderConfig | None, settings: dict) -> RenderConfig:
    config = (config or DEFAULT_CONFIG).replace(**settings)
    if config.param != "fourier":
        raise ConfigError(f"accentuation starts from the photo in the Fourier basis; "
                          f"param={config.param!r} cannot hold a photo: use param='fourier'")
    return one_image_each(config, "accentuation")


def accentuate(model: Model, photo, layer: str, channels: Sequence[int], *,
               config: RenderConfig | None = None, penalty_layer: str | None = None,
               penalty: float = DEFAULT_PENALTY, perturbation: float = 0.0, transforms=None,
               **settings) -> Accentuation:
    """Accentuate each of ``channels`` of ``layer`` in ``photo``, all in one batch.

    Args:
        photo: an image in [0, 1] (any shape ``featviz.image.as_images`` takes); its centred
            square is resized to ``config.size``.
        config: the render settings (default ``DEFAULT_CONFIG``: 64 steps at 128 px, Adam at
            0.02); keyword
            ``settings`` change it. ``view`` picks each unit's objective, ``chunk`` how many
            images render at once (None: all).
        penalty_layer: where the image is kept close to the photo (default:
            ``default_penalty_layer``).
        penalty: the distance's weight, in units of the RMS of the photo's activations at
            ``layer``; 0 lets the image go where the objective takes it.
        perturbation: noise added to the photo's coefficients at the start, drawn from each
            image's key (0: every image starts at the photo; the keys still vary the views).
        transforms: the random views (default: Lucid's).
    """
    config = _checked_config(config, settings)
    check_channels(channels, model.channels(model.check_layer(layer)), layer)
    check_size(model, layer, config.size)
    penalty_layer = model.check_layer(penalty_layer or default_penalty_layer(model, layer))
    seen = model_photo(model, photo, config.size)
    photo_acts = model.activations(seen[None], layers=sorted({layer, penalty_layer}))
    weight = penalty * float(np.sqrt(np.mean(np.square(photo_acts[layer]))))
    distance = feature_distance(model, penalty_layer, photo_acts[penalty_layer][0])
    renderer = Renderer(model, config, param=photo_parameterization(seen, perturbation),
                        transforms=transforms)
    units = [obj.unit(layer, c, config.view) for c in channels]
    start = time.perf_counter()
    images = render_batches(renderer, [u - weight * distance for u in units],
                            channel_keys(config.seed, channels))
    seconds = time.perf_counter() - start
    stacked = obj.stack(units)
    before = renderer.final_values(stacked, np.repeat(seen[None], len(units), axis=0))[0]
    after = renderer.final_values(stacked, images)[0]
    final_acts = model.activations(images, layers=[penalty_layer])[penalty_layer]
    return Accentuation(layer, list(channels), penalty_layer, images, seen, before, after,
                        relative_distance(final_acts, photo_acts[penalty_layer][0]),
                        np.sqrt(np.mean((images - seen) ** 2, axis=(1, 2, 3))), seconds)
