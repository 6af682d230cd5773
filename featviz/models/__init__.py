"""Model zoo: names -> loaders. Every loader returns a ``featviz.models.base.Model``.

Example:
    >>> model = load_model("efficientnet-lite0")
    >>> model.channels("head")
    1280
"""
from __future__ import annotations

import dataclasses

from .base import Model, UnknownLayerError, UnknownModelError, from_linen, from_nnx
from .efficientnet_lite import load_efficientnet_lite
from .keras import KerasWeightsError, from_keras, keras_application
from .tiny import load_tiny
from .torch_weights import WeightsFileError

ZOO = {"efficientnet-lite0": load_efficientnet_lite, "tiny": load_tiny}
DEFAULT_MODEL = "efficientnet-lite0"


def load_model(name: str = DEFAULT_MODEL, weights: str | None = None) -> Model:
    """Load a zoo model; ``weights`` is another copy of its weights file."""
    if name not in ZOO:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(ZOO)}")
    return dataclasses.replace(ZOO[name](weights), program_id=f"zoo:{name}")


__all__ = ["Model", "from_keras", "from_linen", "from_nnx", "keras_application", "load_model",
           "KerasWeightsError", "UnknownLayerError", "UnknownModelError", "WeightsFileError",
           "ZOO"]
