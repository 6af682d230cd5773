"""Seconds per image-step of each form of the render's segment program (``ascent.LOOPS``:
rolled loop, loop unrolled 2/4/8 times, host loop over a one-step program), per network, timed
side by side in one process, rounds interleaved; with the network's plain compiled forward +
input gradient on the same batch (at the size the transforms hand it), the parameterization and
transforms' own forward + backward, and the form featviz chooses compiled with XLA:CPU's own
matmul kernels instead of YNNPACK (``FEATVIZ_CPU_MATMULS=xla``). Prints JSON.

    python benchmarks/bench_segment_forms.py [--networks lite0,vgg16,smallcnn,resnet50]
        [--weights-dir /tmp/tfkv-models] [--channels 4] [--size 128] [--steps 16] [--rounds 2]
        [--forms rolled,unroll2,unroll4,unroll8,host] [--redirect-steps 0]

VGG16 and the small CNN load make_models.py's files from --weights-dir when they are there
(shared/peers/tf-keras-vis), else seeded random weights; ResNet50 always has seeded random
weights. A render's time includes its final forward pass (one per render, not per step).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
import jax  # noqa: E402
import numpy as np  # noqa: E402

import featviz  # noqa: E402
from featviz import objectives as obj  # noqa: E402
from featviz.compiler import compile_lowered  # noqa: E402
from featviz.engine import LOOP_ENV, segment_loop  # noqa: E402

PEER = Path(__file__).resolve().parents[1].parent / "shared" / "peers" / "tf-keras-vis"
LAYERS = {"lite0": "blocks_8", "vgg16": "block5_conv3", "smallcnn": "conv3",
          "resnet50": "conv4_block6_out"}
MATMULS = "FEATVIZ_CPU_MATMULS"


def seeded_keras(build):
    """A Keras network built with seeded numpy initializers (no weights file)."""
    from featviz.models import keras_compat

    with keras_compat.numpy_initializers(np.random.default_rng(0)):
        return build()


def network(name: str, weights_dir: Path, size: int):
    """(model, layer) for one of ``LAYERS``."""
    if name == "lite0":
        return featviz.load_model(), LAYERS[name]
    import keras

    from featviz.models import from_keras, keras_application
    if name == "vgg16" and (weights_dir / "vgg16_seed0_notop.h5").is_file():
        file = weights_dir / "vgg16_seed0_notop.h5"
        return keras_application("VGG16", weights=file), LAYERS[name]
    if name == "vgg16":
        net = seeded_keras(lambda: keras.applications.VGG16(weights=None, include_top=False))
        return from_keras(net, image_size=size), LAYERS[name]
    if name == "resnet50":
        net = seeded_keras(lambda: keras.applications.ResNet50(weights=None, include_top=False))
        return from_keras(net, image_size=size), LAYERS[name]
    sys.path.insert(0, str(PEER))
    import peer_models

    file = weights_dir / "smallcnn_seed0.h5"
    net = peer_models.build(keras, "SmallCNN", weights=str(file) if file.exists() else None)
    return from_keras(net, preprocess="raw", image_size=size), LAYERS[name]


def with_env(name: str, value: str, make):
    """``make()`` with the environment variable ``name`` set to ``value`` (then restored)."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        return make()
    finally:
        os.environ.pop(name) if old is None else os.environ.__setitem__(name, old)


def render_variant(model, layer, args, form: str, matmuls: str = ""):
    """A timed callable rendering the batch with the segment in ``form``, compiled first."""
    objs = [obj.channel(layer, c) for c in range(args.channels)]
    keys = featviz.channel_keys(0, range(args.channels))

    def build():
        renderer = with_env(LOOP_ENV, form, lambda: featviz.Renderer(
            model, size=args.size, steps=args.steps, redirect_steps=args.redirect_steps))
        renderer(objs, keys, steps=1)  # compiles
        return renderer
    renderer = with_env(MATMULS, matmuls, build)
    return lambda: renderer(objs, keys), renderer


