"""A photo in featviz's image basis: the coefficients that ``featviz.param.image`` turns back
into the photo, so that an ascent can start from it (feature accentuation).

``param.image`` makes an image as ``sigmoid(colour(irfft2(c * scale) / 4))``; the inverse clips
the photo to (eps, 1 - eps), takes its logit, undoes the colour correlation, and divides the
``rfft2`` (ortho) of four times that by the same spectrum scale.

Example:
    >>> import numpy as np
    >>> photo = np.random.default_rng(0).uniform(size=(32, 32, 3)).astype(np.float32)
    >>> p = photo_parameterization(photo)
    >>> import jax
    >>> back = np.asarray(p.to_image(p.init(jax.random.key(0))))
    >>> bool(np.abs(back - photo).max() < 1e-3)
    True
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..draws import normal
from ..errors import ImageValueError
from ..param import COLOR_CORRELATION, Parameterization, image, rfft2d_freqs

# how far inside (0, 1) a photo's pixels are clipped before their logit: the round trip is
# exact to this, and a saturated pixel keeps a gradient (sigmoid' = eps at the clip)
CLIP = 1e-3


def spectrum_scale(size: int, decay_power: float = 1.0) -> np.ndarray:
    """The 1/f scale ``param.fft_spectrum`` multiplies its coefficients by, (size, size//2+1, 1)."""
    freqs = rfft2d_freqs(size, size)
    return (1.0 / np.maximum(freqs, 1.0 / size) ** decay_power).astype(np.float32)[..., None]


def photo_coefficients(photo, decay_power: float = 1.0, eps: float = CLIP) -> np.ndarray:
    """The parameters of ``param.image(size, channels=C, decay_power=...)`` whose image is
    ``photo`` (a square (size, size, C) array in [0, 1], C = 3 or 1), to within ``eps``:
    shape (2, size, size // 2 + 1, C), the real and imaginary parts."""
    photo = np.asarray(photo, np.float64)
    if photo.ndim != 3 or photo.shape[0] != photo.shape[1] or photo.shape[-1] not in (1, 3):
        raise ImageValueError(f"a photo to start from must be square, (size, size, 3) or "
                              f"(size, size, 1), not {photo.shape}; crop it to a square first")
    x = np.clip(photo, eps, 1.0 - eps)
    t = np.log(x) - np.log1p(-x)
    if photo.shape[-1] == 3:  # decorrelate_colors is t @ COLOR_CORRELATION.T
        t = t @ np.linalg.inv(COLOR_CORRELATION.T.astype(np.float64))
    spectrum = np.fft.rfft2(4.0 * t, axes=(0, 1), norm="ortho")
    spectrum = spectrum / spectrum_scale(photo.shape[0], decay_power)
    return np.stack([spectrum.real, spectrum.imag]).astype(np.float32)


def photo_parameterization(photo, perturbation: float = 0.0,
                           decay_power: float = 1.0) -> Parameterization:
    """``param.image``'s basis started at ``photo`` instead of noise: ``init(key)`` is the
    photo's coefficients plus ``perturbation`` times normal noise drawn from ``key`` (0: every
    key starts at the photo itself; 0.01 is the noise ``param.image`` starts from)."""
    coefficients = jnp.asarray(photo_coefficients(photo, decay_power))
    base = image(coefficients.shape[1], decay_power=decay_power,
                 channels=coefficients.shape[-1])

    def init(key):
        if not perturbation:
            return coefficients
        return coefficients + perturbation * normal(key, coefficients.shape)

    return Parameterization(init, base.to_image)
