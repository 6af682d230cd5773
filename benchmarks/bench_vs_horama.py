"""featviz's MaCo (and its Fourier default) against Horama's ``maco``, side by side in one run:
activation, plausibility and seconds per channel, with the pictures.

The same EfficientNet-Lite0 weights, the same channels, steps and size. Horama runs through
shared/peers/horama (``run.sh maco``; one objective per call, so channels one after another);
featviz renders all channels in one batch. Every image is scored from its saved PNG by featviz's
network (the weights Horama's reference model loads):

- activation: the channel's mean at the layer, on the PNG resized to the network's 224 px (the
  pre-activation for a capped layer such as ``head``, which is what both optimize);
- plausibility (MaCo's measure, Fel et al. 2023): the cosine similarity, in the penultimate
  layer (``head``, averaged over positions: the 1280 features the classifier reads), between the
  visualization and each of the unit's top natural images, averaged. The top natural images are
  the ``--top`` highest-scoring of ``--crops`` random crops (25-100% of the side) of the photos
  scikit-image ships; the same crops for both peers.

Prints one JSON object; with ``--figure`` writes a picture: per channel, featviz's image(s),
Horama's, and the top natural images.

    python benchmarks/bench_vs_horama.py [--layer head] [--channels 0-3] [--steps 128]
        [--size 128] [--variants maco,fourier,maco-crops25,maco-crops50]
        [--figure docs/maco/vs_horama.png] [--horama-out /tmp/horama-maco]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import featviz
from featviz import objectives as obj, transforms
from featviz.channels import parse_channels
from featviz.image import load_image, make_grid, save_png
from featviz.photos import sample_photos

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "horama"
HORAMA_LAYERS = {"blocks_8": "_blocks_8", "head": "_bn1", "logits": "_fc"}
PENULTIMATE = "head"


def natural_crops(count: int, size: int, seed: int) -> np.ndarray:
    """``count`` random square crops (25-100% of the shorter side) of the sample photos,
    resized to ``size``, from an explicit seed."""
    rng = np.random.default_rng(seed)
    photos = [image for _, image in sample_photos()]
    crops = []
    for i in range(count):
        image = photos[i % len(photos)]
        h, w = image.shape[:2]
        side = int(min(h, w) * rng.uniform(0.25, 1.0))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        patch = image[top:top + side, left:left + side]
        resized = jax.image.resize(jnp.asarray(patch), (size, size, 3), "linear", antialias=True)
        crops.append(np.asarray(resized))
    return np.stack(crops)


class Scorer:
    """A unit's activation and the penultimate features of a batch of images, at 224 px."""

    def __init__(self, model, layer: str):
        self.model, self.layer = model, layer
        self.read = model.pre_activations.get(layer, layer)

    def __call__(self, images) -> tuple[np.ndarray, np.ndarray]:
        images = jax.image.resize(jnp.asarray(images), (len(images), 224, 224, 3), "linear")
        acts = {}
        for start in range(0, len(images), 32):
            part = self.model.activations(images[start:start + 32],
                                          layers=sorted({self.read, PENULTIMATE}))
            for name, value in part.items():
                acts.setdefault(name, []).append(np.asarray(value))
        unit = np.concatenate(acts[self.read])
        unit = unit.mean(axis=(1, 2)) if unit.ndim == 4 else unit
        features = np.concatenate(acts[PENULTIMATE]).mean(axis=(1, 2))
        return unit, features / np.linalg.norm(features, axis=-1, keepdims=True)


# featviz's variants: a parameterization, and for some other transforms than its own
VARIANTS = {"maco": ("maco", None), "fourier": ("fourier", None),
            # MaCo with crops of Horama's scale: 25-30% of the side, resampled to the canvas
            "maco-crops25": ("maco", lambda: [transforms.random_crop((0.25, 0.3)),
                                              transforms.noise(0.02)]),
            "maco-crops50": ("maco", lambda: [transforms.random_crop((0.5, 1.0)),
                                              transforms.noise(0.02)])}


def featviz_images(model, layer: str, channels: list[int], args, variant: str):
    param, views = VARIANTS[variant]
    renderer = featviz.Renderer(model, param=param, size=args.size, steps=args.steps,
                                transforms=views() if views else None)
    objectives = [obj.channel(layer, c) for c in channels]
    keys = featviz.channel_keys(args.seed, channels)
    renderer(objectives, keys, steps=1)  # compile, not timed (Horama's timing excludes start-up)
    start = time.perf_counter()
    result = renderer(objectives, keys)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:  # scored from PNGs, as Horama's are
        paths = [save_png(im, Path(tmp) / f"{c}.png") for c, im in zip(channels, result.images)]
        images = np.stack([load_image(p) for p in paths])
    return images, seconds


