"""The views of a unit beside its plain feature visualization: the negative and K diverse
images, on the final PNGs fed back through the model. Prints JSON.

- negative: the channel's mean activation on its negative image, on the grey image (0.5
  everywhere) and on its plain image;
- diverse: for K images of each unit with the diversity term (each weight given) and K seeds
  without it, the mean pairwise similarity of the K images (two measures: the cosine of their
  Gram matrices at the layer, Lucid's diversity measure, and the correlation of their pixels)
  and the mean activation, relative to the K seeds.

    python benchmarks/bench_unit_views.py [--layer blocks_8] [--channels 0-3] [--k 4]
        [--steps 128] [--size 128] [--weights 1,10,100]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

import featviz
from featviz import jobs
from featviz.channels import parse_channels
from featviz.config import RenderConfig
from featviz.image import load_image
from featviz.jobs import render_channels


def channel_values(model, layer, images, channels) -> np.ndarray:
    acts = np.asarray(model.activations(images, layers=[layer])[layer])
    return acts.mean((1, 2))[np.arange(len(channels)), channels]


def similarity(model, layer, images) -> tuple[float, float]:
    """Mean pairwise Gram cosine at ``layer`` and mean pairwise pixel correlation."""
    acts = np.asarray(model.activations(images, layers=[layer])[layer])
    flat = acts.reshape(len(images), -1, acts.shape[-1])
    grams = np.einsum("npc,npd->ncd", flat, flat).reshape(len(images), -1)
    grams /= np.linalg.norm(grams, axis=1, keepdims=True)
    pixels = images.reshape(len(images), -1)
    pixels = (pixels - pixels.mean(1, keepdims=True)) / pixels.std(1, keepdims=True)
    pairs = [(i, j) for i in range(len(images)) for j in range(i + 1, len(images))]
    gram = np.mean([grams[i] @ grams[j] for i, j in pairs])
    corr = np.mean([(pixels[i] * pixels[j]).mean() for i, j in pairs])
    return float(gram), float(corr)


def rendered(model, layer, channels, config, folder) -> dict:
    result = render_channels(model, layer, channels, folder, config, progress=False)
    images = {c: [load_image(result.out_dir / r["png"])]
              + [load_image(result.out_dir / d["png"]) for d in r.get("diverse", [])]
              for c, r in result.records.items()}
    return images


def seeds(model, layer, channels, config, k, folder) -> dict:
    """K plain images per channel: one render per seed."""
    images = {c: [] for c in channels}
    for seed in range(k):
        for c, ims in rendered(model, layer, channels, config.replace(seed=seed),
                               Path(folder) / f"seed{seed}").items():
            images[c] += ims
    return images


def summary(model, layer, images: dict) -> dict:
    sims = [similarity(model, layer, np.stack(ims)) for ims in images.values()]
    values = [channel_values(model, layer, np.stack(ims), [c] * len(ims)).mean()
              for c, ims in images.items()]
    return {"gram_cosine": round(float(np.mean([s[0] for s in sims])), 4),
            "pixel_correlation": round(float(np.mean([s[1] for s in sims])), 4),
            "activation": round(float(np.mean(values)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="blocks_8")
    parser.add_argument("--channels", default="0-3")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--weights", default="1,10,100")
    args = parser.parse_args()
    model = featviz.load_model()
    channels = parse_channels(args.channels, model.channels(args.layer))
    config = RenderConfig(steps=args.steps, size=args.size)
    report: dict = {"machine": f"{jax.devices()[0].device_kind}, jax {jax.__version__}",
                    "job": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        plain = rendered(model, args.layer, channels, config, Path(tmp) / "plain")
        negative = rendered(model, args.layer, channels, config.replace(view="negative"),
                            Path(tmp) / "negative")
        grey = np.full((len(channels), args.size, args.size, 3), 0.5, np.float32)
        report["negative"] = {
            "on_negative": channel_values(model, args.layer, np.stack(
                [negative[c][0] for c in channels]), channels).round(3).tolist(),
            "on_grey": channel_values(model, args.layer, grey, channels).round(3).tolist(),
            "on_plain": channel_values(model, args.layer, np.stack(
                [plain[c][0] for c in channels]), channels).round(3).tolist()}
        base = summary(model, args.layer, seeds(model, args.layer, channels, config, args.k,
                                                Path(tmp) / "seeds"))
        report["diverse"] = {"k_seeds_without_the_term": base}
        for weight in (float(w) for w in args.weights.split(",")):
            jobs.DIVERSITY_WEIGHT = weight
            found = summary(model, args.layer, rendered(
                model, args.layer, channels, config.replace(diverse=args.k),
                Path(tmp) / f"diverse{weight:g}"))
            found["activation_vs_seeds"] = round(found["activation"] / base["activation"], 3)
            report["diverse"][f"weight {weight:g}"] = found
        report["seconds"] = round(time.perf_counter() - began, 1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
