"""Behaviour kept across a change: run a fixed set of renders, atlases and views through the
command line and record a SHA-256 of every file they write (PNGs and saved arrays; the JSON
records without their timings).

    python benchmarks/same_outputs.py --write before.json     # on the old commit
    python benchmarks/same_outputs.py --check before.json     # on the new one: exit 1 if any differ

Bit-for-bit equality holds on one machine with one JAX version; compare on the same machine.
``--env NAME=VALUE`` sets a variable for every command (``FEATVIZ_CPU_MATMULS=xla``: the CPU
matmul kernels featviz compiled with before it kept XLA's default). Prints JSON: the number of
files compared and those that differ.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.cbook

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
COMMON = ["--quiet", "--size", "64", "--steps", "24"]
JOBS = {
    "render": ["render", "--layer", "blocks_8", "--channels", "0-3", "--seed", "3", *COMMON],
    "render_head_post": ["render", "--layer", "head", "--channels", "5,9", "--activation",
                         "post", "--lr", "0.07", "--lr-ramp", "1,1", *COMMON],
    "render_maco": ["render", "--layer", "blocks_3", "--channels", "1", "--param", "maco",
                    *COMMON],
    "render_pixels": ["render", "--layer", "stem", "--channels", "14", "--param", "pixels",
                      *COMMON],
    "atlas": ["atlas", "--layer", "blocks_3", "--channels", "0-5", "--chunk", "3",
              "--columns", "3", *COMMON],
    "unit": ["unit", "--layer", "blocks_3", "--channel", "2", "--k", "4", "--steps", "16",
             "--size", "64", "--image-size", "96"],
    "activations": ["activations", PHOTO, "--layer", "blocks_3", "--channels", "0-7"],
    "deconvnet": ["project", PHOTO, "--layer", "blocks_8", "--channel", "5",
                  "--method", "deconvnet"],
    "guided": ["project", PHOTO, "--layer", "blocks_8", "--channel", "5", "--method", "guided"],
    "smoothgrad": ["saliency", PHOTO, "--method", "smoothgrad", "--samples", "4"],
    "gradcam": ["gradcam", PHOTO],
    "top_patches": ["top-patches", "--layer", "blocks_3", "--channels", "0-1", "--k", "4",
                    "--size", "96"],
}
# JSON fields that change from run to run, or whose format is not behaviour
_VOLATILE = {"seconds", "timing", "featviz", "settings"}


def _stable_json(text: str):
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return json.dumps(strip(json.loads(text)), sort_keys=True)


def digest(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".json":
        data = _stable_json(data.decode()).encode()
    return hashlib.sha256(data).hexdigest()


def run_jobs(workdir: Path, extra_env: dict) -> dict[str, str]:
    """Run every job into ``workdir``; returns relative path -> digest of each file written."""
    env = {**os.environ, "FEATVIZ_CACHE_DIR": "", **extra_env}
    for name, argv in JOBS.items():
        target = workdir / name
        is_file = argv[0] not in ("render", "top-patches")
        out = str(target / f"{name}.png") if is_file else str(target)
        target.mkdir(parents=True, exist_ok=True)
        extra = ["--save-array", str(target / "array.npy")] if argv[0] in (
            "activations", "project", "saliency", "gradcam") else []
        subprocess.run([sys.executable, "-m", "featviz", *argv, *extra, "--out", out],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    return {str(p.relative_to(workdir)): digest(p)
            for p in sorted(workdir.rglob("*")) if p.is_file()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", metavar="FILE.json", help="record the digests")
    mode.add_argument("--check", metavar="FILE.json", help="compare with recorded digests")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for every command")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as tmp:
        digests = run_jobs(Path(tmp), extra_env)
    if args.write:
        Path(args.write).write_text(json.dumps(digests, indent=1))
        print(json.dumps({"files": len(digests), "written": args.write}))
        return 0
    recorded = json.loads(Path(args.check).read_text())
    differ = sorted(k for k in recorded.keys() | digests.keys()
                    if recorded.get(k) != digests.get(k))
    print(json.dumps({"files": len(recorded), "differ": differ}, indent=1))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
