"""Image parameterizations: ``init(key) -> params`` and ``to_image(params) -> (H, W, 3) in [0, 1]``.

A parameterization is a pair of pure functions on ONE image, like optax's
GradientTransformation; the renderer vmaps them over the batch.

Example:
    >>> import jax
    >>> p = image(64)                       # Fourier + decorrelated colour + sigmoid
    >>> p.to_image(p.init(jax.random.key(0))).shape
    (64, 64, 3)
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Square root of the colour correlation of ImageNet photos (Lucid), scaled so that its
# largest column has unit norm.
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
COLOR_CORRELATION = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))


class Parameterization(NamedTuple):
    init: Callable[[jax.Array], Any]
    to_image: Callable[[Any], jax.Array]


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of each coefficient of a real 2-D FFT of an h x w image."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def fft_spectrum(size: int, sd: float = 0.01, decay_power: float = 1.0) -> Parameterization:
    """Unbounded image as Fourier coefficients scaled by 1/f^decay_power (Lucid's fft_image)."""
    freqs = rfft2d_freqs(size, size)
    scale = (1.0 / np.maximum(freqs, 1.0 / size) ** decay_power).astype(np.float32)[..., None]

    def init(key):
        return sd * jax.random.normal(key, (2,) + freqs.shape + (3,), jnp.float32)

    def to_image(params):
        spectrum = jax.lax.complex(params[0], params[1]) * scale
        return jnp.fft.irfft2(spectrum, s=(size, size), axes=(0, 1), norm="ortho") / 4.0

    return Parameterization(init, to_image)


def pixels(size: int, sd: float = 0.01) -> Parameterization:
    """Unbounded image as raw per-pixel values."""
    return Parameterization(lambda key: sd * jax.random.normal(key, (size, size, 3), jnp.float32),
                            lambda params: params)


def decorrelate_colors(t):
    """Map decorrelated colour channels to RGB with the ImageNet colour correlation (three
    multiply-adds per pixel, written out: they fuse with their neighbours, where a 3 x 3 matrix
    product would be a kernel of its own in each direction)."""
    return sum(t[..., i:i + 1] * COLOR_CORRELATION[:, i] for i in range(3))


def image(size: int, *, fft: bool = True, decorrelate: bool = True, sigmoid: bool = True,
          sd: float = 0.01, decay_power: float = 1.0) -> Parameterization:
    """Lucid's default image: Fourier (or pixel) basis, decorrelated colour, squashed to [0, 1].

    With ``sigmoid=False`` the image is clipped to [0, 1] around a 0.5 mean instead.
    """
    base = fft_spectrum(size, sd, decay_power) if fft else pixels(size, sd)

    def to_image(params):
        t = base.to_image(params)
        if decorrelate:
            t = decorrelate_colors(t)
        return jax.nn.sigmoid(t) if sigmoid else jnp.clip(t + 0.5, 0.0, 1.0)

    return Parameterization(base.init, to_image)
