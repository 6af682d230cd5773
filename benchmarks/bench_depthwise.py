"""EfficientNet-Lite0's convolution forms, forward + input gradient, on JAX's default backend.

Chooses, per platform, the entry of ``PLATFORM_KERNELS`` in featviz/models/layers.py:
the "native" form (XLA's convolution: cuDNN on GPUs) or the "shifted" one (featviz's). Times,
on whatever platform JAX runs on, in float32 and bfloat16:

* every distinct depthwise-conv shape of Lite0 at ``--size`` px input (140: what featviz's
  transforms hand the network when rendering at 128 px) three ways: ``grouped_conv``
  (``feature_group_count``, the native form), ``shifted_autodiff`` (k*k shifted multiplies left
  to autodiff) and ``shifted_custom_vjp`` (with featviz's hand-written input gradient, the
  shifted form);
* the stem (3x3, stride 2, 3 -> 32 channels) two ways: ``native_conv`` and ``patch_conv`` (one
  matmul over its shifted windows, the shifted form);
* the whole network, forward to layer ``head`` at ``--network-size`` px (default 128) and
  input gradient, with each of the four possible table entries (depthwise form, stem form);
  ``FEATVIZ_CONV_KERNELS=native|shifted`` picks two of them in any featviz run.

Milliseconds (the network: seconds), median of ``--repeats`` calls, each ended with
``jax.block_until_ready``; compilation (as the renderer compiles) is excluded. Prints one JSON
object, one line per measurement; ``fastest`` names, per dtype, the faster form of each
convolution alone and the fastest table entry for this platform in the whole network.

    python benchmarks/bench_depthwise.py [--batch N] [--repeats 7] [--dtypes float32,bfloat16]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import time
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

import featviz
from featviz.compiler import compile_lowered
from featviz.models import efficientnet_lite as lite, layers
from featviz.models.torch_weights import read_state_dict

DEFAULT_BATCH = {"cpu": 8}  # other platforms: 256
DEPTHWISE_FORMS = {"grouped_conv": layers.native_depthwise_conv,
                   "shifted_autodiff": layers._depthwise_plain,
                   "shifted_custom_vjp": layers.depthwise_conv}
STEM_FORMS = {"native_conv": layers.native_conv, "patch_conv": layers.patch_conv}
FORM = {"grouped_conv": "native", "shifted_custom_vjp": "shifted",  # names in PLATFORM_KERNELS
        "native_conv": "native", "patch_conv": "shifted"}


def median_seconds(fn, args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` after compiling it as the renderer compiles."""
    compiled = compile_lowered(jax.jit(fn).lower(*args), jax.default_backend())
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def input_grad(conv, w, stride):
    """x -> d/dx sum(conv(x)^2), the forward pass and input gradient of one convolution."""
    return jax.grad(lambda x: jnp.sum(jnp.square(conv(x, w, stride)), dtype=jnp.float32))


def depthwise_shapes(module, size: int) -> Counter:
    """(side, channels, kernel, stride) of each depthwise conv of ``module`` at ``size`` px
    input, with how many blocks have it."""
    side, width, shapes = math.ceil(size / 2), module.stem_features, Counter()
    for spec in module.blocks:
        shapes[(side, spec.expand or width, spec.kernel, spec.stride)] += 1
        side, width = math.ceil(side / spec.stride), spec.out
    return shapes


def network_seconds(model, batch: int, size: int, dtype, kernels: tuple, repeats: int) -> float:
    """Seconds per forward to ``head`` + input gradient of ``batch`` images, with this
    platform's ``PLATFORM_KERNELS`` entry set to ``kernels`` (read when the program is traced)."""
    backend = jax.default_backend()
    table_entry = layers.PLATFORM_KERNELS.get(backend)
    layers.PLATFORM_KERNELS[backend] = kernels
    params = jax.tree.map(lambda a: a.astype(dtype), model.params)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(batch, size, size, 3)), dtype)

    def loss(v):
        return jnp.sum(model.apply(params, model.preprocess(v), ["head"])["head"],
                       dtype=jnp.float32)

    try:
        return median_seconds(jax.grad(loss), (x,), repeats)
    finally:
        layers.PLATFORM_KERNELS[backend] = table_entry


