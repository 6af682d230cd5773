"""featviz: see what every filter of a convolutional network responds to (JAX/Flax).

The names below are imported on first use, so ``import featviz`` (and ``featviz --help``) does
not load JAX until something needs it.

Example:
    >>> import featviz
    >>> model = featviz.load_model()
    >>> "blocks_8" in model.layers
    True
"""
import importlib

from . import cache

__version__ = "0.1.0"

_EXPORTS = {
    "Model": "models", "from_keras": "models", "from_linen": "models", "from_nnx": "models",
    "load_model": "models",
    "Renderer": "engine", "RenderResult": "engine", "channel_keys": "engine", "render": "engine",
    "RenderConfig": "config", "FeatvizError": "errors",
}
_SUBMODULES = ("objectives", "param", "transforms")

cache.enable_persistent_cache()


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'featviz' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


# the lazy exports' names, from the one table above (pyright cannot evaluate this __all__)
__all__ = sorted(set(_EXPORTS) | set(_SUBMODULES))  # pyright: ignore[reportUnsupportedDunderAll]
