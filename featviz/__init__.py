"""featviz: see what every filter of a convolutional network responds to (JAX/Flax).

Example:
    >>> import featviz
    >>> model = featviz.load_model()
    >>> "blocks_8" in model.layers
    True
"""
__version__ = "0.1.0"

from . import cache, objectives, param, transforms
from .models import Model, from_keras, from_linen, from_nnx, load_model
from .render import Renderer, RenderResult, channel_keys, render

cache.enable_persistent_cache()

__all__ = ["Model", "Renderer", "RenderResult", "channel_keys", "from_keras", "from_linen",
           "from_nnx", "load_model", "objectives", "param", "render", "transforms"]
