"""Image parameterizations: ``init(key) -> params`` and ``to_image(params) -> (H, W, 3) in [0, 1]``.

A parameterization is a pair of pure functions on ONE image, like optax's
GradientTransformation; the renderer vmaps them over the batch. It may also name the
transforms it is meant to be rendered with (``param.maco`` does).

``PARAMETERIZATIONS`` maps a name to a function of the image size that builds one:
``fourier`` (the default: Lucid's Fourier basis), ``pixels`` and ``maco``.

Example:
    >>> import jax
    >>> p = image(64)                       # Fourier + decorrelated colour + sigmoid
    >>> p.to_image(p.init(jax.random.key(0))).shape
    (64, 64, 3)
    >>> sorted(PARAMETERIZATIONS), PARAMETERIZATIONS["maco"](64).to_image is not None
    (['fourier', 'maco', 'pixels'], True)
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import config
from .draws import normal, uniform
from .errors import ConfigError

# Square root of the colour correlation of ImageNet photos (Lucid), scaled so that its
# largest column has unit norm.
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
COLOR_CORRELATION = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))


class Parameterization(NamedTuple):
    init: Callable[[jax.Array], Any]
    to_image: Callable[[Any], jax.Array]
    # the transforms this parameterization is meant for (``() -> list``); None: the standard ones
    transforms: Callable[[], list] | None = None


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of each coefficient of a real 2-D FFT of an h x w image."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def fft_spectrum(size: int, sd: float = 0.01, decay_power: float = 1.0,
                 channels: int = 3) -> Parameterization:
    """Unbounded image as Fourier coefficients scaled by 1/f^decay_power (Lucid's fft_image)."""
    freqs = rfft2d_freqs(size, size)
    scale = (1.0 / np.maximum(freqs, 1.0 / size) ** decay_power).astype(np.float32)[..., None]

    def init(key):
        return sd * normal(key, (2,) + freqs.shape + (channels,))

    def to_image(params):
        spectrum = jax.lax.complex(params[0], params[1]) * scale
        return jnp.fft.irfft2(spectrum, s=(size, size), axes=(0, 1), norm="ortho") / 4.0

    return Parameterization(init, to_image)


def pixels(size: int, sd: float = 0.01, channels: int = 3) -> Parameterization:
    """Unbounded image as raw per-pixel values."""
    return Parameterization(
        lambda key: sd * normal(key, (size, size, channels)),
        lambda params: params)


def decorrelate_colors(t):
    """Map decorrelated colour channels to RGB with the ImageNet colour correlation (three
    multiply-adds per pixel, written out: they fuse with their neighbours, where a 3 x 3 matrix
    product would be a kernel of its own in each direction)."""
    return sum(t[..., i:i + 1] * COLOR_CORRELATION[:, i] for i in range(3))


def image(size: int, *, fft: bool = True, decorrelate: bool = True, sigmoid: bool = True,
          sd: float = 0.01, decay_power: float = 1.0, channels: int = 3) -> Parameterization:
    """Lucid's default image: Fourier (or pixel) basis, decorrelated colour, squashed to [0, 1].

    With ``sigmoid=False`` the image is clipped to [0, 1] around a 0.5 mean instead.
    ``channels=1`` makes grey images (for a network that takes them; no colour to decorrelate).
    """
    base = (fft_spectrum(size, sd, decay_power, channels) if fft
            else pixels(size, sd, channels))

    def to_image(params):
        t = base.to_image(params)
        if decorrelate and channels == 3:
            t = decorrelate_colors(t)
        return jax.nn.sigmoid(t) if sigmoid else jnp.clip(t + 0.5, 0.0, 1.0)

    return Parameterization(base.init, to_image)


# --- MaCo: the phase of a spectrum whose amplitude is that of photos ---------------------------

MACO_SPECTRUM = Path(__file__).resolve().parent / "data" / "maco_spectrum.npy"


@functools.cache
def _photo_spectrum() -> np.ndarray:
    return np.load(MACO_SPECTRUM).astype(np.float32)


def maco_magnitude(size: int) -> np.ndarray:
    """The mean amplitude spectrum of natural photos for a ``size`` x ``size`` image, in
    decorrelated colour, laid out as ``rfft2(..., norm="ortho")`` lays it out:
    (size, size // 2 + 1, 3). ``featviz/data/make_maco_spectrum.py`` wrote it at a reference
    size from scikit-image's photos.

    Another size samples the same frequencies in cycles per pixel: the amplitude times the
    frequency (nearly flat for photos) is interpolated bilinearly and divided by the frequency
    again, so a size above the reference continues the photos' fall-off below its lowest
    frequency. The mean (bin 0, 0) scales with the side, as a photo's does.

    >>> m = maco_magnitude(64)
    >>> m.shape, bool((m > 0).all())
    ((64, 33, 3), True)
    """
    ref = _photo_spectrum()
    r = ref.shape[0]
    if size == r:
        return ref.copy()
    whitened = np.fft.fftshift(ref * rfft2d_freqs(r, r)[..., None], axes=0)  # fy from -1/2 up
    c = r // 2  # the row of fy = 0
    whitened[c, 0] = (whitened[c - 1:c + 2, :2].sum((0, 1)) - whitened[c, 0]) / 5  # f = 0
    whitened = np.concatenate([whitened, whitened[:1]], axis=0)  # fy = +1/2 is fy = -1/2
    rows = np.fft.fftfreq(size) * r + c
    cols = np.fft.rfftfreq(size) * r
    r0 = np.minimum(np.floor(rows).astype(int), r - 1)
    c0 = np.minimum(np.floor(cols).astype(int), ref.shape[1] - 2)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top, bottom = whitened[r0], whitened[r0 + 1]
    out = ((1 - fr) * ((1 - fc) * top[:, c0] + fc * top[:, c0 + 1])
           + fr * ((1 - fc) * bottom[:, c0] + fc * bottom[:, c0 + 1]))
    out = out / np.maximum(rfft2d_freqs(size, size), 1e-12)[..., None]
    out[0, 0] = ref[0, 0] * size / r
    return out.astype(np.float32)


def _hermitian_phase(phase):
    """``phase`` with the columns that hold their own conjugates (fx = 0, and fx = 1/2 for an
    even side) made odd in fy, so that ``irfft2`` keeps every amplitude there. The four bins
    that must be real (fy and fx each 0 or 1/2) keep their phase: ``irfft2`` keeps their
    ``cos(phase)``, so the image's mean colour is free within the photos' amplitude."""
    h = phase.shape[0]
    real_rows = np.zeros((h, 1), bool)
    real_rows[[0] + ([h // 2] if h % 2 == 0 else [])] = True
    for c in [0] + ([phase.shape[1] - 1] if h % 2 == 0 else []):
        col = phase[:, c]
        conjugate = jnp.roll(col[::-1], 1, axis=0)  # the phase at row -k
        phase = phase.at[:, c].set(jnp.where(real_rows, col, (col - conjugate) / 2))
    return phase


def maco_phase(params, phase_scale: float = 2.0):
    """The spectrum's phases (radians) that ``maco``'s parameters stand for."""
    return _hermitian_phase(phase_scale * params)


def maco(size: int, *, contrast: float = 2.0, phase_scale: float = 2.0) -> Parameterization:
    """MaCo (Fel et al., 2023, "Unlocking Feature Visualization for Deeper Networks with
    MAgnitude Constrained Optimization"): only the Fourier phase is optimized; the amplitude
    is fixed to that of natural photos (``maco_magnitude``).

    The image is ``irfft2(magnitude * exp(i * phase))`` in decorrelated colour, standardized
    over the whole image (zero mean, unit variance), multiplied by ``contrast``, mapped to RGB
    with the ImageNet colour correlation and squashed by a sigmoid. MaCo itself stops at
    ``contrast=1``, which leaves a pixel standard deviation near 0.1; 2 is as readable as a
    photo and drives class logits as hard (``benchmarks/RESULTS.md``).

    The parameters are the phases divided by ``phase_scale``, (size, size // 2 + 1, 3), drawn
    uniformly (a photo's phases are): with the default Adam(0.05), a step moves a phase by up
    to 0.1 radian, the rate measured best. The renderer uses ``transforms.maco_transforms``
    (random crops and noise, one view per step) unless given others.

    >>> import jax
    >>> p = maco(32)
    >>> phase = p.init(jax.random.key(0))
    >>> img = p.to_image(phase)
    >>> phase.shape, img.shape, bool(img.min() >= 0) and bool(img.max() <= 1)
    ((32, 17, 3), (32, 32, 3), True)
    """
    from .transforms import maco_transforms

    magnitude = maco_magnitude(size)

    def init(key):
        half_turn = np.pi / phase_scale
        return half_turn * (2.0 * uniform(key, magnitude.shape) - 1.0)

    def to_image(params):
        phase = maco_phase(params, phase_scale)
        spectrum = jax.lax.complex(magnitude * jnp.cos(phase), magnitude * jnp.sin(phase))
        t = jnp.fft.irfft2(spectrum, s=(size, size), axes=(0, 1), norm="ortho")
        t = contrast * (t - t.mean()) / (t.std() + 1e-6)
        return jax.nn.sigmoid(decorrelate_colors(t))

    return Parameterization(init, to_image, maco_transforms)


# by the names ``featviz.config.PARAMETERIZATIONS`` lists (the command line offers those)
PARAMETERIZATIONS: dict[str, Callable[[int], Parameterization]] = dict(zip(
    config.PARAMETERIZATIONS, (image, functools.partial(image, fft=False), maco), strict=True))


def named(name: str, size: int) -> Parameterization | None:
    """``PARAMETERIZATIONS[name]`` at ``size`` px for a ``Renderer``; None for ``fourier``, the
    renderer's own default (which also fits grey networks).

    >>> named("fourier", 64) is None, named("maco", 64) is not None
    (True, True)
    """
    if name not in PARAMETERIZATIONS:
        raise ConfigError(f"unknown parameterization {name!r}; use one of "
                         f"{', '.join(PARAMETERIZATIONS)}")
    return None if name == "fourier" else PARAMETERIZATIONS[name](size)
