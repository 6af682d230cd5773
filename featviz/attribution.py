"""Which pixels a prediction or a unit depends on: gradients, SmoothGrad, gradient x input,
Grad-CAM, CAM, deconvnet and guided-backprop projections, and heatmap overlays.

Images are float (N, H, W, 3) in [0, 1]. The class scored is the model's last 1-D layer
(logits), by default each image's top predicted class. Functions are jit-compiled once per
model and setting.

Example:
    >>> import jax, numpy as np
    >>> from featviz import load_model
    >>> model = load_model()
    >>> images = np.asarray(jax.random.uniform(jax.random.key(0), (1, 64, 64, 3)))
    >>> heat = gradcam(model, images, "blocks_8")
    >>> saliency(model, images).shape, heat.shape, overlay(images[0], heat[0]).dtype
    ((1, 64, 64), (1, 64, 64), dtype('uint8'))
    >>> project(model, images[0], "blocks_3", 7, method="guided").shape
    (64, 64, 3)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from PIL import Image

from . import draws, rectifier_rules
from .activations import layer_fn
from .config import PROJECTIONS
from .errors import ChannelRangeError, ClassifierError, ClassIndexError, NoSpatialMapError
from .image import as_images, one_image, to_uint8
from .models.base import Model, per_model


def score_layer(model: Model) -> str:
    """The model's last layer without a spatial map (the class logits)."""
    shapes = model.layer_shapes(model.image_size)
    flat = [name for name in model.layers if len(shapes[name]) == 1]
    if not flat:
        raise ClassifierError(f"model {model.name} exposes no 1-D layer to take class scores "
                              "from; expose its logits (see the README, 'Your network')")
    return flat[-1]


def last_spatial_layer(model: Model) -> str:
    """The model's last layer with an (h, w, C) map: Grad-CAM's and CAM's default."""
    spatial = model.spatial_layers()
    if not spatial:
        raise NoSpatialMapError(f"model {model.name} exposes no layer with a spatial map (a "
                                "convolution's output), which Grad-CAM and CAM read")
    return spatial[-1]


def _classes(model: Model, class_idx, n: int) -> np.ndarray:
    """Class ids as an (n,) int array, -1 meaning "the top predicted class"."""
    if class_idx is None:
        return np.full(n, -1, np.int32)
    ids = np.broadcast_to(np.asarray(class_idx, np.int32), (n,))
    n_classes = model.layer_shapes(model.image_size)[score_layer(model)][0]
    bad = ids[(ids < 0) | (ids >= n_classes)]
    if bad.size:
        raise ClassIndexError(f"class {bad[0]} is out of range; this model has classes "
                              f"0-{n_classes - 1}")
    return ids


def _pick(logits, classes):
    """Each row's logit for its class (-1: the argmax), and the classes used."""
    classes = jnp.where(classes < 0, jnp.argmax(logits, axis=-1), classes)
    return jnp.take_along_axis(logits, classes[:, None], axis=1)[:, 0], classes


@per_model
def _input_grad_fn(model: Model):
    """jit((params, images, classes) -> d class score / d images), one score per image."""
    def total_score(params, images, classes):
        layer = score_layer(model)
        return _pick(model.activations(images, params, [layer])[layer], classes)[0].sum()
    return jax.jit(jax.grad(total_score, argnums=1))


def input_gradients(model: Model, images, class_idx=None) -> np.ndarray:
    """Gradient of each image's class score with respect to its pixels, (N, H, W, 3)."""
    images = as_images(images)
    return _gradients(model, images, _classes(model, class_idx, len(images)))


def _gradients(model: Model, images, classes) -> np.ndarray:
    return np.asarray(_input_grad_fn(model)(model.params, images, classes))


def saliency(model: Model, images, class_idx=None) -> np.ndarray:
    """Vanilla gradient saliency (Simonyan et al., 2014): max over color of |gradient|,
    (N, H, W)."""
    return np.abs(input_gradients(model, images, class_idx)).max(axis=-1)


def smoothgrad(model: Model, images, key, class_idx=None, n: int = 16,
               sigma: float = 0.15) -> np.ndarray:
    """SmoothGrad (Smilkov et al., 2017): the gradient averaged over ``n`` noisy copies
    (Gaussian, std ``sigma`` times each image's value range), then max over color of |.|.

    The class is fixed from the clean image, so that every noisy copy scores the same class.
    """
    images = as_images(images)
    classes = predict(model, images) if class_idx is None else _classes(model, class_idx,
                                                                          len(images))
    spread = sigma * (images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3)))
    noise = draws.normal(key, (n,) + images.shape) * spread[None, :, None, None, None]
    noisy = (images[None] + np.asarray(noise)).reshape((-1,) + images.shape[1:])
    grads = _gradients(model, noisy, np.tile(classes, n)).reshape((n,) + images.shape)
    return np.abs(grads.mean(axis=0)).max(axis=-1)


