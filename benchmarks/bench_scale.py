"""Throughput of the engine against the hardware, for 1, 8, 64 and 512 channels at once.

For each batch size: image-steps per second, seconds for the whole layer at --layer-steps,
the compiled program's memory (XLA's memory analysis; on GPUs also the device's peak), and FLOP
utilization (XLA's cost analysis of one ascent step divided by the measured time, against the
device's measured matmul peak). With --lucent, the same run times lucent's batched render at
8 channels for the ratio. Prints one JSON object.

    python benchmarks/bench_scale.py [--layer blocks_8] [--size 128] [--steps 16]
        [--batches 1,8,64,512] [--layer-steps 512] [--redirect-steps 8] [--devices all] [--lucent]

The first --redirect-steps steps of a render (default: featviz's 8) take Lucid's redirected
rectifier gradient, which costs about 2.4x a plain step on a CPU; for the steady-state rate of
a short run, pass --redirect-steps 0.

On a GPU machine: `pip install -e . "jax[cuda12]"` then the same command (the head layer's 1280
channels at 512 steps: `--layer head --batches 1280 --steps 512`).
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import featviz
from featviz import objectives as obj
from featviz.engine import segment_loop

PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "lucent" / "run.sh"


def matmul_peak_flops(device, n: int = 4096, repeats: int = 5) -> float:
    """Measured f32 matmul FLOP/s on ``device`` (the practical peak)."""
    a = jax.device_put(jnp.ones((n, n), jnp.float32), device)
    mm = jax.jit(lambda x: x @ x)
    mm(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
        mm(a).block_until_ready()
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0)


def flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", 0.0))


def step_flops(model, layer, size, batch):
    """FLOPs of one ascent step: XLA counts a rolled segment's loop body once (and a "host"
    segment is one step), so the one-step program minus its closing forward pass."""
    objs = obj.stack([obj.channel(layer, c % model.channels(layer)) for c in range(batch)])
    keys = featviz.channel_keys(0, range(batch))
    renderer = featviz.Renderer(model, size=size, steps=1, redirect_steps=0)
    program = flops(renderer.compiled(objs, keys))
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    forward = flops(jax.jit(lambda x: model.activations(x, layers=[layer])).lower(images).compile())
    return program - forward


def measure(model, layer, size, steps, batch, devices, redirect_steps):
    n = model.channels(layer)
    channels = [c % n for c in range(batch)]
    renderer = featviz.Renderer(model, size=size, steps=steps, devices=devices,
                                redirect_steps=redirect_steps)
    objs, keys = [obj.channel(layer, c) for c in channels], featviz.channel_keys(0, range(batch))
    t0 = time.perf_counter()
    renderer(objs, keys)
    first = time.perf_counter() - t0
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        renderer(objs, keys)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    memory = renderer.compiled(objs, keys).memory_analysis()
    return {"channels": batch, "compile_and_first_run_s": round(first, 3),
            "run_s": round(seconds, 3),
            "image_steps_per_s": batch * steps / seconds,
            "program_memory_bytes": memory.temp_size_in_bytes + memory.argument_size_in_bytes
            + memory.output_size_in_bytes}


def lucent_image_steps_per_s(layer, size, steps, channels=8):
    cmd = ["bash", str(PEER), f"_{layer}", "0", str(channels), str(steps), str(size), "1",
           "/tmp/featviz-bench-scale-lucent"]
    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    return channels * steps / json.loads(line.splitlines()[-1])["seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="blocks_8")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batches", default="1,8,64,512")
    ap.add_argument("--layer-steps", type=int, default=512)
    ap.add_argument("--redirect-steps", type=int, default=8)
    ap.add_argument("--devices", default=None, help="'all' to shard over every local device")
    ap.add_argument("--lucent", action="store_true", help="also time lucent (8 channels)")
    args = ap.parse_args()
    model = featviz.load_model()
    devices = jax.local_devices() if args.devices == "all" else None
    device = jax.devices()[0]
    peak = matmul_peak_flops(device)
    report = {"date": datetime.date.today().isoformat(),
              "hardware": {"device": device.device_kind, "platform": device.platform,
                           "devices": len(devices or [device]), "host": platform.processor()
                           or platform.machine(), "matmul_peak_flops": peak},
              "settings": {"layer": args.layer, "size": args.size, "steps": args.steps,
                           "redirect_steps": args.redirect_steps,
                           "segment_form": segment_loop(model, device.platform, args.size)},
              "runs": []}
    n_layer = model.channels(args.layer)
    for batch in [int(b) for b in args.batches.split(",")]:
        run = measure(model, args.layer, args.size, args.steps, batch, devices,
                      args.redirect_steps)
        per_step = step_flops(model, args.layer, args.size, batch)
        run["step_flops_per_image"] = per_step / batch
        run["flop_utilization"] = (per_step * args.steps / run["run_s"]
                                   / (peak * len(devices or [1])))
        run["layer_seconds_estimate"] = n_layer * args.layer_steps / run["image_steps_per_s"]
        if device.platform == "gpu":
            run["device_peak_bytes"] = device.memory_stats().get("peak_bytes_in_use")
        report["runs"].append(run)
        print(json.dumps(run), flush=True)
    if args.lucent:
        theirs = lucent_image_steps_per_s(args.layer, args.size, args.steps)
        ours = next((r for r in report["runs"] if r["channels"] == 8), report["runs"][0])
        report["lucent_image_steps_per_s_8_channels"] = theirs
        report["speedup_vs_lucent_8_channels"] = ours["image_steps_per_s"] / theirs
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