def horama_images(layer: str, channels: list[int], args, out: Path):
    """Horama's images and seconds; a folder that holds this run's images already (same
    command) is reused."""
    command = [str(PEER / "run.sh"), "maco", HORAMA_LAYERS[layer], str(channels[0]),
               str(len(channels)), str(args.steps), str(args.size), str(out)]
    if args.horama_venv:
        command.append(args.horama_venv)
    record = out / "run.json"
    if not record.is_file() or json.loads(record.read_text())["command"] != command:
        line = subprocess.run(command, check=True, capture_output=True,
                              text=True).stdout.strip().splitlines()[-1]
        record.write_text(json.dumps({"command": command, "report": json.loads(line)}))
    report = json.loads(record.read_text())["report"]
    images = np.stack([load_image(out / f"{HORAMA_LAYERS[layer]}_{c}.png") for c in channels])
    return images, report["seconds"]


def scored(scorer: Scorer, images, channels, top_features, seconds) -> dict:
    unit, features = scorer(images)
    activation = [float(unit[i, c]) for i, c in enumerate(channels)]
    plausibility = [float((top_features[i] @ features[i]).mean()) for i in range(len(channels))]
    return {"activation": activation, "plausibility": plausibility,
            "activation_median": float(np.median(activation)),
            "plausibility_median": float(np.median(plausibility)),
            "s_per_channel": seconds / len(channels)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layer", default="head", choices=sorted(HORAMA_LAYERS))
    p.add_argument("--channels", default="0-3")
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default="maco,fourier",
                   help=f"featviz's variants, of {', '.join(VARIANTS)}")
    p.add_argument("--crops", type=int, default=600, help="natural crops searched")
    p.add_argument("--top", type=int, default=8, help="top natural images per unit")
    p.add_argument("--horama-venv", default=None)
    p.add_argument("--horama-out", type=Path, default=Path(tempfile.gettempdir()) / "horama-maco",
                   help="Horama's output folder (its PNGs and run.json kept there)")
    p.add_argument("--figure", type=Path, default=None)
    args = p.parse_args()
    model = featviz.load_model()
    channels = parse_channels(args.channels, model.channels(args.layer))
    scorer = Scorer(model, args.layer)
    crops = natural_crops(args.crops, 224, args.seed)
    crop_unit, crop_features = scorer(crops)
    top = [np.argsort(-crop_unit[:, c])[:args.top] for c in channels]
    top_features = [crop_features[t] for t in top]
    report = {"layer": args.layer, "channels": channels, "steps": args.steps, "size": args.size,
              "crops": args.crops, "top": args.top, "machine": platform.processor() or
              platform.machine(), "cores": os.cpu_count(), "devices": str(jax.devices()),
              "top_natural_activation_median": float(np.median(
                  [crop_unit[t, c].mean() for t, c in zip(top, channels)]))}
    pictures = {}
    for variant in args.variants.split(","):
        images, seconds = featviz_images(model, args.layer, channels, args, variant)
        report[f"featviz_{variant}"] = scored(scorer, images, channels, top_features, seconds)
        pictures[f"featviz {variant}"] = images
    images, seconds = horama_images(args.layer, channels, args, args.horama_out)
    report["horama_maco"] = scored(scorer, images, channels, top_features, seconds)
    pictures["horama maco"] = images
    print(json.dumps(report))
    if args.figure:
        save_figure(args.figure, pictures, crops, top, args.size)


def save_figure(path: Path, pictures: dict, crops, top, size: int) -> None:
    """One row per channel: each method's image, then the top natural images (smaller)."""
    rows, labels = [], []
    for i, t in enumerate(top):
        tiles = [im[i] for im in pictures.values()]
        naturals = jax.image.resize(jnp.asarray(crops[t[:4]]), (4, size, size, 3), "linear")
        rows.extend(tiles + [np.asarray(x) for x in naturals])
        labels.extend(list(pictures) + ["top natural"] * 4)
    grid = make_grid(np.stack(rows), columns=len(pictures) + 4, labels=labels)
    save_png(grid, path)


if __name__ == "__main__":
    main()
