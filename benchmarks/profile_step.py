"""Where the time of an ascent step goes: XLA's profiler over a few renders, each compiled
kernel's time attributed to the model or transform operation it came from. Prints JSON.

    python benchmarks/profile_step.py [--layer blocks_8] [--channels 8] [--steps 16] [--size 128]

``step_us_per_image`` is the sum of the kernels' times per image-step (both CPU threads
counted, so it can exceed the wall time); ``share`` lists the operations by their share of it,
"backward" meaning the gradient's side. The program is compiled as featviz compiles it.
"""
from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import tempfile
from pathlib import Path

import jax

import featviz
from featviz import objectives as obj

RUNTIME_EVENTS = ("Thunk", "$", "end:", "Pjit", "Common", "Parse", "Slinky", "Handle", "Alloc",
                  "Python")


def kernel_sources(hlo_text: str) -> dict:
    """Kernel (fusion or op) name -> the JAX operation it was made from, from the HLO metadata."""
    sources = {}
    for m in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", hlo_text, re.M):
        op = m.group(2)
        side = "backward" if "transpose(" in op else "forward"
        op = re.sub(r"(jit|jvp|vmap|transpose)\(|\)", "", op)
        op = re.sub(r"_run/|while/body/closed_call/|EfficientNetLite/|mbconv_\d+/", "", op)
        sources[m.group(1)] = f"{side} {op.strip('/') or '(renderer)'}"
    return sources


def kernel_times(trace_dir: Path) -> collections.Counter:
    trace = next(trace_dir.rglob("*.trace.json.gz"))
    events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    times = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(RUNTIME_EVENTS):
            times[e["name"]] += e.get("dur", 0)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="blocks_8")
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = featviz.load_model()
    renderer = featviz.Renderer(model, size=args.size, steps=args.steps, redirect_steps=0)
    channels = list(range(args.channels))
    objectives = [obj.channel(args.layer, c) for c in channels]
    keys = featviz.channel_keys(0, channels)
    sources = kernel_sources(renderer.compiled(objectives, keys).as_text())
    renderer(objectives, keys)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(args.repeats):
                renderer(objectives, keys)
        times = kernel_times(Path(tmp))
    image_steps = args.repeats * args.steps * args.channels
    by_source = collections.Counter()
    for kernel, us in times.items():
        by_source[sources.get(kernel, "other")] += us
    total = sum(by_source.values())
    print(json.dumps({
        "settings": vars(args) | {"backend": jax.default_backend()},
        "step_us_per_image": round(total / image_steps, 1),
        "share": {k: round(v / total, 4) for k, v in by_source.most_common(25)},
        "top_kernels": {k: [round(v / total, 4), sources.get(k, "other")]
                        for k, v in times.most_common(12)},
    }, indent=1))


if __name__ == "__main__":
    main()
