"""Random image transforms as pure functions ``(key, image) -> image`` on ONE (H, W, 3) image.

Each output shape depends only on the input shape, so a rendering loop never retraces.
Scale and rotation resample around the centre onto the same canvas (bilinear, grey outside).

Example:
    >>> import jax, jax.numpy as jnp
    >>> t = compose([pad(12), jitter(8), random_scale([0.9, 1.0, 1.1]), jitter(4)])
    >>> t(jax.random.key(0), jnp.zeros((128, 128, 3))).shape
    (140, 140, 3)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .draws import derive_key, normal, uniform

Transform = Callable[[jax.Array, jax.Array], jax.Array]


def compose(transforms: Sequence[Transform]) -> Transform:
    """Apply transforms in order, each with its own key derived from the one given."""
    transforms = tuple(transforms)

    def apply(key, img):
        for i, t in enumerate(transforms):
            img = t(derive_key(key, i), img)
        return img

    return apply


def pad(width: int, value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels of a constant grey."""
    return lambda key, img: jnp.pad(img, ((width, width), (width, width), (0, 0)),
                                    constant_values=value)


def jitter(d: int) -> Transform:
    """Random crop that is ``d`` pixels smaller in each dimension (a random shift of 0..d)."""

    def apply(key, img) -> jax.Array:
        return _crop(img, _below(key, (d + 1, d + 1)), d)

    return apply


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _crop(img, offset, d: int):
    """``img`` less ``d`` rows and columns, starting at ``offset`` (dy, dx). Its gradient is a
    crop of the padded cotangent: under ``vmap`` a gather, where autodiff's would be a scatter."""
    h, w, c = img.shape
    return jax.lax.dynamic_slice(img, (offset[0], offset[1], 0), (h - d, w - d, c))


def _crop_fwd(img, offset, d):
    return _crop(img, offset, d), offset


def _crop_bwd(d, offset, g):
    padded = jnp.pad(g, ((d, d), (d, d), (0, 0)))
    h, w, c = g.shape
    grad = jax.lax.dynamic_slice(padded, (d - offset[0], d - offset[1], 0), (h + d, w + d, c))
    return grad, np.zeros(offset.shape, jax.dtypes.float0)


_crop.defvjp(_crop_fwd, _crop_bwd)


def _pixel_grid(h: int, w: int):
    return jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")


def _about_centre(matrix, ys, xs, h: int, w: int):
    """centre + matrix @ ((ys, xs) - centre), the centre being that of an (h, w) canvas."""
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    return (matrix[0, 0] * (ys - cy) + matrix[0, 1] * (xs - cx) + cy,
            matrix[1, 0] * (ys - cy) + matrix[1, 1] * (xs - cx) + cx)


def _source_coords(matrix, h: int, w: int):
    """Where each pixel of an (h, w) canvas samples from: centre + matrix @ (pixel - centre)."""
    ys, xs = _pixel_grid(h, w)
    return _about_centre(matrix, ys, xs, h, w)


def _gather_pixels(img, ys, xs):
    """``img[ys, xs]`` for integer-valued float coordinates, and whether each lies on the canvas."""
    h, w, _ = img.shape
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    index = (jnp.clip(ys, 0, h - 1).astype(jnp.int32) * w
             + jnp.clip(xs, 0, w - 1).astype(jnp.int32))
    return jnp.asarray(img).reshape(h * w, -1).at[index].get(mode="promise_in_bounds"), inside


def _bilinear(img, sy, sx, fill: float):
    y0, x0 = jnp.floor(sy), jnp.floor(sx)
    fy, fx = sy - y0, sx - x0
    out, covered = 0.0, 0.0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            pixels, inside = _gather_pixels(img, y0 + dy, x0 + dx)
            weight = jnp.where(inside, wy * wx, 0.0)
            out = out + weight[..., None] * pixels
            covered = covered + weight
    return out + fill * (1.0 - covered)[..., None]


def _shifted(coords, shift):
    return coords if shift is None else (coords[0] + shift[0], coords[1] + shift[1])


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _warp(img, matrix, reach: int, fill: float, shift=None):
    """Resample ``img`` so that output pixel p takes input pixel centre + matrix @ (p - centre)
    (+ ``shift``, (dy, dx), when given) (bilinear; samples off the canvas read ``fill``).

    The gradient is the exact transpose, computed as a gather rather than autodiff's scatter
    (several times faster on XLA:CPU): input pixel p receives from the output pixels within
    ``reach`` of inverse(matrix) @ (p - centre), which covers all of them whenever
    ``reach >= ceil(|inverse(matrix)|_inf + 0.5) - 1``.
    """
    sy, sx = _shifted(_source_coords(matrix, *img.shape[:2]), shift)
    return _bilinear(img, sy, sx, fill)


def _warp_fwd(img, matrix, reach, fill, shift=None):
    return _warp(img, matrix, reach, fill, shift), (matrix, shift)


def _warp_bwd(reach, fill, residuals, g):
    matrix, shift = residuals
    h, w, _ = g.shape
    (a, b), (c, d) = matrix
    inverse = jnp.array([[d, -b], [-c, a]]) / (a * d - b * c)
    py, px = _pixel_grid(h, w)
    ty, tx = _shifted((py, px), None if shift is None else -shift)
    near_y, near_x = (jnp.round(t) for t in _about_centre(inverse, ty, tx, h, w))
    grad = 0.0
    for oy in range(-reach, reach + 1):
        for ox in range(-reach, reach + 1):
            qy, qx = near_y + oy, near_x + ox
            # where output pixel q samples from
            sy, sx = _shifted(_about_centre(matrix, qy, qx, h, w), shift)
            weight = (jnp.maximum(0.0, 1.0 - jnp.abs(sy - py))
                      * jnp.maximum(0.0, 1.0 - jnp.abs(sx - px)))
            values, inside = _gather_pixels(g, qy, qx)
            grad = grad + jnp.where(inside, weight, 0.0)[..., None] * values
    return grad, jnp.zeros_like(matrix), None if shift is None else jnp.zeros_like(shift)


