"""Image I/O and tiling with numpy and Pillow: load photos, make labeled grids, save atomically.

Example:
    >>> import numpy as np
    >>> grid = make_grid(np.zeros((5, 8, 8, 3)), columns=3, labels=list("abcde"))
    >>> grid.shape[2]
    3
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from .errors import ImageReadError, ImageValueError

WEBP_QUALITY = 85  # a lossy WebP's quality: no artefacts visible at the size shown


def square_crop(im: Image.Image, size: int) -> Image.Image:
    """The largest centered square of a Pillow image, resized bilinearly to ``size`` x ``size``."""
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.resize((size, size), Image.Resampling.BILINEAR,
                     box=(left, top, left + side, top + side))


def _eight_bit(im: Image.Image) -> Image.Image:
    """A 16- or 32-bit integer image as 8-bit grey, scaled by its bit depth (Pillow's own
    conversion clips its values at 255)."""
    full = 2**16 - 1 if im.mode.startswith("I;16") else 2**31 - 1
    grey = np.asarray(im, np.float64) * (255 / full)
    return Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8))


def load_image(path, size: int | None = None) -> np.ndarray:
    """Read an image as float32 RGB in [0, 1], (H, W, 3); with ``size``, the largest centered
    square resized bilinearly to ``size`` x ``size``. A file that is missing, not an image,
    truncated, or beyond Pillow's ``Image.MAX_IMAGE_PIXELS`` raises ``ImageReadError``."""
    try:
        with warnings.catch_warnings():  # beyond the limit: refuse, do not decode
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            im = (_eight_bit(im) if im.mode.startswith("I") else im).convert("RGB")  # decodes
            return np.asarray(im if size is None else square_crop(im, size), np.float32) / 255.0
    except FileNotFoundError:
        raise ImageReadError(f"no such file: {path}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(_too_many_pixels(path, err)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        detail = " ".join(str(err).replace(repr(str(path)), "").split())
        raise ImageReadError(f"{path} is not a readable image ({err.__class__.__name__}: "
                             f"{detail}); give a whole JPEG or PNG file") from None


def _too_many_pixels(path, err: Exception) -> str:
    """The one-line refusal of an image beyond ``Image.MAX_IMAGE_PIXELS``."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    pixels = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return (f"{path} has {pixels}, beyond the limit of {Image.MAX_IMAGE_PIXELS:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS) that guards against decompression bombs; resize it "
            "first")


def as_images(images) -> np.ndarray:
    """Images as the views take them: float32 in [0, 1], (N, H, W, C). Accepts a PIL image,
    integer arrays (uint8 divided by 255, uint16 by 65535), floats in [0, 1], and one image
    (H, W, 3) as well as a batch; grey ones, (H, W) or with one channel, become RGB (a grey
    network's ``Model.as_input`` turns them back).

    Example:
        >>> grey = as_images(np.full((4, 6), 255, np.uint8))
        >>> grey.shape, float(grey.max())
        ((1, 4, 6, 3), 1.0)
    """
    if isinstance(images, Image.Image):
        images = np.asarray(images.convert("RGB"))
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.integer):
        images = images / np.float32(np.iinfo(images.dtype).max)
    images = images.astype(np.float32)
    if images.ndim == 2:
        images = images[..., None]
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ImageValueError(f"images must be (H, W, 3), (H, W) or a batch (N, H, W, 3), not "
                              f"an array of shape {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    low, high = float(images.min()), float(images.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ImageValueError(f"image values must lie in [0, 1], these run from {low:g} to "
                              f"{high:g}; divide 0-255 values by 255")
    return images


def one_image(image) -> np.ndarray:
    """``as_images`` for a view of one image: (1, H, W, 3); a batch of several is refused."""
    images = as_images(image)
    if len(images) != 1:
        raise ImageValueError(f"this view takes one image, not a batch of {len(images)}; "
                              "pass images[i]")
    return images


def to_uint8(image) -> np.ndarray:
    """Float image in [0, 1] -> uint8, clipped."""
    return (np.clip(np.asarray(image, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def make_grid(images, columns: int | None = None, labels=None, pad: int = 2,
              label_height: int = 12) -> np.ndarray:
    """Tile (N, H, W, 3) (or grey (N, H, W, 1)) images in [0, 1] into one uint8 RGB image, each
    tile with an optional label."""
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    columns = min(columns or int(np.ceil(np.sqrt(n))), n)
    rows = int(np.ceil(n / columns))
    lh = label_height if labels is not None else 0
    cell_h, cell_w = h + lh + pad, w + pad
    canvas = Image.new("RGB", (columns * cell_w + pad, rows * cell_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i in range(n):
        r, c = divmod(i, columns)
        x, y = pad + c * cell_w, pad + r * cell_h
        tile = images[i]
        tile = tile if tile.dtype == np.uint8 else to_uint8(tile)
        tile = np.repeat(tile, 3, axis=-1) if tile.shape[-1] == 1 else tile  # grey
        canvas.paste(Image.fromarray(tile), (x, y + lh))
        if labels is not None:
            draw.text((x + 1, y), str(labels[i]), fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def transparency_alpha(transparency, percentile: float = 80.0) -> np.ndarray:
    """An (H, W) transparency map (``RenderResult.transparency``, MaCo's accumulated gradient)
    as an opacity in [0, 1]: pixels at or above the map's ``percentile`` are opaque, the rest
    fade linearly to clear where the objective never looked."""
    t = np.asarray(transparency, np.float32)
    top = np.percentile(t, percentile)
    return np.clip(t / top, 0.0, 1.0) if top > 0 else np.ones_like(t)


def with_alpha(image, transparency, percentile: float = 80.0, background=None) -> np.ndarray:
    """An image with its transparency map (``transparency_alpha``) as alpha: (H, W, 4) RGBA in
    [0, 1] for ``save_png``, or with ``background`` (a grey level or an RGB triple in [0, 1]),
    the image composited over it, (H, W, 3), for grids and viewers without alpha.

    >>> rgba = with_alpha(np.full((4, 4, 3), 0.5), np.arange(16.0).reshape(4, 4))
    >>> rgba.shape, float(rgba[0, 0, 3]), float(rgba[3, 3, 3])
    ((4, 4, 4), 0.0, 1.0)
    >>> with_alpha(np.zeros((4, 4, 3)), np.eye(4), background=1.0)[0, 1].tolist()
    [1.0, 1.0, 1.0]
    """
    image = np.asarray(image, np.float32)
    alpha = transparency_alpha(transparency, percentile)[..., None]
    if background is None:
        return np.concatenate([image, alpha], axis=-1)
    return image * alpha + np.asarray(background, np.float32) * (1.0 - alpha)


def _current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (setting it to
    read it back would race with threads creating files)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_atomic(path, write, mode: str, permissions: int | None = None) -> Path:
    """Write through a temporary file renamed over ``path``, so that no reader ever sees half a
    file; the file gets the permissions any new file gets (0666 less the umask), not
    ``mkstemp``'s private 0600, unless ``permissions`` says others. A refusal names ``path``,
    not the temporary file."""
    path = Path(path)
    try:
        _replace_with_new_file(path, write, mode, permissions)
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from None
    return path


def _replace_with_new_file(path: Path, write, mode: str, permissions: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_current_umask() if permissions is None else permissions)
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _pixels(array) -> Image.Image:
    """A uint8 or [0, 1] float image, (H, W, 3) or grey (H, W, 1), as a Pillow image."""
    array = np.asarray(array)
    array = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
    return Image.fromarray(array if array.dtype == np.uint8 else to_uint8(array))


def save_png(array, path) -> Path:
    """Write a uint8 or [0, 1] float image, (H, W, 3) or grey (H, W, 1), to ``path``
    atomically (temp file, then rename)."""
    pixels = _pixels(array)
    return _write_atomic(path, lambda f: pixels.save(f, format="PNG"), "wb")


def save_webp(array, path, lossless: bool = False) -> Path:
    """``save_png``'s image as a WebP, for a picture to look at rather than a result: lossy
    (``WEBP_QUALITY``), about a fifth of the PNG's bytes for feature visualizations and
    photos, whose noise PNG compresses badly; or ``lossless``, for maps whose every pixel's
    colour counts (lossy WebP halves the colour resolution), a fifth smaller than PNG."""
    pixels = _pixels(array)
    options = {"lossless": True} if lossless else {"quality": WEBP_QUALITY}
    return _write_atomic(path, lambda f: pixels.save(f, format="WEBP", **options), "wb")


def save_npy(array, path) -> Path:
    """Write a numpy array (``.npy``) atomically (temp file, then rename)."""
    array = np.asarray(array)
    return _write_atomic(path, lambda f: np.save(f, array), "wb")


def save_npz(arrays: dict, path) -> Path:
    """Write named numpy arrays (``.npz``) atomically (temp file, then rename)."""
    return _write_atomic(path, lambda f: np.savez(f, **arrays), "wb")


def write_text_atomic(text: str, path, permissions: int | None = None) -> Path:
    """Write a text file atomically (temp file, then rename); ``permissions`` as in
    ``_write_atomic``."""
    return _write_atomic(path, lambda f: f.write(text), "w", permissions)
