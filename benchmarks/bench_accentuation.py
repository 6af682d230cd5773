"""featviz's feature accentuation against Horama's ``accentuation``, side by side in one run:
how far each raises the unit, how far each moves from the photo, and seconds per channel.

The same photo (scikit-image's chelsea, its centre square at ``--size`` px), EfficientNet-Lite0
weights, layer, channels and step count. featviz renders all channels in one batch with its
defaults (``featviz.views.accentuation``); Horama runs through shared/peers/horama (``run.sh
accentuation``: one channel per call, Horama's own settings). Both sets of result PNGs, and the
photo Horama was handed (its ``seed.png``), are scored by one scorer, featviz's network at the
PNG's own size:

- activation: the channel's mean at the layer;
- distance: ``|f(png) - f(seed)| / |f(seed)|`` at ``--distance-layer`` (featviz's default
  penalty layer, blocks_3), and the pixels' RMS difference from the seed (values in [0, 1]).

Horama saves its PNGs contrast-stretched (clipped at the 1st/99th percentile, then min-max, as
its plots do); they are scored as saved, and its unstretched images (``<layer>_<c>_rgb.npy``)
are scored too, under ``horama_unstretched``. Seconds per channel: featviz's render (compilation
included) and Horama's calls, neither counting start-up or model loading; the machine's load
average is printed beside them. Prints one JSON object, with the floors (featviz raises each
unit at least as much, moves no farther by either distance, and takes less time per channel),
and writes ``--out``/compare.png: the seed, then featviz's row, then Horama's.

    python benchmarks/bench_accentuation.py [--layer blocks_8] [--channels 0-3] [--steps 64]
        [--size 128] [--out /tmp/featviz-accentuation] [--peer-out /tmp/horama-out/acc]
"""
from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import subprocess
from pathlib import Path

import jax
import numpy as np
from bench_vs_horama import HORAMA_LAYERS, PEER  # the peer and its layer names, shared
from skimage import data

import featviz
from featviz.channels import parse_channels
from featviz.image import load_image, make_grid, save_png
from featviz.photos import square_resize
from featviz.views.accentuation import accentuate, relative_distance

SPATIAL_LAYERS = sorted(set(HORAMA_LAYERS) - {"logits"})  # accentuation needs a spatial map


def featviz_run(model, layer: str, channels: list[int], args) -> tuple[list[Path], float]:
    """featviz's accentuations, saved as PNGs in ``--out``; and its seconds per channel."""
    photo = square_resize(data.chelsea().astype(np.float32) / 255.0, args.size)
    result = accentuate(model, photo, layer, channels, steps=args.steps, size=args.size)
    out = Path(args.out)
    save_png(result.photo, out / "photo.png")
    paths = [save_png(image, out / f"{layer}_{c}.png") for c, image in zip(channels, result.images)]
    return paths, result.seconds / len(channels)


def horama_run(layer: str, channels: list[int], args) -> dict:
    """Horama's accentuations in ``--peer-out`` (``run.sh``); its JSON report."""
    command = [str(PEER / "run.sh"), "accentuation", HORAMA_LAYERS[layer], str(channels[0]),
               str(len(channels)), str(args.steps), str(args.size), args.peer_out]
    run = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


class Scorer:
    """Each image's channel mean at ``layer`` and its distances to ``seed``."""

    def __init__(self, model, layer: str, distance_layer: str, seed: np.ndarray):
        self.model, self.layer, self.distance_layer, self.seed = model, layer, distance_layer, seed
        self.seed_acts = self._acts(seed[None])

    def _acts(self, images):
        acts = self.model.activations(images, layers=[self.layer, self.distance_layer])
        return {k: np.asarray(v) for k, v in acts.items()}

    def __call__(self, images, channels: list[int]) -> dict:
        acts = self._acts(np.asarray(images, np.float32))
        means = acts[self.layer].mean(axis=(1, 2))
        return {"activation": [float(means[i, c]) for i, c in enumerate(channels)],
                "distance": relative_distance(acts[self.distance_layer],
                                              self.seed_acts[self.distance_layer][0]).tolist(),
                "pixel_rmse": np.sqrt(((images - self.seed) ** 2).mean((1, 2, 3))).tolist()}


def floors(ours: dict, theirs: dict) -> dict:
    """Whether featviz raises every unit at least as much, moves no farther by either distance,
    and takes less time per channel."""
    def every(key: str, holds) -> bool:
        return all(holds(a, b) for a, b in zip(ours[key], theirs[key]))
    return {"activation": every("activation", operator.ge),
            "distance": every("distance", operator.le),
            "pixel_rmse": every("pixel_rmse", operator.le),
            "s_per_channel": ours["s_per_channel"] < theirs["s_per_channel"]}


def main():
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--layer", default="blocks_8", choices=SPATIAL_LAYERS)
    p.add_argument("--channels", default="0-3")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--distance-layer", default="blocks_3")
    p.add_argument("--out", default="/tmp/featviz-accentuation")
    p.add_argument("--peer-out", default="/tmp/horama-out/acc")
    args = p.parse_args()
    model = featviz.load_model()
    channels = parse_channels(args.channels, model.channels(args.layer), args.layer)
    load = {"before": os.getloadavg()[0]}
    ours_paths, ours_seconds = featviz_run(model, args.layer, channels, args)
    load["between"] = os.getloadavg()[0]
    peer = horama_run(args.layer, channels, args)
    load["after"] = os.getloadavg()[0]
    peer_out = Path(args.peer_out)
    seed = load_image(peer_out / "seed.png")
    score = Scorer(model, args.layer, args.distance_layer, seed)
    horama_names = [f"{HORAMA_LAYERS[args.layer]}_{c}" for c in channels]
    ours_images = np.stack([load_image(path) for path in ours_paths])
    horama_images = np.stack([load_image(peer_out / f"{n}.png") for n in horama_names])
    unstretched = np.stack([np.clip(np.load(peer_out / f"{n}_rgb.npy"), 0, 1)
                            for n in horama_names])
    ours = {**score(ours_images, channels), "s_per_channel": ours_seconds}
    theirs = {**score(horama_images, channels), "s_per_channel": peer["s_per_channel"]}
    save_png(make_grid(np.concatenate([seed[None], ours_images, seed[None], horama_images]),
                       columns=len(channels) + 1,
                       labels=["seed"] + [f"featviz {c}" for c in channels]
                       + ["seed"] + [f"Horama {c}" for c in channels]),
             Path(args.out) / "compare.png")
    featviz_photo = load_image(Path(args.out) / "photo.png")
    print(json.dumps({
        "hardware": {"machine": platform.machine(), "cpus": os.cpu_count(),
                     "jax": jax.__version__, "backend": jax.default_backend(),
                     "load_average_1min": load},
        "settings": {"layer": args.layer, "channels": channels, "steps": args.steps,
                     "size": args.size, "distance_layer": args.distance_layer},
        "seed_activation": [float(score.seed_acts[args.layer].mean((0, 1, 2))[c])
                            for c in channels],
        "photo_difference_rmse": float(np.sqrt(((featviz_photo - seed) ** 2).mean())),
        "featviz": ours, "horama": theirs,
        "horama_unstretched": score(unstretched, channels),
        "floors": floors(ours, theirs),
        "pngs": {"featviz": [str(p) for p in ours_paths], "horama": str(peer_out),
                 "compare": str(Path(args.out) / "compare.png")},
    }, indent=1))


if __name__ == "__main__":
    main()
