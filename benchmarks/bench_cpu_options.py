"""XLA:CPU options for the render program, timed side by side in one process: XLA's defaults
(matmuls through YNNPACK, what featviz uses) against XLA's own matmul kernels
(``FEATVIZ_CPU_MATMULS=xla``), rounds interleaved. Prints JSON: seconds per
image-step for each (median and all rounds), their ratio, and the compile seconds.

    python benchmarks/bench_cpu_options.py [--model efficientnet-lite0] [--layer blocks_8]
        [--channels 8] [--steps 64] [--size 128] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax

import featviz
from featviz import objectives as obj

VARIANTS = {"xla_default": "", "ynn_off": "xla"}  # FEATVIZ_CPU_MATMULS


def renderer_with(matmuls: str, model, args):
    """A renderer whose program is compiled with ``FEATVIZ_CPU_MATMULS=matmuls``."""
    os.environ["FEATVIZ_CPU_MATMULS"] = matmuls
    renderer = featviz.Renderer(model, size=args.size, steps=args.steps)
    objs = [obj.channel(args.layer, c) for c in range(args.channels)]
    keys = featviz.channel_keys(0, range(args.channels))
    renderer(objs, keys, steps=1)  # compiles
    return renderer, objs, keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--layer", default="blocks_8")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    model = featviz.load_model(args.model)
    runs = {name: renderer_with(options, model, args) for name, options in VARIANTS.items()}
    seconds: dict[str, list] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, (renderer, objs, keys) in runs.items():
            began = time.perf_counter()
            renderer(objs, keys)
            seconds[name].append((time.perf_counter() - began) / (args.channels * args.steps))
    median = {name: statistics.median(s) for name, s in seconds.items()}
    print(json.dumps({
        "machine": f"{platform.machine()} {jax.devices()[0].device_kind}, jax {jax.__version__}",
        "job": vars(args),
        "s_per_image_step": {name: {"median": round(median[name], 5),
                                    "rounds": [round(s, 5) for s in seconds[name]]}
                             for name in VARIANTS},
        "ynn_off_over_default": round(median["ynn_off"] / median["xla_default"], 3),
        "compile_seconds": {name: round(r.compile_seconds, 2) for name, (r, _, _) in runs.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
