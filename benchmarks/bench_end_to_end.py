"""Wall time from process start to PNGs on disk, featviz (empty and warm compile cache) and
lucent side by side in one run, for the jobs people run interactively. Prints JSON.

    python benchmarks/bench_end_to_end.py                       # 8x32, 8x256, 64x128 on blocks_8
    python benchmarks/bench_end_to_end.py --jobs head1280x512   # all of head at 512 steps (GPU)

Each featviz run is a new process (``python -m featviz``): "cold" with a new, empty
compilation cache, "warm" with the cache the cold run filled and another seed (steps, seed,
learning rate and channels are data, so the warm run loads the cold run's program). lucent runs
through shared/peers/lucent (set up by its setup.sh); with --featviz-only it is skipped. Compile,
compute and write seconds come from featviz's results.json; FLOP utilization is XLA's count of
one ascent step times the image-steps, over the compute seconds and the measured matmul peak.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_scale import PEER, matmul_peak_flops, step_flops

JOBS = {  # name: (layer, channels, steps, atlas?)
    "8x32": ("blocks_8", 8, 32, False),
    "8x256": ("blocks_8", 8, 256, False),
    "64x128": ("blocks_8", 64, 128, False),
    "head1280x512": ("head", 1280, 512, True),
}
SIZE = 128


def timed(argv, env=None) -> float:
    began = time.perf_counter()
    run = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - began
    if run.returncode != 0:
        raise RuntimeError(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "failed")
    return seconds


def featviz_run(job: str, cache: Path, out: Path, seed: int) -> dict:
    layer, n, steps, atlas = JOBS[job]
    common = ["--layer", layer, "--channels", f"0-{n - 1}", "--steps", str(steps),
              "--size", str(SIZE), "--seed", str(seed), "--quiet"]
    argv = [sys.executable, "-m", "featviz"] + (
        ["atlas"] + common + ["--out", str(out / "atlas.png")] if atlas
        else ["render"] + common + ["--out", str(out)])
    env = dict(os.environ, FEATVIZ_CACHE_DIR=str(cache), JAX_COMPILATION_CACHE_DIR="")
    wall = timed(argv, env)
    results = json.loads(((out / "atlas_channels") if atlas else out).joinpath("results.json")
                         .read_text())
    return {"wall_s": round(wall, 2), "timing": results.get("timing"),
            "rendering_s": results.get("seconds")}


def lucent_run(job: str, out: Path) -> float:
    layer, n, steps, _ = JOBS[job]
    return timed(["bash", str(PEER), f"_{layer}" if layer != "head" else "_bn1", "0", str(n),
                  str(steps), str(SIZE), "1", str(out)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="8x32,8x256,64x128",
                        help=f"comma-separated, from: {', '.join(JOBS)}")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--featviz-only", action="store_true")
    parser.add_argument("--json-out", help="also write the JSON document to this file")
    args = parser.parse_args()
    jobs = args.jobs.split(",")
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        parser.error(f"unknown job {unknown[0]!r}; choose from {', '.join(JOBS)}")

    import jax

    import featviz

    device = jax.devices()[0]
    model = featviz.load_model()
    peak = matmul_peak_flops(device)
    report = {"hardware": {"platform": device.platform, "device": device.device_kind,
                           "cpus": os.cpu_count(), "machine": platform.machine(),
                           "jax": jax.__version__, "matmul_peak_gflops": round(peak / 1e9, 1)},
              "size": SIZE, "jobs": {}}
    for job in jobs:
        layer, n, steps, _ = JOBS[job]
        per_step = step_flops(model, layer, SIZE, 8) / 8
        runs: dict = {"featviz_cold": [], "featviz_warm": [], "lucent": []}
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                runs["featviz_cold"].append(featviz_run(job, tmp / "cache", tmp / "cold", seed=0))
                runs["featviz_warm"].append(featviz_run(job, tmp / "cache", tmp / "warm", seed=1))
                if not args.featviz_only:
                    try:
                        runs["lucent"].append({"wall_s": round(lucent_run(job, tmp / "lucent"), 2)})
                    except (RuntimeError, OSError) as err:
                        runs["lucent"].append({"error": str(err)})
        entry = {"layer": layer, "channels": n, "steps": steps}
        for name, results in runs.items():
            walls = [r["wall_s"] for r in results if "wall_s" in r]
            entry[name] = {"runs": results,
                           "median_wall_s": statistics.median(walls) if walls else None}
        for name in ("featviz_cold", "featviz_warm"):
            timing = [r["timing"] for r in runs[name] if r.get("timing")]
            if timing:
                compute = statistics.median(t["compute"] for t in timing)
                entry[name]["median_compile_s"] = statistics.median(t["compile"] for t in timing)
                entry[name]["flop_utilization"] = round(per_step * n * steps / compute / peak, 4)
            if entry["lucent"]["median_wall_s"] and entry[name]["median_wall_s"]:
                entry[f"lucent_over_{name}"] = round(
                    entry["lucent"]["median_wall_s"] / entry[name]["median_wall_s"], 2)
        report["jobs"][job] = entry
    text = json.dumps(report, indent=1)
    print(text)
    if args.json_out:
        target = Path(args.json_out)
        with tempfile.NamedTemporaryFile("w", dir=target.parent or ".", delete=False) as f:
            f.write(text)
        os.replace(f.name, target)


if __name__ == "__main__":
    main()
