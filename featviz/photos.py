"""Photos to search or show: a folder of images (searched recursively, every format Pillow
reads) streamed one at a time, or the photos that scikit-image ships (no download), each cut to
its largest centered square at the size asked; and a background reader that decodes the next
items while the current ones are computed on.

Example:
    >>> name, image = next(sample_photos())
    >>> name, image.shape, square_resize(image, 64).shape
    ('astronaut', (512, 512, 3), (64, 64, 3))
    >>> [n for n, _ in prefetch(sample_photos(), depth=2)][:2]
    ['astronaut', 'coffee']
"""
from __future__ import annotations

import hashlib
import itertools
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from .errors import DatasetError
from .image import ImageReadError, load_image, square_crop, to_uint8


@lru_cache(maxsize=1)
def image_suffixes() -> frozenset[str]:
    """The file suffixes of every format Pillow can decode here (stub formats, which need a
    handler of their own, left out).

    >>> {".jpg", ".png", ".webp"} <= image_suffixes()
    True
    """
    Image.init()
    readable = {fmt for fmt, (opener, _) in Image.OPEN.items()
                if not (isinstance(opener, type) and issubclass(opener, ImageFile.StubImageFile))}
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in readable)


def image_paths(folder) -> list[Path]:
    """The image files under ``folder`` and its subfolders, sorted by path; ``DatasetError``
    for a missing folder, a file, or a folder without any."""
    folder = Path(folder)
    if folder.is_file():
        raise DatasetError(f"{folder} is a file; give a folder of .jpg/.png images (or any "
                           "other format Pillow reads)")
    if not folder.is_dir():
        raise DatasetError(f"no such folder: {folder}")
    suffixes = image_suffixes()
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    if not paths:
        raise DatasetError(f"no .jpg, .jpeg, .png or other image files in {folder} or its "
                           "subfolders")
    return paths


class ImageStream(Iterator):
    """``(name, image)`` for each of ``items`` (paths, or names), read one at a time by
    ``read(item)``; ``len()`` is the number of items (one that cannot be read is skipped
    after a warning, or a call to ``on_error``)."""

    def __init__(self, items: Sequence, read: Callable[[Any], np.ndarray],
                 on_error: Callable[[Path, Exception], None] | None):
        self.items, self._images = items, self._read(read, on_error)

    def __len__(self) -> int:
        return len(self.items)

    def __next__(self) -> tuple[str, np.ndarray]:
        return next(self._images)

    def _read(self, read, on_error):
        for item in self.items:
            try:
                image = read(item)
            except ImageReadError as err:
                if on_error is None:
                    warnings.warn(f"skipped: {err}", stacklevel=3)
                else:
                    on_error(item, err)
                continue
            yield str(item), image


def iter_images(folder, size: int | None = None,
                on_error: Callable[[Path, Exception], None] | None = None) -> ImageStream:
    """``(path, image)`` for each image file under ``folder`` (``image_paths``), one at a time;
    ``size`` as in ``load_image``. An unreadable file is skipped after a warning (or a call to
    ``on_error(path, error)``)."""
    return ImageStream(image_paths(folder), lambda path: load_image(path, size), on_error)


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


def sample_photo(name: str) -> np.ndarray:
    """One of ``SAMPLE_PHOTOS`` as float RGB in [0, 1]; a grey one repeated over three
    channels."""
    from skimage import data
    image = getattr(data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo pair: the left view
    image = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
    return image.astype(np.float32) / 255.0


def sample_photos() -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, image)`` for the photos scikit-image ships (no download)."""
    for name in SAMPLE_PHOTOS:
        yield name, sample_photo(name)


def square_resize(image, size: int) -> np.ndarray:
    """The largest centered square of an image in [0, 1], resized bilinearly to ``size``
    (the same pixels as ``load_image(path, size)`` gives for that image saved as a PNG)."""
    image = np.asarray(image)
    if image.shape[:2] == (size, size):
        return image.astype(np.float32)
    return np.asarray(square_crop(Image.fromarray(to_uint8(image)), size), np.float32) / 255.0


def batches(images: Iterable[tuple[str, np.ndarray]], size: int, batch: int
            ) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(names, pixels)`` for consecutive groups of ``batch`` images (the last may be
    smaller), each image ``square_resize``d to ``size``: pixels is (n, size, size, 3)."""
    it = iter(images)
    while chunk := list(itertools.islice(it, batch)):
        yield [name for name, _ in chunk], np.stack([square_resize(im, size) for _, im in chunk])


def padded_batch(pixels: np.ndarray, batch: int) -> np.ndarray:
    """``pixels`` (n, H, W, 3) padded with black images to ``batch`` (one compiled shape for
    every batch, the last included)."""
    blank = np.zeros((batch - len(pixels),) + pixels.shape[1:], pixels.dtype)
    return np.concatenate([pixels, blank])


class PhotoSource:
    """The photos a gallery searches: ``source()`` is a fresh ``(name, image)`` iterator,
    ``source.load(name)`` one photo again, ``len(source)`` how many files, and ``source.key``
    a fingerprint that changes when the photos do (a resumed run compares it).

    >>> photos = PhotoSource(None, 64)
    >>> len(photos), photos.load("coffee").shape, len(photos.key)
    (15, (64, 64, 3), 16)
    """

    def __init__(self, folder=None, size: int | None = None):
        self.folder, self.size = folder, size
        self._skipped = warn_once()
        if folder is None:
            self.paths, stamp = None, ["skimage", *SAMPLE_PHOTOS]
        else:
            self.paths = image_paths(folder)
            stamp = [str(folder)] + [f"{p}:{s.st_size}:{s.st_mtime_ns}"
                                     for p, s in ((p, p.stat()) for p in self.paths)]
        self.key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return len(SAMPLE_PHOTOS) if self.paths is None else len(self.paths)

    def __call__(self) -> ImageStream:
        return ImageStream(SAMPLE_PHOTOS if self.paths is None else self.paths, self.load,
                           self._skipped)

    def load(self, name) -> np.ndarray:
        """The photo ``name`` (as this source's iterator names it) at the source's size."""
        if self.paths is None:
            image = sample_photo(name)
            return image if self.size is None else square_resize(image, self.size)
        return load_image(name, self.size)


_DONE = object()


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """``items``, produced on a background thread up to ``depth`` ahead of the consumer (so
    that decoding overlaps with what is done with each item); an error in the producer is
    raised in the consumer, and a consumer that stops early stops the thread."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        ready.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            ready.put((_DONE, None))
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which raises it
            ready.put((_DONE, err))

    thread = threading.Thread(target=produce, daemon=True, name="featviz-prefetch")
    thread.start()
    try:
        while (got := ready.get())[0] is not _DONE:
            yield got[0]
        if got[1] is not None:
            raise got[1]
    finally:
        stop.set()
