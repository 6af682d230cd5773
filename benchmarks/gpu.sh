#!/usr/bin/env bash
# Every GPU measurement of benchmarks/RESULTS.md in one command, on a machine whose JAX has CUDA
# (the wheels of featviz's other needs installed, or internet): end to end with XLA's default
# autotuning and without it, then the depthwise-convolution forms. JSON under ${OUT:-gpu-results}.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}; mkdir -p "$out"
python -m pip install -q --no-deps -e .
python benchmarks/bench_end_to_end.py --jobs 8x32,8x256,64x128,head1280x512 --featviz-only \
    --json-out "$out/end_to_end.json"
FEATVIZ_GPU_AUTOTUNE_LEVEL=0 python benchmarks/bench_end_to_end.py --jobs 8x32,head1280x512 \
    --featviz-only --json-out "$out/end_to_end_autotune0.json"
python benchmarks/bench_depthwise.py > "$out/depthwise.json"
