"""Model zoo: names -> loaders. Every loader returns a ``featviz.models.base.Model``.

Example:
    >>> model = load_model("efficientnet-lite0")
    >>> model.channels("head")
    1280
"""
from __future__ import annotations

import dataclasses
from functools import partial

from .base import Model, UnknownLayerError, from_linen, from_nnx
from .efficientnet_lite import VARIANTS, load_efficientnet_lite
from .tiny import load_tiny
from .torch_weights import MissingWeightsError, WeightsFileError

ZOO = {**{name: partial(load_efficientnet_lite, name=name) for name in VARIANTS}, "tiny": load_tiny}
DEFAULT_MODEL = "efficientnet-lite0"


class UnknownModelError(ValueError):
    """A model name not in the zoo."""


def load_model(name: str = DEFAULT_MODEL, weights: str | None = None) -> Model:
    """Load a zoo model; ``weights`` is another copy of its weights file."""
    if name not in ZOO:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(ZOO)}")
    return dataclasses.replace(ZOO[name](weights), program_id=f"zoo:{name}")


__all__ = ["MissingWeightsError", "Model", "from_linen", "from_nnx", "load_model",
           "UnknownLayerError", "UnknownModelError", "WeightsFileError", "ZOO"]
