"""featviz vs lucent, side by side in one run: seconds per image-step and image quality.

Both render the same channels of EfficientNet-Lite0 with the same settings (steps, size,
batched channels, Lucid's default parameterization and transforms, Adam 0.05), on the same
tensor: a capped layer's pre-activation where featviz optimizes that (``head`` ->
``head_conv``, lucent's ``_bn1``). Quality is the channel's mean value on that tensor when
each tool's saved PNG is fed back through the model without any transform, and the PNGs'
pixel standard deviation (washed-out grey images have a low one). Prints one JSON object.

    python benchmarks/bench_vs_lucent.py [--layer blocks_8] [--channels 8] [--steps 256]
        [--size 128] [--repeats 3] [--lucent-venv /tmp/lucent-peer] [--out /tmp/bench]
        [--figure docs/vs_lucent.png]

The peer is set up once with shared/peers/lucent/setup.sh (a PyTorch CPU environment).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import jax
import numpy as np

import featviz
from featviz import objectives as obj
from featviz.image import load_image, make_grid, save_png

PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "lucent" / "run.sh"
# featviz layer -> the reference network's module (otherwise "_" + the layer's name)
LUCENT_MODULES = {"stem_conv": "_bn0", "head_conv": "_bn1", "logits": "_fc"}


def timed_featviz(renderer, layer, channels):
    objs, keys = [obj.channel(layer, c) for c in channels], featviz.channel_keys(0, channels)
    t0 = time.perf_counter()
    result = renderer(objs, keys)
    return time.perf_counter() - t0, result


def timed_lucent(module, channels, steps, size, out_dir, venv):
    cmd = ["bash", str(PEER), module, str(channels[0]), str(len(channels)), str(steps),
           str(size), "1", str(out_dir), venv]
    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    return json.loads(line.splitlines()[-1])["seconds"]


def activation_of_pngs(model, layer, channels, paths):
    images = np.stack([load_image(p) for p in paths])
    values = np.asarray(jax.jit(model.activations)(images)[layer])
    means = values.mean(axis=tuple(range(1, values.ndim - 1)))  # over positions, if any
    return [float(means[i, c]) for i, c in enumerate(channels)]


def pixel_std(paths) -> float:
    """The median over images of each PNG's pixel standard deviation (values in [0, 1])."""
    return statistics.median(float(load_image(p).std()) for p in paths)


def side_by_side(paths, activations, path):
    """featviz's images above lucent's, each labeled with the activation it drives."""
    tiles = [load_image(p) for name in ("featviz", "lucent") for p in paths[name]]
    labels = [f"{name} {a:.1f}" for name in ("featviz", "lucent") for a in activations[name]]
    save_png(make_grid(np.stack(tiles), columns=len(paths["featviz"]), labels=labels), path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="blocks_8")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lucent-venv", default="/tmp/lucent-peer")
    ap.add_argument("--out", default="/tmp/featviz-bench")
    ap.add_argument("--figure", help="also write the side-by-side picture to this PNG")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    channels = list(range(args.channels))
    model = featviz.load_model()
    renderer = featviz.Renderer(model, size=args.size, steps=args.steps)
    measured = renderer.optimized_layers([args.layer])[args.layer]
    module = LUCENT_MODULES.get(measured, f"_{measured}")
    paths = {"featviz": [out / f"featviz_{args.layer}_{c}.png" for c in channels],
             "lucent": [out / f"lucent_{module}_{c}.png" for c in channels]}
    first, result = timed_featviz(renderer, args.layer, channels)  # includes compilation
    for image, path in zip(result.images, paths["featviz"]):
        save_png(image, path)
    ours, theirs = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        ours.append(timed_featviz(renderer, args.layer, channels)[0])
        theirs.append(timed_lucent(module, channels, args.steps, args.size, out,
                                   args.lucent_venv))
    image_steps = len(channels) * args.steps
    ours_act = activation_of_pngs(model, measured, channels, paths["featviz"])
    theirs_act = activation_of_pngs(model, measured, channels, paths["lucent"])
    ratios = [a / b for a, b in zip(ours_act, theirs_act)]
    report = {
        "hardware": {"machine": platform.machine(), "processor": platform.processor(),
                     "cpus": __import__("os").cpu_count(), "jax_backend": jax.default_backend(),
                     "jax_devices": [str(d) for d in jax.devices()]},
        "settings": {"layer": args.layer, "measured_on": measured, "lucent_module": module,
                     "channels": len(channels), "steps": args.steps, "size": args.size,
                     "batched": True},
        "featviz": {"s_per_image_step_median": statistics.median(ours) / image_steps,
                    "first_call_s_including_compile": first, "runs_s": ours},
        "lucent": {"s_per_image_step_median": statistics.median(theirs) / image_steps,
                   "runs_s": theirs},
        "speedup_median": statistics.median(theirs) / statistics.median(ours),
        "speedup_including_compile": statistics.median(theirs) / first,
        "activation": {"featviz": ours_act, "lucent": theirs_act, "ratio": ratios,
                       "ratio_median": statistics.median(ratios),
                       "ratio_min": min(ratios)},
        "pixel_std_median": {name: pixel_std(paths[name]) for name in paths},
    }
    if args.figure:
        side_by_side(paths, report["activation"], args.figure)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
