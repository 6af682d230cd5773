"""How a layer's units connect to the rest of the network, measured on photos as activation x
gradient (a first-order Taylor attribution, averaged over the photos):

* ``contributions``: for each unit (channel) of ``layer``, each channel of an ``earlier``
  layer: the sum over positions of that channel's activation times the gradient of the unit's
  channel mean with respect to it, i.e. how much of the unit's mean the earlier channel
  accounts for;
* ``classes``: for each unit and each class logit: the sum over positions of the unit's
  activation times the logit's gradient with respect to it, i.e. how much of the logit the
  unit accounts for. Computed forward (one Jacobian-vector product per unit, for every class
  at once), as the transpose of the backward pass, so that custom-gradient layers work too.

Example:
    >>> from featviz import load_model
    >>> from featviz.photos import sample_photos
    >>> model = load_model("tiny")
    >>> links = unit_links(model, "conv3", [0, 5], sample_photos(), earlier="conv2", size=32)
    >>> links.contributions.shape, links.classes.shape, links.n_images
    ((2, 16), (2, 10), 15)
    >>> [name for name, _ in strongest(links.classes[0], 2, class_labels(model))]
    ['class 8', 'class 1']
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import rectifier_rules
from .attribution import score_layer
from .errors import ClassifierError, DatasetError
from .models.base import Model, per_model
from .photos import batches, padded_batch, prefetch

ANALYSIS_PHOTOS = 256  # photos the links are averaged over (the first ones of a folder)
UNIT_BATCH = 8  # units whose gradients are computed at once (memory: x the photo batch)


class UnitLinks(NamedTuple):
    """Per unit of ``channels`` (rows): ``contributions`` (channels, earlier layer's channels)
    and ``classes`` (channels, classes), each None where not asked for or not available;
    averaged over ``n_images`` photos."""
    channels: list[int]
    contributions: np.ndarray | None
    classes: np.ndarray | None
    n_images: int


def _masked_sum(per_image, n_valid):
    """Sum over the batch axis of the first ``n_valid`` rows (the rest is padding)."""
    valid = jnp.arange(per_image.shape[0]) < n_valid
    return jnp.where(valid.reshape((-1,) + (1,) * (per_image.ndim - 1)), per_image, 0).sum(0)


def _unit_sums(model: Model, first: str, second: str, reduce, unit_term):
    """jit((params, images, n_valid, channels) -> per channel c of ``channels``, the
    per-image ``unit_term(out, back, acts)(c)`` summed over the first n_valid images), where
    ``acts`` is ``first``'s map, ``out`` is ``reduce(second's map)`` and ``back`` its VJP
    with respect to a perturbation added to ``acts`` (through ``rectifier_rules``, so that
    custom-gradient layers work)."""
    def outputs(params, images):
        acts = model.activations(images, params, [first, second])
        return acts[first], acts[second]

    def run(params, images, n_valid, channels):
        shape = jax.eval_shape(outputs, params, images)[0]

        def perturbed(delta):
            acts, out = rectifier_rules.evaluate(outputs, params, images, perturb={0: delta})
            return reduce(out), acts
        out, back, acts = jax.vjp(perturbed, jnp.zeros(shape.shape, shape.dtype), has_aux=True)
        one_unit = unit_term(out, back, acts)
        return jax.lax.map(lambda c: _masked_sum(one_unit(c), n_valid), channels,
                           batch_size=UNIT_BATCH)
    return jax.jit(run)


@per_model
def _contribution_fn(model: Model, earlier: str, layer: str):
    """jit((params, images, n_valid, channels) -> (channels, earlier channels): per unit, the
    earlier channels' activation x gradient of its channel mean, summed over positions and the
    first n_valid images)."""
    n_units = model.channels(layer)

    def unit_term(_, back, acts_before):
        return lambda c: (back(jax.nn.one_hot(c, n_units))[0] * acts_before).sum(axis=(1, 2))
    # images do not mix: the gradient of the batch's sum is each image's own
    return _unit_sums(model, earlier, layer, lambda acts: acts.mean(axis=(1, 2)).sum(0),
                      unit_term)


@per_model
def _class_fn(model: Model, layer: str):
    """jit((params, images, n_valid, channels) -> (channels, classes): per unit, each logit's
    gradient with respect to the unit's map times the map, summed over positions and images).
    One forward-mode product per unit, J @ (map of the unit alone), built as the transpose of
    the backward pass (a custom_vjp layer has no forward-mode rule of its own)."""
    def unit_term(logits, back, acts):
        _, forward = jax.vjp(lambda cotangent: back(cotangent)[0], jnp.zeros_like(logits))
        return lambda c: forward(jnp.where(jnp.arange(acts.shape[-1]) == c, acts, 0))[0]
    return _unit_sums(model, layer, score_layer(model), lambda logits: logits, unit_term)


def has_classes(model: Model) -> bool:
    """Whether the model exposes class scores (a 1-D last layer) to attribute to units."""
    try:
        score_layer(model)
    except ClassifierError:
        return False
    return True


def unit_links(model: Model, layer: str, channels: Sequence[int],
               images: Iterable[tuple[str, np.ndarray]], *, earlier: str | None = None,
               size: int = 224, batch: int = 8, limit: int = ANALYSIS_PHOTOS) -> UnitLinks:
    """The contributions of ``earlier``'s channels (None: none) to each unit of ``channels``
    of ``layer``, and the classes each drives (where the model has class scores), averaged
    over the first ``limit`` of ``images`` (``(name, image)`` pairs, resized to ``size``)."""
    channel_ids = np.asarray(channels, np.int32)
    jobs = {}
    if earlier is not None:
        jobs["contributions"] = _contribution_fn(model, model.spatial_layer(earlier), layer)
    if has_classes(model):
        jobs["classes"] = _class_fn(model, model.spatial_layer(layer))
    if not jobs:  # the first layer shown, of a model without class scores
        return UnitLinks(list(map(int, channels)), None, None, 0)
    sums: dict[str, np.ndarray] = {}
    seen = 0
    for _, pixels in prefetch(batches(itertools.islice(images, limit), size, batch)):
        padded = padded_batch(pixels, batch)
        for name, fn in jobs.items():
            part = np.asarray(fn(model.params, padded, len(pixels), channel_ids), np.float64)
            sums[name] = sums.get(name, 0) + part
        seen += len(pixels)
    if not seen:
        raise DatasetError("no readable images to measure the units' links on")
    mean = {name: (total / seen).astype(np.float32) for name, total in sums.items()}
    return UnitLinks(list(map(int, channels)), mean.get("contributions"), mean.get("classes"),
                     seen)


def class_labels(model: Model) -> list[str]:
    """The model's class names, or "class i" where it has none.

    >>> from featviz import load_model
    >>> class_labels(load_model("tiny"))[:2]
    ['class 0', 'class 1']
    """
    n = model.layer_shape(score_layer(model))[0]
    names = model.class_names
    return [str(names[i]) if names is not None and i < len(names) else f"class {i}"
            for i in range(n)]


def strongest(values, k: int, labels: Sequence | None = None) -> list[tuple]:
    """The ``k`` largest of ``values`` as ``(index or label, value)``, largest first.

    >>> strongest([0.1, 0.5, -2.0], 2), strongest([0.1, 0.5], 1, ["a", "b"])
    ([(1, 0.5), (0, 0.1)], [('b', 0.5)])
    """
    values = np.asarray(values, np.float64)
    order = np.argsort(-values, kind="stable")[:k]
    return [(int(i) if labels is None else labels[i], round(float(values[i]), 6))
            for i in order]