def grad_x_input(model: Model, images, class_idx=None) -> np.ndarray:
    """|sum over color of gradient x input| (Shrikumar et al., 2016), (N, H, W); the
    reference input is black."""
    images = as_images(images)
    return np.abs((input_gradients(model, images, class_idx) * images).sum(axis=-1))


def predict(model: Model, images) -> np.ndarray:
    """Top predicted class of each image, (N,)."""
    logits = layer_fn(model, score_layer(model))(model.params, as_images(images))
    return np.asarray(jnp.argmax(logits, axis=-1), np.int32)


@per_model
def _layer_and_grad_fn(model: Model, layer: str):
    """jit((params, images, classes) -> (activations of layer, d score / d activations,
    classes))."""
    def outputs(params, images):
        acts = model.activations(images, params)
        return acts[layer], acts[score_layer(model)]

    def score(delta, params, images, classes):
        acts, logits = rectifier_rules.evaluate(outputs, params, images, perturb={0: delta})
        picked, used = _pick(logits, classes)
        return picked.sum(), (acts, used)

    def run(params, images, classes):
        zeros = jnp.zeros(jax.eval_shape(outputs, params, images)[0].shape)
        grads, (acts, used) = jax.grad(score, has_aux=True)(zeros, params, images, classes)
        return acts, grads, used
    return jax.jit(run)


def _upsample(maps, size) -> np.ndarray:
    maps = jnp.asarray(maps)
    return np.asarray(jax.image.resize(maps, maps.shape[:1] + tuple(size), "bilinear"))


