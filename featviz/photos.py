"""Photos to search or show: a folder of images streamed one at a time, or the photos that
scikit-image ships (no download), each cut to its largest centered square at the size asked.

Example:
    >>> name, image = next(sample_photos())
    >>> name, image.shape, square_resize(image, 64).shape
    ('astronaut', (512, 512, 3), (64, 64, 3))
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import DatasetError
from .image import ImageReadError, load_image, square_crop, to_uint8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def iter_images(folder, size: int | None = None,
                on_error: Callable[[Path, Exception], None] | None = None
                ) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(path, image)`` for each .jpg/.jpeg/.png file in ``folder``, sorted by name, one
    at a time; ``size`` as in ``load_image``. An unreadable file is skipped after a warning
    (or a call to ``on_error(path, error)``)."""
    folder = Path(folder)
    if folder.is_file():
        raise DatasetError(f"{folder} is a file; give a folder of .jpg/.png images")
    if not folder.is_dir():
        raise DatasetError(f"no such folder: {folder}")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetError(f"no .jpg, .jpeg or .png files in {folder}")
    for path in paths:
        try:
            image = load_image(path, size)
        except ImageReadError as err:
            if on_error is None:
                warnings.warn(f"skipped: {err}", stacklevel=2)
            else:
                on_error(path, err)
            continue
        yield str(path), image


def warn_once() -> Callable[[Path, Exception], None]:
    """An ``on_error`` for ``iter_images`` that warns (``warnings.warn``) of each skipped file
    once, however often the folder is read."""
    warned = set()

    def skipped(path, err):
        if path not in warned:
            warned.add(path)
            warnings.warn(f"skipped: {err}", stacklevel=2)
    return skipped


SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "clock", "moon",
                 "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle",
                 "grass", "gravel", "brick")


def sample_photos() -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, image)`` for the photos scikit-image ships (no download), as float RGB
    in [0, 1]; grey ones are repeated over three channels."""
    from skimage import data
    for name in SAMPLE_PHOTOS:
        image = getattr(data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo pair: the left view
        image = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
        yield name, image.astype(np.float32) / 255.0


def square_resize(image, size: int) -> np.ndarray:
    """The largest centered square of an image in [0, 1], resized bilinearly to ``size``
    (the same pixels as ``load_image(path, size)`` gives for that image saved as a PNG)."""
    image = np.asarray(image)
    if image.shape[:2] == (size, size):
        return image.astype(np.float32)
    return np.asarray(square_crop(Image.fromarray(to_uint8(image)), size), np.float32) / 255.0
