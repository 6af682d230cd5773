"""One family of user-facing errors: every mistake a user can make (a name, a number, a file,
a job too large) raises a subclass of ``FeatvizError``, whose message is one line saying what
was wrong and what to do. The command line prints that line and exits with status 2; anything
else is a bug and keeps its traceback.

Messages speak of the library's arguments (``size=``, ``chunk_size=``); the command line
names its own flags instead (``featviz.cli``). Nothing here imports JAX.

Example:
    >>> issubclass(UnknownLayerError, FeatvizError) and issubclass(UnknownLayerError, ValueError)
    True
    >>> str(ConfigError("steps must be from 1 to 1000000, not 0"))
    'steps must be from 1 to 1000000, not 0'
"""
from __future__ import annotations


class FeatvizError(ValueError):
    """A user mistake featviz can explain in one line."""


class ConfigError(FeatvizError):
    """A render setting outside what it may be (``featviz.config.RenderConfig``)."""


class UsageError(FeatvizError):
    """A bad command-line value."""


class UnknownModelError(FeatvizError):
    """A model name featviz does not know."""


class UnknownApplicationError(UnknownModelError):
    """A name that is not one of the ``keras.applications`` networks featviz knows."""


class UnknownLayerError(FeatvizError):
    """A layer name the model does not expose."""


class NoSpatialMapError(UnknownLayerError):
    """A layer without an (h, w, C) map where a view needs one."""


class ChannelRangeError(FeatvizError):
    """Channel indices outside a layer's range, or a malformed channel list."""


class SizeError(FeatvizError):
    """An image size too small for the chosen layer."""


class ObjectiveIndexError(FeatvizError, IndexError):
    """An objective's channel, class or position outside its layer."""


class ClassIndexError(FeatvizError):
    """A class id the model does not have."""


class ClassifierError(FeatvizError):
    """CAM asked of a layer or model it does not apply to."""


class ChunkTooLargeError(FeatvizError):
    """A batch of images that would not fit in device memory; ``fits`` is a size that does."""

    def __init__(self, message: str, fits: int):
        super().__init__(message)
        self.fits = fits


class ImageReadError(FeatvizError):
    """A file that is missing, is not an image, or must not be decoded (too many pixels)."""


class ImageValueError(FeatvizError):
    """Images that are not pictures featviz can read: wrong shape or values outside [0, 1]."""


class DatasetError(FeatvizError):
    """A missing or empty image folder."""


class WeightsFileError(FeatvizError):
    """The file is not a readable, untampered weights file for the model."""


class MissingWeightsError(WeightsFileError):
    """The package that ships a model's weights is not installed."""


class KerasWeightsError(WeightsFileError):
    """A Keras application's weights file is missing or does not fit the network."""


class KerasUnavailableError(FeatvizError, ImportError):
    """Keras is not installed, or runs on a backend other than JAX."""


class KerasModelError(FeatvizError):
    """A Keras model that featviz cannot adapt (no named layer outputs, not one image input)."""


class ModelSourceError(FeatvizError):
    """A model file or factory (``module:function``) that gives no model: missing, unreadable,
    not importable, or returning something that is not a model."""


class MissingExtraError(FeatvizError, ImportError):
    """A view that needs an optional dependency which is not installed (the message names the
    ``pip install`` that adds it)."""
