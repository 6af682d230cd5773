"""The activation atlas end to end, checked on the PNG it wrote. Prints JSON.

Runs ``featviz activation-atlas`` (under ``/usr/bin/time -v`` where it exists: wall clock,
CPU seconds and peak memory) with an empty compilation cache unless ``--warm-cache``, then
reads back:

- the atlas PNG, cut into its tiles, each fed through the model: the cosine at the layer
  between the tile's spatially averaged activation and its cell's mean activation, recomputed
  from the saved samples and layout (not the JSON's numbers), min and median over the cells;
- the cell directions (the cells' mean activations): mean cosine between 4-neighbouring
  non-empty cells against that of random pairs of non-empty cells, and the same for the
  tiles' activations ("neighbouring cells look related");
- the seconds of each phase, from the atlas's JSON.

    python benchmarks/bench_activation_atlas.py [--layer blocks_8] [--grid 20]
        [--out /tmp/aa/atlas.png] [--check-only] [--warm-cache] [-- extra CLI options]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import featviz
from featviz.views.activation_atlas import image_cosines


def run_command(args, extra: list[str]) -> dict:
    """Run the command; its wall seconds and, under /usr/bin/time, peak resident memory."""
    command = [str(Path(sys.executable).with_name("featviz")), "activation-atlas", "--layer",
               args.layer, "--grid", str(args.grid), "--out", str(args.out), "--quiet", *extra]
    timed = Path("/usr/bin/time").exists()
    env = dict(os.environ)
    if not args.warm_cache:
        env["FEATVIZ_CACHE_DIR"] = tempfile.mkdtemp(prefix="featviz-cold-")
    began = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-v", *command] if timed else command, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - began
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    report = {"wall_seconds": round(wall, 1), "printed": done.stdout.strip()}
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if peak:
        report["peak_rss_gib"] = round(int(peak.group(1)) / 2**20, 2)
    cpu = re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", done.stderr)
    if cpu:
        report["cpu_seconds"] = round(sum(map(float, cpu)), 1)
    return report


def newest(folder: Path, pattern: str) -> Path:
    return max(folder.glob(pattern), key=lambda p: p.stat().st_mtime_ns)


def cell_data(out: Path, doc: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's mean activation from the saved samples and layout, and its PNG tile."""
    folder = out.with_name(out.stem + "_atlas")
    acts = np.load(newest(folder, "samples_*.npz"))["acts"]
    layout = np.load(newest(folder, "layout_*.npz"))["layout"]
    grid, tile = doc["grid"], doc["tile"]
    bins = np.minimum(np.floor(layout * grid).astype(int), grid - 1)
    png = np.asarray(Image.open(out).convert("RGB"))
    means, tiles = [], []
    for cell in doc["cells"]:
        r, c = cell["row"], cell["col"]
        members = (bins[:, 1] == r) & (bins[:, 0] == c)
        assert members.sum() == cell["count"], cell
        means.append(acts[members].mean(axis=0))
        tiles.append(png[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile])
    return np.stack(means), np.stack(tiles)


def neighbours_vs_random(doc: dict, vectors: np.ndarray, seed: int = 0) -> dict:
    """Mean cosine of 4-neighbouring cells' vectors and of random pairs of cells'."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    where = {(cell["row"], cell["col"]): i for i, cell in enumerate(doc["cells"])}
    pairs = [(i, where[r + dr, c + dc]) for (r, c), i in where.items()
             for dr, dc in ((0, 1), (1, 0)) if (r + dr, c + dc) in where]
    rng = np.random.default_rng(seed)
    random = rng.choice(len(unit), (2000, 2))
    random = random[random[:, 0] != random[:, 1]]
    return {"neighbour_pairs": len(pairs),
            "neighbours": round(float(np.mean([unit[i] @ unit[j] for i, j in pairs])), 3),
            "random_pairs": round(float(np.mean((unit[random[:, 0]] * unit[random[:, 1]])
                                                .sum(-1))), 3)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layer", default="blocks_8")
    parser.add_argument("--grid", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("/tmp/aa/atlas.png"))
    parser.add_argument("--check-only", action="store_true", help="check an atlas already made")
    parser.add_argument("--warm-cache", action="store_true",
                        help="use featviz's compilation cache (default: an empty one)")
    args, extra = parser.parse_known_args()
    report = {} if args.check_only else run_command(args, [e for e in extra if e != "--"])
    doc = json.loads(args.out.with_suffix(".json").read_text())
    model = featviz.load_model(doc["model"])
    means, tiles = cell_data(args.out, doc)
    cosines = image_cosines(model, doc["layer"], tiles, means)
    tile_acts = np.asarray(model.activations(tiles / np.float32(255), layers=[doc["layer"]])
                           [doc["layer"]]).mean(axis=(1, 2))
    report.update({
        "layer": doc["layer"], "grid": doc["grid"], "samples": doc["samples"],
        "tile": doc["tile"], "steps": doc["render"]["steps"], "power": doc["power"],
        "cells": len(doc["cells"]), "seconds": doc["seconds"],
        "png_cosine": {"min": round(float(cosines.min()), 3),
                       "median": round(float(np.median(cosines)), 3),
                       "below_0.5": int((cosines < 0.5).sum())},
        "json_cosine_max_difference": round(float(np.abs(
            cosines - [c["cosine"] for c in doc["cells"]]).max()), 4),
        "cell_direction_similarity": neighbours_vs_random(doc, means),
        "icon_activation_similarity": neighbours_vs_random(doc, tile_acts),
        "cpus": os.cpu_count(), "load_average": [round(x, 1) for x in os.getloadavg()]})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
