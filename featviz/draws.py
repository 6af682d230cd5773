"""Cheap counter-based random draws inside compiled programs.

A render program draws its starting image and, at every step, a handful of numbers per image.
Each threefry call (``jax.random``'s ``normal``, ``uniform``, ``split``, ``fold_in``) is a long
unrolled program: on XLA:CPU, one vmapped ``jax.random.normal`` for a batch's starting spectra
costs about 2 s of compile time. These hash the key's bits with a counter instead (murmur3's
finalizer: a few integer multiplies). Each is a pure function of the key and counter, so the
same seed gives the same images, whatever the batch.

Example:
    >>> import jax
    >>> key = derive_key(jax.random.key(0), 3)
    >>> u = uniform(key, (2, 4))
    >>> u.shape, bool(((u >= 0) & (u < 1)).all())
    ((2, 4), True)
    >>> normal(key, (3,)).dtype
    dtype('float32')
    >>> bool((jax.random.key_data(seeded_keys(0, [4, 5])[1])
    ...       == jax.random.key_data(seeded_keys(0, [5]))[0]).all())
    True
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

_GOLDEN = np.uint32(0x9E3779B9)


def _mix(x):
    x = x ^ (x >> 16)
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def derive_key(key, i) -> jax.Array:
    """A key for counter ``i`` (an int, possibly traced) derived from ``key``: what
    ``jax.random.fold_in`` does, without a threefry call."""
    data = jax.random.key_data(key)
    words = jnp.arange(data.shape[-1], dtype=jnp.uint32)
    salt = _mix(jnp.asarray(i, jnp.uint32) * _GOLDEN + words * np.uint32(0x632BE5AB))
    return jax.random.wrap_key_data(_mix(data ^ salt), impl=jax.random.key_impl(key))


def abstract_keys(shape: tuple = ()) -> jax.ShapeDtypeStruct:
    """The shape and dtype of PRNG keys, for ``jax.eval_shape``: no key is made (making one
    runs a threefry program)."""
    return jax.ShapeDtypeStruct(shape, jax.eval_shape(lambda: jax.random.key(0)).dtype)


def seeded_keys(seed: int, indices) -> jax.Array:
    """One key per index from ``seed`` (the key of index ``i`` depends only on the seed and
    ``i``), hashed on the host: no program to compile."""
    if not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2 ** 32):
        raise ValueError(f"seed must be a whole number from 0 to {2 ** 32 - 1}, not {seed!r}")
    index = np.asarray(indices, np.uint32).reshape(-1)
    base = _mix(np.full(index.shape, seed, np.uint32) * _GOLDEN + np.uint32(0x632BE5AB))
    first = _mix(base ^ _mix(index * _GOLDEN + np.uint32(1)))
    data = np.stack([first, _mix(first ^ (base + _GOLDEN))], axis=-1)
    # jax annotates key_bits_array as jax.Array, but takes any array (it is converted)
    return jax.random.wrap_key_data(data, impl="threefry2x32")  # pyright: ignore[reportArgumentType]


def _bits(key, shape) -> jax.Array:
    """Random 32-bit words of ``shape`` (an int or a tuple) from ``key``."""
    data = jax.random.key_data(key)
    seed = data[0]
    for word in range(1, data.shape[-1]):
        seed = _mix(seed ^ (data[word] + _GOLDEN))
    n = int(np.prod(shape))
    counters = jnp.arange(1, n + 1, dtype=jnp.uint32).reshape(shape)
    return _mix(seed ^ _mix(counters * _GOLDEN))


@partial(jax.jit, static_argnums=1)  # one small program when called outside another
def uniform(key, shape) -> jax.Array:
    """Uniform floats in [0, 1) of ``shape`` (an int or a tuple), 24 random bits each."""
    return (_bits(key, shape) >> 8).astype(jnp.float32) * np.float32(2.0 ** -24)


@partial(jax.jit, static_argnums=1)
def normal(key, shape) -> jax.Array:
    """Standard normal floats of ``shape``: the inverse normal CDF of uniform draws (23 bits,
    centred in their bins, so never 0 or 1 in float32; the tails end at about 5.2 standard
    deviations)."""
    u = ((_bits(key, shape) >> 9).astype(jnp.float32) + 0.5) * np.float32(2.0 ** -23)
    return jax.scipy.special.ndtri(u)
