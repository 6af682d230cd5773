"""Depthwise-conv formulations, forward + input gradient, on this machine's default JAX backend.

Compares ``feature_group_count`` (XLA's grouped conv), k*k shifted multiplies left to autodiff,
and featviz's shifted multiplies with a hand-written input gradient, on EfficientNet-Lite0's
block-1 shapes. Prints one JSON object (milliseconds, median of repeats).

    python benchmarks/bench_depthwise.py [--batch 8] [--repeats 7]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from featviz.models.efficientnet_lite import _depthwise_plain, depthwise_conv


def grouped(x, w, stride):
    return jax.lax.conv_general_dilated(x, w[:, :, None, :], (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=w.shape[-1])


def median_ms(fn, x, repeats):
    jax.block_until_ready(fn(x))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    report = {"backend": jax.default_backend(), "device": str(jax.devices()[0]), "cases": []}
    for size, channels, kernel, stride in [(70, 96, 3, 2), (35, 144, 3, 1), (35, 144, 5, 2),
                                           (18, 240, 5, 1)]:
        x = jnp.asarray(rng.normal(size=(args.batch, size, size, channels)), jnp.float32)
        w = jnp.asarray(rng.normal(size=(kernel, kernel, channels)), jnp.float32)
        case = {"input": [args.batch, size, size, channels], "kernel": kernel, "stride": stride}
        for name, conv in [("grouped_conv", grouped), ("shifted_autodiff", _depthwise_plain),
                           ("shifted_custom_vjp", depthwise_conv)]:
            fwd_bwd = jax.jit(jax.grad(lambda x, conv=conv: (conv(x, w, stride) ** 2).sum()))
            case[f"{name}_ms"] = round(median_ms(fwd_bwd, x, args.repeats), 3)
        report["cases"].append(case)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
