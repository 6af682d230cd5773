"""MaCo against the Fourier basis at equal steps: objective reached and pixel spread, with pictures.

Renders the same objectives of EfficientNet-Lite0 with each variant: channels 0..N-1 of a layer
(``head`` by default), or N ImageNet classes' logits (``logits``), one batch per layer. Per image,
on the tensor the renderer optimizes (a capped layer's pre-activation, ``head_conv`` for
``head``): the objective on the final image as rendered (untransformed, as
``RenderResult.final``), and on two views neither variant trains on: the image resized to the
network's 224 px and mirrored left-right; and the pixel standard deviation. Prints one JSON
object (medians over the images and the per-image values) and writes, per layer, a figure: one
row per variant shown, and for MaCo a row with its transparency map as alpha over white.

Variants: ``fourier`` (featviz's default: Fourier basis, Lucid's transforms), ``maco``
(``param.maco`` with its own transforms, ``transforms.maco_transforms``), and the two crossed
ones, ``maco-lucid`` (MaCo with Lucid's transforms) and ``fourier-crops`` (the Fourier basis with
MaCo's transforms); and ``maco``'s settings changed one at a time: ``maco-contrast1`` (MaCo's
own contrast), ``maco-crops50`` (crops of 50-100% of the side), ``maco-phase1`` and
``maco-phase4`` (Adam's step moves a phase by up to 0.05 and 0.2 radian instead of 0.1).

    python benchmarks/bench_maco.py [--layers head,logits] [--count 8] [--steps 256]
        [--size 128] [--seed 0] [--variants fourier,maco,maco-lucid,fourier-crops]
        [--figures docs/maco] [--figure-variants fourier,maco,fourier-crops]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import featviz
from featviz import objectives as obj, param, transforms
from featviz.image import make_grid, save_png, with_alpha

# Classes a reader can recognize: goldfish, ostrich, flamingo, lion, monarch butterfly,
# balloon, strawberry, volcano (then others, if more are asked for).
CLASSES = [1, 9, 130, 291, 323, 417, 949, 980, 71, 107, 145, 340, 388, 430, 511, 554]

VARIANTS = {  # name -> (parameterization of the size, transforms or None for its own)
    "fourier": (param.image, None),
    "maco": (param.maco, None),
    "maco-lucid": (param.maco, transforms.standard_transforms),
    "fourier-crops": (param.image, transforms.maco_transforms),
    # maco's settings, one at a time: MaCo's own contrast, wider crops, other phase steps
    "maco-contrast1": (functools.partial(param.maco, contrast=1.0), None),
    "maco-crops50": (param.maco, lambda: [transforms.random_crop((0.5, 1.0)),
                                          transforms.noise(0.02)]),
    "maco-phase1": (functools.partial(param.maco, phase_scale=1.0), None),
    "maco-phase4": (functools.partial(param.maco, phase_scale=4.0), None),
}


def objectives_for(layer: str, count: int):
    if layer == "logits":
        indices = CLASSES[:count]
        return indices, [obj.class_logit(k) for k in indices]
    indices = list(range(count))
    return indices, [obj.channel(layer, c) for c in indices]


def held_out_views(renderer, objectives, images):
    """Each objective, on the tensor the renderer optimizes (a capped layer's pre-activation),
    on its image resized to 224 px, and mirrored left-right."""
    n = len(images)
    big = jax.image.resize(jnp.asarray(images), (n, 224, 224, 3), "bilinear")
    stacked = obj.stack(objectives)
    reads = renderer.optimized_layers(stacked.layers)
    evaluate = jax.jit(jax.vmap(lambda o, a, img: o(a, img)))
    out = {}
    for name, batch in (("at_224px", big), ("mirrored", jnp.asarray(images)[:, :, ::-1])):
        acts = renderer.model.activations(np.asarray(batch), layers=sorted(set(reads.values())))
        acts = {layer: acts[read] for layer, read in reads.items()}
        out[name] = np.asarray(evaluate(stacked, acts, batch)).tolist()
    return out


def median(values) -> float:
    return float(statistics.median(values))


def run(model, variant: str, layer: str, args):
    make_param, make_transforms = VARIANTS[variant]
    p = make_param(args.size)
    is_maco = p.transforms is not None
    renderer = featviz.Renderer(model, size=args.size, steps=args.steps, param=p,
                                transforms=None if make_transforms is None else make_transforms(),
                                transparency=is_maco)
    indices, objectives = objectives_for(layer, args.count)
    began = time.perf_counter()
    result = renderer(objectives, featviz.channel_keys(args.seed, indices))
    seconds = time.perf_counter() - began
    spread = result.images.std(axis=(1, 2, 3))
    views = held_out_views(renderer, objectives, result.images)
    record = {
        "indices": indices,
        "final": result.final.tolist(), "final_median": median(result.final),
        **{k: v for k, v in views.items()},
        **{f"{k}_median": median(v) for k, v in views.items()},
        "pixel_std": spread.tolist(), "pixel_std_median": median(spread),
        "seconds": seconds, "compile_seconds": renderer.compile_seconds,
        "s_per_image_step": (seconds - renderer.compile_seconds) / (len(indices) * args.steps),
    }
    return record, result


SHORT = {"fourier": "F", "maco": "MaCo", "maco-lucid": "MaCo+L", "fourier-crops": "F+crops"}


def figure(model, layer, rows, path):
    """One row per variant (label: variant, class or channel, objective); MaCo's also with its
    transparency map as alpha over white."""
    tiles, labels = [], []
    for variant, (record, result) in rows.items():
        names = [model.class_names[k].split(",")[0][:9] if layer == "logits" else f"ch {k}"
                 for k in record["indices"]]
        tiles += list(result.images)
        labels += [f"{SHORT[variant]} {n} {v:.1f}" for n, v in zip(names, record["final"])]
        if variant == "maco":
            tiles += [with_alpha(img, t, background=1.0)
                      for img, t in zip(result.images, result.transparency)]
            labels += ["MaCo, alpha"] * len(names)
    save_png(make_grid(np.stack(tiles), columns=len(record["indices"]), labels=labels), path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="head,logits")
    ap.add_argument("--count", type=int, default=8, help="channels (or classes) per layer")
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default="fourier,maco,maco-lucid,fourier-crops")
    ap.add_argument("--figures", help="folder for <layer>.png figures (one per layer)")
    ap.add_argument("--figure-variants", default="fourier,maco,fourier-crops",
                    help="the variants the figures show")
    args = ap.parse_args()
    model = featviz.load_model()
    report = {
        "hardware": {"machine": platform.machine(), "processor": platform.processor(),
                     "cpus": os.cpu_count(), "jax": jax.__version__,
                     "jax_backend": jax.default_backend()},
        "settings": {k: getattr(args, k) for k in ("layers", "count", "steps", "size", "seed")},
        "results": {},
    }
    for layer in args.layers.split(","):
        rows = {}
        for variant in args.variants.split(","):
            rows[variant] = run(model, variant, layer, args)
            report["results"][f"{layer}/{variant}"] = rows[variant][0]
            print(json.dumps({f"{layer}/{variant}": {k: v for k, v in rows[variant][0].items()
                                                     if k.endswith(("median", "seconds"))}}),
                  flush=True)
        if args.figures:
            shown = {v: rows[v] for v in args.figure_variants.split(",") if v in rows}
            figure(model, layer, shown, Path(args.figures) / f"{layer}.png")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
