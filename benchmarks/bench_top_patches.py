"""Dataset examples at scale: images per second and peak memory of ``top_patches`` streaming a
folder, against the forward-pass floor on the same machine.

Builds (once) folders of 224 px JPEG crops of scikit-image's sample photos (``make_folder``),
then, each in a fresh process so that its peak resident memory is its own, streams 1,000 and
10,000 of them through ``featviz.top_patches.top_patches`` (decode on a background thread,
batched jit forward pass, running top-k and bottom-k), and times the same jitted batch
function on batches decoded beforehand (the floor: no decoding, no bookkeeping; measured before
and after the runs, and the faster one compared with). Prints one JSON object; the targets are
at least half the floor's images per second, and the peak memory at 10,000 images within 10% of
that at 1,000.

    python benchmarks/bench_top_patches.py [--sizes 1000,10000] [--layer blocks_8] [--batch 16]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

FOLDER = Path("/tmp/featviz-top-patches-bench")


def make_folder(folder: Path, count: int, side: int = 224, seed: int = 0) -> Path:
    """``count`` JPEGs of ``side`` px, each a random square crop (a fifth to all of the shorter
    side) of one of scikit-image's sample photos, resized; written once."""
    from featviz.photos import sample_photos

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("*.jpg"))) >= count:
        return folder
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray((np.clip(im, 0, 1) * 255).astype(np.uint8))
              for _, im in sample_photos()]
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        crop = int(rng.integers(min(w, h) // 5, min(w, h) + 1))
        left, top = int(rng.integers(0, w - crop + 1)), int(rng.integers(0, h - crop + 1))
        tile = photo.resize((side, side), Image.Resampling.BILINEAR,
                            box=(left, top, left + crop, top + crop))
        tile.save(folder / f"{i:05d}.jpg", quality=90)
    return folder


def _setup(args):
    import featviz
    from featviz.channels import parse_channels
    model = featviz.load_model()
    return model, parse_channels(args.channels, model.channels(args.layer))


def measure_stream(args) -> dict:
    """Stream ``args.measure`` images of the folder through ``top_patches``: images/s and
    this process's peak resident memory."""
    from featviz.photos import iter_images
    from featviz.top_patches import top_patches
    model, channels = _setup(args)
    folder = make_folder(FOLDER / str(args.measure), args.measure)
    warm = list(itertools.islice(iter_images(folder, args.size), args.batch))
    top_patches(model, warm, args.layer, channels, k=args.k, size=args.size, batch=args.batch,
                progress=False)  # compiled outside the timing
    began = time.perf_counter()
    found = top_patches(model, iter_images(folder, args.size), args.layer, channels, k=args.k,
                        size=args.size, batch=args.batch, progress=False)
    seconds = time.perf_counter() - began
    return {"images": found.n_images, "seconds": round(seconds, 2),
            "images_per_s": round(found.n_images / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def measure_floor(args, batches: int = 24) -> dict:
    """The same jitted batch function on ``batches`` batches decoded beforehand: images/s."""
    from featviz.photos import iter_images, padded_batch
    from featviz.top_patches import _batch_extremes_fn
    model, channels = _setup(args)
    folder = make_folder(FOLDER / "1000", 1000)
    images = np.stack([im for _, im in itertools.islice(iter_images(folder, args.size),
                                                        batches * args.batch)])
    fn = _batch_extremes_fn(model, args.layer, args.k)
    ids = np.asarray(channels)
    decoded = [padded_batch(images[i:i + args.batch], args.batch)
               for i in range(0, len(images), args.batch)]
    np.asarray(fn(model.params, decoded[0], args.batch, ids)[0][0])  # compile
    began = time.perf_counter()
    for pixels in decoded:
        (values, _), _ = fn(model.params, pixels, args.batch, ids)
        np.asarray(values)
    seconds = time.perf_counter() - began
    return {"images": len(images), "images_per_s": round(len(images) / seconds, 1)}


def _in_fresh_process(args, flag: str, value) -> dict:
    command = [sys.executable, __file__, flag, str(value), "--layer", args.layer, "--channels",
               args.channels, "--k", str(args.k), "--size", str(args.size),
               "--batch", str(args.batch)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000", help="images per run, comma-separated")
    ap.add_argument("--layer", default="blocks_8")
    ap.add_argument("--channels", default="0-15")
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--measure", type=int, help=argparse.SUPPRESS)  # one run, in this process
    ap.add_argument("--floor", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure_stream(args)))
        return
    if args.floor:
        print(json.dumps(measure_floor(args)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        make_folder(FOLDER / str(n), n)
    floors = [_in_fresh_process(args, "--floor", 1)]
    runs = [_in_fresh_process(args, "--measure", n) for n in sizes]
    floors.append(_in_fresh_process(args, "--floor", 1))  # before and after: a shared machine
    floor = max(f["images_per_s"] for f in floors)  # the stricter comparison
    for run in runs:
        run["share_of_floor"] = round(run["images_per_s"] / floor, 3)
    import jax
    print(json.dumps({"device": str(jax.devices()[0]), "cpus": os.cpu_count(),
                      "layer": args.layer, "channels": args.channels, "k": args.k,
                      "size": args.size, "batch": args.batch,
                      "floor_images_per_s": [f["images_per_s"] for f in floors], "runs": runs,
                      "rss_growth": round(runs[-1]["peak_rss_mb"] / runs[0]["peak_rss_mb"], 3)},
                     indent=1))


if __name__ == "__main__":
    main()
