"""What featviz asks of Keras beyond its public API: Keras on the JAX backend
(``_import_keras``) and the one patch to Keras's private code (``numpy_initializers``).

Keras is optional: ``pip install "featviz[keras]"``. It must run on JAX: featviz sets
``KERAS_BACKEND=jax`` when keras has not been imported yet and the variable is unset;
otherwise set ``KERAS_BACKEND=jax`` before keras is first imported.

Example:
    >>> _import_keras().backend.backend()
    'jax'
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

import numpy as np

from ..errors import KerasUnavailableError


def _import_keras():
    """keras, on the JAX backend, or a one-line error saying what to do."""
    if "keras" not in sys.modules:
        if importlib.util.find_spec("keras") is None:
            raise KerasUnavailableError('Keras is not installed: pip install "featviz[keras]"')
        os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    if keras.backend.backend() != "jax":
        raise KerasUnavailableError(
            f"Keras runs on its {keras.backend.backend()!r} backend; featviz needs JAX: set "
            "KERAS_BACKEND=jax before keras is first imported")
    return keras


@contextlib.contextmanager
def numpy_initializers(rng: np.random.Generator | None = None):
    """While Keras builds a network in this context, its random initializers draw from
    ``rng`` (numpy; None: they give zeros) instead of ``jax.random``, which compiles one XLA
    program per weight shape: seconds for a ResNet50 on a CPU, spent on values that a weights
    file replaces at once. Constant initializers (BatchNorm's ones and zeros) are unchanged.

    Example:
        >>> keras = _import_keras()
        >>> with numpy_initializers(np.random.default_rng(0)):
        ...     layer = keras.layers.Dense(3)
        ...     layer.build((None, 2))
        >>> layer.kernel.shape
        (2, 3)
    """
    # Why a patch to private code: Keras's random initializers call the JAX backend's
    # ``uniform``/``normal``/``truncated_normal`` (``keras.src.backend.jax.random``) and offer
    # no public hook to draw their values elsewhere. The module's functions are swapped for
    # numpy ones while the context lasts and restored after it, even on an error.
    from keras.src.backend.jax import random as backend_random

    def cast(values, dtype):
        return values.astype(dtype or "float32")

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return cast(np.zeros(shape) if rng is None else rng.uniform(minval, maxval, shape), dtype)

    def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return cast(np.zeros(shape) if rng is None else rng.normal(mean, stddev, shape), dtype)

    def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        if rng is None:
            return cast(np.zeros(shape), dtype)
        z = rng.normal(0.0, 1.0, shape)
        while (out := np.abs(z) > 2).any():  # redrawn beyond two standard deviations, as Keras
            z[out] = rng.normal(0.0, 1.0, out.sum())
        return cast(z * stddev + mean, dtype)

    replaced = {"uniform": uniform, "normal": normal, "truncated_normal": truncated_normal}
    saved = {name: getattr(backend_random, name, None) for name in replaced}
    if None in saved.values():  # another Keras: its own initializers, slower but the same
        yield
        return
    for name, fn in replaced.items():
        setattr(backend_random, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(backend_random, name, fn)
