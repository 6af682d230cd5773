"""Top-k dataset patches over a folder of real photos: images per second, end to end.

Builds (once) a folder of JPEGs of varied sizes cut from scikit-image's sample photos, then
streams it through ``featviz.top_patches.top_patches`` (decode, centre-square resize, batched jit
forward pass, running top-k). Prints one JSON object.

    python benchmarks/bench_top_patches.py [--images 1000] [--layer blocks_8] [--batch 16]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
from PIL import Image

import featviz
from featviz.channels import parse_channels
from featviz.photos import iter_images, sample_photos
from featviz.top_patches import top_patches


def make_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEG crops (96-400 px sides) of the sample photos, written once."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) >= count:
        return folder
    rng = np.random.default_rng(seed)
    photos = [(np.clip(img, 0, 1) * 255).astype(np.uint8) for _, img in sample_photos()]
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = rng.integers(min(96, h), h + 1), rng.integers(min(96, w), w + 1)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        Image.fromarray(photo[top:top + ch, left:left + cw]).save(folder / f"{i:05d}.jpg")
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--layer", default="blocks_8")
    ap.add_argument("--channels", default="0-7")
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--folder", default="/tmp/featviz-top-patches-bench")
    args = ap.parse_args()
    folder = make_folder(Path(args.folder), args.images)
    model = featviz.load_model()
    channels = parse_channels(args.channels, model.channels(args.layer))
    warm = list(iter_images(folder, args.size))[: args.batch]  # compile outside the timing
    top_patches(model, warm, args.layer, channels, k=args.k, size=args.size, batch=args.batch)
    t0 = time.perf_counter()
    result = top_patches(model, iter_images(folder, args.size), args.layer, channels, k=args.k,
                         size=args.size, batch=args.batch)
    seconds = time.perf_counter() - t0
    print(json.dumps({"device": str(jax.devices()[0]), "images": result.n_images,
                      "layer": args.layer, "channels": len(channels), "size": args.size,
                      "batch": args.batch, "seconds": round(seconds, 2),
                      "images_per_s": round(result.n_images / seconds, 1)}, indent=1))


if __name__ == "__main__":
    main()