def gradcam(model: Model, images, layer: str | None = None, class_idx=None) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017), (N, H, W): ReLU of the layer's channels weighted by
    their spatially averaged score gradients, upsampled bilinearly to the image size.
    ``layer`` defaults to the last layer with a spatial map."""
    images = as_images(images)
    layer = model.spatial_layer(layer or last_spatial_layer(model))
    classes = _classes(model, class_idx, len(images))
    acts, grads, _ = _layer_and_grad_fn(model, layer)(model.params, images, classes)
    weights = grads.mean(axis=(1, 2), keepdims=True)
    return _upsample(jax.nn.relu((acts * weights).sum(-1)), images.shape[1:3])


def cam(model: Model, images, class_idx=None, layer: str | None = None,
        fc_kernel=None) -> np.ndarray:
    """CAM (Zhou et al., 2016), (N, H, W), for networks whose last spatial layer feeds global
    average pooling and then one Dense layer: ReLU of the class's kernel-weighted channel sum,
    upsampled. The kernel is found from the model (``classifier_weights``); ``fc_kernel``
    (C, classes) gives it instead."""
    images = as_images(images)
    last = last_spatial_layer(model)
    if model.spatial_layer(layer or last) != last:
        raise ClassifierError(f"CAM reads the layer that feeds the classifier ({last}), not "
                              f"{layer}; use Grad-CAM for other layers")
    classes = _classes(model, class_idx, len(images))
    acts, grads, used = _layer_and_grad_fn(model, last)(model.params, images, classes)
    if fc_kernel is None:
        weights = classifier_weights(model, last, images, grads, used)
    else:
        weights = jnp.asarray(fc_kernel).T[np.asarray(used)]
    return _upsample(jax.nn.relu(jnp.einsum("nhwc,nc->nhw", acts, weights)), images.shape[1:3])


def classifier_weights(model: Model, layer: str, images, grads, classes) -> np.ndarray:
    """The Dense kernel's columns (N, C) for ``classes``, found from ``grads``, the class
    scores' gradients at ``layer`` (the last spatial one) for ``images``: behind global
    average pooling and one Dense layer they are the same at every position and for every
    input (column / (h * w)). ``ClassifierError`` where they are not (no such classifier)."""
    grads = np.asarray(grads)
    pooled = grads.mean(axis=(1, 2), keepdims=True)
    grey = np.full_like(np.asarray(images, np.float32), 0.5)
    _, grey_grads, _ = _layer_and_grad_fn(model, layer)(model.params, grey, np.asarray(classes))
    tolerance = 1e-4 * (np.abs(pooled).max() + 1e-12)
    if (np.abs(grads - pooled).max() > tolerance
            or np.abs(np.asarray(grey_grads) - grads).max() > tolerance):
        raise ClassifierError(f"model {model.name} has no global-average-pool and Dense "
                              f"classifier after {layer} (its class scores are not a linear "
                              "function of that layer's mean), so CAM does not apply; use Grad-CAM")
    return pooled[:, 0, 0, :] * grads.shape[1] * grads.shape[2]




ALL_CHANNELS = -1


@per_model
def projection_fn(model: Model, layer: str, rule: str):
    """jit((images, params, weights) -> the gradient of ``sum(activations of layer * weights)``
    with respect to the images, rectifiers back-propagating by ``rule`` (see
    ``featviz.rectifier_rules``)). ``weights`` has the layer's shape, (N, h, w, C): the one
    projection kernel behind ``project``, top-patch projections and receptive fields."""
    def weighted(params, images, weights):
        return (model.activations(images, params, [layer])[layer] * weights).sum()

    def total(images, params, weights):
        return rectifier_rules.evaluate(weighted, params, images, weights, rule=rule)
    return jax.jit(jax.grad(total))


def unit_weights(shape, channels, ys, xs) -> np.ndarray:
    """``projection_fn`` weights of a layer map ``shape`` (h, w, C) picking, for image i, unit
    (ys[i], xs[i]) of channel channels[i] (of every channel where it is ``ALL_CHANNELS``)."""
    weights = np.zeros((len(channels),) + tuple(shape), np.float32)
    for i, (c, y, x) in enumerate(zip(channels, ys, xs)):
        weights[i, y, x, slice(None) if c == ALL_CHANNELS else c] = 1.0
    return weights


def project(model: Model, image, layer: str, channel: int, method: str = "deconvnet",
            reduce: str = "max") -> np.ndarray:
    """Project one channel of ``layer`` back to pixel space, (H, W, 3).

    The gradient of the channel's strongest unit (``reduce="max"``, Zeiler & Fergus's choice:
    every other unit set to zero) or of its mean (``reduce="mean"``) with respect to the
    image, with rectifiers back-propagating by the deconvnet or guided-backprop rule (see
    ``featviz.rectifier_rules``). Display it with ``gradient_image``.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"unknown method {method!r}; use one of {PROJECTIONS}")
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce must be 'max' or 'mean', not {reduce!r}")
    n_channels = model.channels(model.spatial_layer(layer))
    if not 0 <= channel < n_channels:
        raise ChannelRangeError(f"channel {channel} is out of range; layer {layer} has channels "
                                f"0-{n_channels - 1}")
    images = one_image(image)
    fmap = np.asarray(model.activations(images, layers=[layer])[layer])[0, ..., channel]
    if reduce == "max":
        y, x = np.unravel_index(np.argmax(fmap), fmap.shape)
        weights = unit_weights(fmap.shape + (n_channels,), [channel], [y], [x])
    else:
        weights = np.zeros((1,) + fmap.shape + (n_channels,), np.float32)
        weights[..., channel] = 1.0 / fmap.size
    return np.asarray(projection_fn(model, layer, method)(images, model.params, weights))[0]


def gradient_image(grad, percentile: float = 99.5) -> np.ndarray:
    """A signed (H, W, 3) gradient as a uint8 image: zero is grey, the ``percentile`` of |g| is
    full contrast."""
    grad = np.asarray(grad, np.float32)
    scale = np.percentile(np.abs(grad), percentile) or 1.0
    return to_uint8(0.5 + 0.5 * grad / scale)


def colorize(heatmap, cmap: str = "inferno", percentile: float = 99.5) -> np.ndarray:
    """A non-negative (H, W) map as a uint8 color image, scaled so its ``percentile`` is the top."""
    heatmap = np.asarray(heatmap, np.float32)
    scale = np.percentile(heatmap, percentile) or heatmap.max() or 1.0
    return to_uint8(matplotlib.colormaps[cmap](np.clip(heatmap / scale, 0, 1))[..., :3])


def overlay(image, heatmap, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a non-negative heatmap (any size; resized bilinearly, scaled to its maximum) over
    an (H, W, 3) image in [0, 1]; returns uint8 (H, W, 3)."""
    image = np.asarray(image, np.float32)
    heat = Image.fromarray(np.asarray(heatmap, np.float32)).resize(image.shape[1::-1],
                                                                  Image.Resampling.BILINEAR)
    heat = np.asarray(heat)
    heat = heat / (heat.max() or 1.0)
    colored = matplotlib.colormaps[cmap](heat)[..., :3]
    return to_uint8((1 - alpha) * image + alpha * colored)