def plain_variants(model, layer, renderer, args, matmuls: str = ""):
    """Timed callables: the network's forward + input gradient on a batch of the size the
    transforms hand it, and the parameterization and transforms' forward + backward alone."""
    settings = renderer.settings
    keys = featviz.channel_keys(0, range(args.channels))
    params = jax.vmap(settings.param.init)(keys)
    images = jax.vmap(settings.param.to_image)(params)
    seen = jax.vmap(settings.transform)(keys, images)
    read = settings.optimized_layers([layer])[layer]

    def network_loss(x):
        acts = model.apply(model.params, model.preprocess(x), (read,))[read]
        return acts[..., :args.channels].mean()

    def transforms_loss(p):
        return (jax.vmap(settings.transform)(keys, jax.vmap(settings.param.to_image)(p)) ** 2).sum()
    compiled = with_env(MATMULS, matmuls, lambda: (
        compile_lowered(jax.jit(jax.grad(network_loss)).lower(seen), "cpu"),
        compile_lowered(jax.jit(jax.grad(transforms_loss)).lower(params), "cpu")))
    return ((lambda: compiled[0](seen).block_until_ready()),
            (lambda: jax.block_until_ready(compiled[1](params))), tuple(seen.shape))


def timed(variants: dict, rounds: int, per: dict) -> dict:
    """Seconds per image-step of each variant: ``rounds`` interleaved calls, each divided by
    ``per[name]`` image-steps; median and rounds."""
    seconds: dict = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            began = time.perf_counter()
            run()
            seconds[name].append((time.perf_counter() - began) / per[name])
    return {name: {"median": statistics.median(s), "rounds": [round(v, 6) for v in s]}
            for name, s in seconds.items()}


def bench_network(name: str, args) -> dict:
    """Every form, the chosen one without YNNPACK, and the plain programs, for one network."""
    model, layer = network(name, args.weights_dir, args.size)
    chosen = segment_loop(model, jax.devices()[0].platform, args.size)
    variants, compile_s, renderers = {}, {}, {}
    for form in args.forms:
        variants[form], renderers[form] = render_variant(model, layer, args, form)
    variants[f"{chosen}_ynn_off"], renderers["off"] = render_variant(model, layer, args, chosen,
                                                                     "xla")
    compile_s = {form: round(r.compile_seconds, 2) for form, r in renderers.items()}
    ref = renderers[args.forms[0]]
    variants["plain_network"], variants["transforms"], seen = plain_variants(model, layer, ref,
                                                                            args)
    variants["plain_network_ynn_off"], _, _ = plain_variants(model, layer, ref, args, "xla")
    image_steps = args.channels * args.steps
    per = {k: image_steps for k in variants} | {k: args.channels for k in variants
                                                if k.startswith(("plain", "transforms"))}
    times = timed(variants, args.rounds, per)
    medians = {k: v["median"] for k, v in times.items()}
    floor = medians["plain_network"] + medians["transforms"]
    return {"network": model.name, "layer": layer, "chosen_form": chosen,
            "network_input": list(seen), "s_per_image_step": times,
            "over_rolled": {f: round(medians[f] / medians["rolled"], 3) for f in args.forms}
            if "rolled" in medians else {},
            "engine_over_plain_plus_transforms": {f: round(medians[f] / floor, 3)
                                                  for f in args.forms},
            "ynn_off_over_on": {chosen: round(medians[f"{chosen}_ynn_off"] / medians[chosen], 3),
                                "plain_network": round(medians["plain_network_ynn_off"]
                                                       / medians["plain_network"], 3)}
            if chosen in medians else {},
            "compile_seconds": compile_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="lite0,vgg16,smallcnn")
    ap.add_argument("--weights-dir", type=Path, default=Path("/tmp/tfkv-models"))
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--forms", default="rolled,unroll2,unroll4,unroll8,host")
    ap.add_argument("--redirect-steps", type=int, default=0)
    args = ap.parse_args()
    args.forms = args.forms.split(",")
    job = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print(json.dumps({
        "machine": f"{platform.machine()} {jax.devices()[0].device_kind}, "
                   f"{os.cpu_count()} cores, jax {jax.__version__}",
        "load_average_at_start": os.getloadavg(), "job": job,
        "networks": [bench_network(n, args) for n in args.networks.split(",")],
        "load_average_at_end": os.getloadavg()}, indent=1))


if __name__ == "__main__":
    main()