_warp.defvjp(_warp_fwd, _warp_bwd)


def _reach(max_scale: float, radians) -> int:
    """The ``_warp`` reach that covers zooms up to ``max_scale`` at any of these angles."""
    norm = max_scale * float(np.max(np.abs(np.cos(radians)) + np.abs(np.sin(radians))))
    return max(1, int(np.ceil(norm + 0.5)) - 1)


def _rotation(radians):
    cos, sin = jnp.cos(radians), jnp.sin(radians)
    return jnp.array([[cos, sin], [-sin, cos]])


def _below(key, limits: Sequence[int]) -> jax.Array:
    """One random integer in [0, limit) per limit, uniform (``uniform``: no threefry call)."""
    bounds = np.asarray(limits, np.int32)
    drawn = (uniform(key, bounds.size) * bounds).astype(jnp.int32)
    return jnp.minimum(drawn, bounds - 1)


def _choices(values, key):
    return jnp.asarray(values, jnp.float32)[_below(key, [len(values)])[0]]


def random_scale(scales: Sequence[float], fill: float = 0.5) -> Transform:
    """Zoom about the centre by a factor drawn uniformly from ``scales``; the canvas keeps its
    size (zooming out brings in ``fill``)."""
    reach = _reach(max(scales), np.zeros(1))
    return lambda key, img: _warp(img, jnp.eye(2) / _choices(scales, key), reach, fill)


def random_rotate(degrees: Sequence[float], fill: float = 0.5) -> Transform:
    """Rotate about the centre by an angle (degrees) drawn uniformly from ``degrees``; corners
    from off the canvas read ``fill``."""
    radians = np.deg2rad(np.asarray(degrees, np.float32))
    reach = _reach(1.0, radians)
    return lambda key, img: _warp(img, _rotation(_choices(radians, key)), reach, fill)


def random_scale_rotate(scales: Sequence[float], degrees: Sequence[float],
                        fill: float = 0.5) -> Transform:
    """``random_scale`` then ``random_rotate`` in a single resampling (one interpolation, not
    two: sharper and about half the cost)."""
    radians = np.deg2rad(np.asarray(degrees, np.float32))
    reach = _reach(max(scales), radians)

    def apply(key, img) -> jax.Array:
        i_scale, i_rot = _below(key, (len(scales), len(radians)))
        scale = jnp.asarray(scales, jnp.float32)[i_scale]
        return _warp(img, _rotation(jnp.asarray(radians)[i_rot]) / scale, reach, fill)

    return apply


def random_crop(fractions: Sequence[float] = (0.5, 1.0), fill: float = 0.5) -> Transform:
    """Zoom into a random square box and resample it onto the whole canvas (bilinear): the box's
    side is a fraction of the canvas's drawn uniformly in ``fractions`` (low, high), and its
    position uniformly among those inside the canvas. MaCo's crops, one per step."""
    low, high = float(min(fractions)), float(max(fractions))
    reach = _reach(1.0 / low, np.zeros(1))

    def apply(key, img) -> jax.Array:
        h, w, _ = img.shape
        u = uniform(key, 3)
        fraction = low + (high - low) * u[0]
        room = (1.0 - fraction) * jnp.array([h - 1, w - 1], jnp.float32) / 2.0
        return _warp(img, jnp.eye(2) * fraction, reach, fill, (2.0 * u[1:] - 1.0) * room)

    return apply


def noise(sd: float) -> Transform:
    """Add Gaussian noise of standard deviation ``sd`` to every pixel."""
    return lambda key, img: img + (sd * normal(key, img.shape)).astype(img.dtype)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps covering +-3 sigma."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(sigma: float = 0.5) -> Transform:
    """Separable Gaussian blur (edges repeated), same output shape."""
    taps = gaussian_kernel(sigma)
    r = len(taps) // 2

    def apply(key, img) -> jax.Array:
        h, w, _ = img.shape
        p = jnp.pad(img, ((r, r), (0, 0), (0, 0)), mode="edge")
        img = sum(float(t) * p[i:i + h] for i, t in enumerate(taps))
        p = jnp.pad(img, ((0, 0), (r, r), (0, 0)), mode="edge")
        # a sum of arrays (taps is never empty); typeshed adds sum()'s start, 0, to its type
        return sum(float(t) * p[:, i:i + w] for i, t in enumerate(taps))  # pyright: ignore[reportReturnType]

    return apply


def standard_transforms() -> list[Transform]:
    """Lucid's standard transforms: pad 12, jitter 8, scale 0.90..1.10, rotate -10..10, jitter 4."""
    return [pad(12), jitter(8),
            random_scale_rotate([1 + (i - 5) / 50.0 for i in range(11)],
                                list(range(-10, 11)) + 5 * [0]),
            jitter(4)]


def maco_transforms() -> list[Transform]:
    """MaCo's transforms, one view per step: a random crop of 75-100% of the side, resampled
    to the canvas, and Gaussian noise (sd 0.02)."""
    return [random_crop((0.75, 1.0)), noise(0.02)]