def dumps(report: dict) -> str:
    """JSON, one line per measurement."""
    lines = [f" {json.dumps(key)}: " + ("[\n" + ",\n".join(f"  {json.dumps(v)}" for v in value)
                                        + "\n ]" if isinstance(value, list) else json.dumps(value))
             for key, value in report.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None,
                    help="images per call (default 8 on a CPU, 256 elsewhere)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--size", type=int, default=140, help="network input side for the "
                    "depthwise and stem shapes (default 140, as when rendering at 128 px)")
    ap.add_argument("--network-size", type=int, default=128)
    args = ap.parse_args()
    backend = jax.default_backend()
    batch = args.batch or DEFAULT_BATCH.get(backend, 256)
    dtypes = [jnp.dtype(d) for d in args.dtypes.split(",")]
    if os.environ.pop(layers.KERNELS_ENV, None):  # it would override every choice measured
        print(f"{layers.KERNELS_ENV} ignored: this benchmark makes each choice itself",
              file=sys.stderr)
    module, _ = lite.convert_state_dict(read_state_dict(lite.default_weights_path()))
    model = featviz.load_model()
    rng = np.random.default_rng(0)
    report = {"backend": backend, "device": str(jax.devices()[0]), "jax": jax.__version__,
              "batch": batch, "repeats": args.repeats, "size": args.size,
              "table_now": dict(zip(("depthwise", "stem"), layers.PLATFORM_KERNELS.get(
                  backend, ("native", "native")))),
              "cases": [], "stem": [], "network": []}
    totals = {d.name: Counter() for d in dtypes}

    for (side, channels, kernel, stride), blocks in sorted(depthwise_shapes(module, args.size)
                                                           .items(), reverse=True):
        for dtype in dtypes:
            x = jnp.asarray(rng.normal(size=(batch, side, side, channels)), dtype)
            w = jnp.asarray(rng.normal(size=(kernel, kernel, channels)), dtype)
            case = {"input": [batch, side, side, channels], "kernel": kernel, "stride": stride,
                    "blocks": blocks, "dtype": dtype.name}
            for name, conv in DEPTHWISE_FORMS.items():
                ms = 1000 * median_seconds(input_grad(conv, w, stride), (x,), args.repeats)
                case[f"{name}_ms"] = round(ms, 3)
                totals[dtype.name][name] += blocks * ms
            report["cases"].append(case)

    features = module.stem_features
    for dtype in dtypes:
        side = args.size
        x = jnp.asarray(rng.normal(size=(batch, side, side, 3)), dtype)
        w = jnp.asarray(rng.normal(size=(3, 3, 3, features)), dtype)
        case = {"input": [batch, side, side, 3], "kernel": 3, "stride": 2, "features": features,
                "dtype": dtype.name}
        for name, conv in STEM_FORMS.items():
            ms = 1000 * median_seconds(input_grad(conv, w, 2), (x,), args.repeats)
            case[f"{name}_ms"] = round(ms, 3)
            totals[dtype.name][name] += ms
        report["stem"].append(case)

    for dtype in dtypes:  # every possible table entry: (depthwise form, stem form)
        for kernels in itertools.product(layers.KERNELS, repeat=2):
            seconds = network_seconds(model, batch, args.network_size, dtype, kernels,
                                      args.repeats)
            report["network"].append({"layer": "head", "size": args.network_size,
                                      "batch": batch, "dtype": dtype.name,
                                      "depthwise": kernels[0], "stem": kernels[1],
                                      "seconds": round(seconds, 4)})

    report["depthwise_total_ms"] = {  # summed over Lite0's 16 blocks
        d: {k: round(v, 3) for k, v in t.items() if k in DEPTHWISE_FORMS}
        for d, t in totals.items()}
    report["fastest"] = {}  # per dtype: each convolution alone, and the best table entry
    for d, t in totals.items():
        best = min((n for n in report["network"] if n["dtype"] == d), key=lambda n: n["seconds"])
        report["fastest"][d] = {
            "depthwise_alone": FORM[min(("grouped_conv", "shifted_custom_vjp"), key=t.get)],
            "stem_alone": FORM[min(STEM_FORMS, key=t.get)],
            f"PLATFORM_KERNELS[{backend!r}]": [best["depthwise"], best["stem"]]}
    print(dumps(report))


if __name__ == "__main__":
    main()
