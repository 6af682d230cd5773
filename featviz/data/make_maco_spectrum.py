"""Write ``maco_spectrum.npy``: the mean Fourier amplitude of natural photos, for ``param.maco``.

The photos are the colour ones scikit-image ships (no download): astronaut, coffee, chelsea,
rocket and the left view of stereo_motorcycle. Each is cut into square crops of ``REFERENCE``
pixels (a stride of a quarter crop), and each crop, in featviz's decorrelated colour space
(``param.COLOR_CORRELATION`` inverted, around mid-grey), contributes ``|rfft2(crop)|`` with
``norm="ortho"``:

- bin (0, 0), the mean: ``REFERENCE * |mean of the crop|`` per colour channel;
- every other bin: the amplitude of the crop less its mean, under a Hann window (so that the
  crop's borders add no cross of false energy along the axes), divided by the window's RMS.

The amplitudes are averaged over crops and over mirror images (left-right and up-down, so the
spectrum is symmetric in each axis), and saved as float16, shape (REFERENCE, REFERENCE//2+1, 3).
``param.maco_magnitude`` resizes it to any image size. Run from the repository root:

    python featviz/data/make_maco_spectrum.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

REFERENCE = 256
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "stereo_motorcycle")
OUT = Path(__file__).resolve().parent / "maco_spectrum.npy"


def photos():
    from skimage import data
    for name in PHOTOS:
        image = getattr(data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo pair: the left view
        yield name, image[..., :3].astype(np.float64) / 255.0


def crops(image, size: int, stride: int):
    h, w, _ = image.shape
    for top in range(0, h - size + 1, stride):
        for left in range(0, w - size + 1, stride):
            yield image[top:top + size, left:left + size]


def spectrum(size: int = REFERENCE) -> np.ndarray:
    from featviz.param import COLOR_CORRELATION

    to_decorrelated = np.linalg.inv(COLOR_CORRELATION.astype(np.float64))
    window = np.outer(np.hanning(size), np.hanning(size))[..., None]
    window_rms = np.sqrt(np.mean(window ** 2))
    total, count = 0.0, 0
    for _, image in photos():
        for crop in crops(image, size, size // 4):
            for view in (crop, crop[:, ::-1], crop[::-1], crop[::-1, ::-1]):
                t = (view - 0.5) @ to_decorrelated.T
                mean = t.mean(axis=(0, 1))
                amp = np.abs(np.fft.rfft2((t - mean) * window, axes=(0, 1), norm="ortho"))
                amp /= window_rms
                amp[0, 0] = size * np.abs(mean)
                total, count = total + amp, count + 1
    return np.asarray(total / count, np.float32)


def main():
    amplitude = spectrum()
    np.save(OUT, amplitude.astype(np.float16))
    print(f"{OUT}: {amplitude.shape}, mean of the photos' crops: DC {amplitude[0, 0]}, "
          f"AC median {np.median(amplitude[1:, 1:], axis=(0, 1))}")


if __name__ == "__main__":
    main()
