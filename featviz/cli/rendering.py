"""The model and feature-visualization commands.

    featviz models
    featviz layers [--model M]
    featviz predict IMAGE... [--top 5] [--json]
    featviz render --layer L --channels 0-7,12 [--steps N] [--size PX] [--seed S] --out DIR
    featviz atlas [--layer L] [--channels ...] [--steps N] [--size PX] --out atlas.png
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError
from .common import (
    add_distributed_options,
    add_model_options,
    add_render_options,
    model_from_args,
    picked_channels,
    plural,
    render_config,
    writable_dir,
    writable_file,
)


def cmd_models(args):
    from ..models import describe_models
    from ..models.keras import APPLICATIONS
    rows = describe_models()
    print(f"{'model':<20} {'input px':>8} {'layers':>6}  weights")
    for row in rows:
        print(f"{row.name:<20} {row.image_size:>8} {row.layers:>6}  {row.weights_source}")
    print(f"keras:NAME, with featviz[keras] and Keras's ImageNet weights (cached or downloaded; "
          f"or --weights FILE)"
          f", NAME one of: {', '.join(APPLICATIONS)}")
    print("a saved Keras model (mine.keras, mine.h5), or a function that returns a model "
          "(pkg.module:build, path/to/file.py:build)")


def cmd_layers(args):
    model = model_from_args(args)
    size = args.size or model.image_size
    shapes = model.layer_shapes(size)
    print(f"{'layer':<12} {'shape (H, W, C) at ' + str(size) + ' px':<28} {'channels':>8}"
          "  optimized as")
    for name, shape in shapes.items():
        pre = model.pre_activation(name)
        print(f"{name:<12} {str(shape):<28} {shape[-1]:>8}  "
              f"{pre + ' (before its rectifier)' if pre else name}")


def cmd_predict(args):
    import jax
    import numpy as np

    from ..image import load_image
    model = model_from_args(args)
    from ..attribution import score_layer
    images = np.stack([load_image(p, size=model.image_size) for p in args.images])
    scores = score_layer(model)
    probs = np.asarray(jax.nn.softmax(model.activations(images, layers=[scores])[scores], axis=-1))
    report = []
    for path, p in zip(args.images, probs):
        top = np.argsort(-p)[:args.top]
        report.append({"image": str(path), "top": [
            {"class": int(k), "name": model.class_names[k] if model.class_names else str(k),
             "probability": float(p[k])} for k in top]})
    if args.json:
        print(json.dumps(report, indent=1))
        return
    for item in report:
        print(item["image"])
        for t in item["top"]:
            print(f"  {t['class']:>4}  {t['probability']:.4f}  {t['name']}")


def _devices(spec: str | None):
    import jax
    if spec is None:
        return None
    local = jax.local_devices()
    if spec == "all":
        return local
    if not spec.isdigit() or not 1 <= int(spec) <= len(local):
        raise UsageError(f"--devices {spec}: give 'all' or a number from 1 to {len(local)}")
    return local[:int(spec)]


def _job_settings(args) -> dict:
    """The render config, devices and progress bar that a rendering command's options give."""
    return dict(config=render_config(args), devices=_devices(args.devices),
                progress=not args.quiet)


def _layer_channels(model, layers, args) -> dict[str, list[int]]:
    """Each layer's channels that ``--channels`` picks, its size for ``--size`` checked."""
    from ..channels import check_size
    picked = {}
    for layer in layers:
        picked[layer] = picked_channels(model, layer, args.channels)
        check_size(model, layer, args.size)
    return picked


def cmd_render(args):
    from ..jobs import render_channels
    writable_dir(args.out)
    model = model_from_args(args)
    channels = _layer_channels(model, [args.layer], args)[args.layer]
    result = render_channels(model, args.layer, channels, args.out, **_job_settings(args))
    kept = f" ({result.reused} already there)" if result.reused else ""
    per_unit = f", {args.diverse} per channel" if args.diverse > 1 else ""
    print(f"wrote {plural((len(channels) - result.reused) * args.diverse, 'image')}{per_unit}"
          f"{kept} and results.json to {args.out} ({result.seconds:.1f} s rendering)")


def cmd_atlas(args):
    import jax

    from ..atlas import render_atlas
    from ..image import write_text_atomic
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {args.out} must name a .png file, e.g. --out atlas.png")
    writable_file(out)
    model = model_from_args(args)
    layer = args.layer or model.shown_layers[-1]
    jobs = _layer_channels(model, list(model.layers) if layer == "all" else [layer], args)
    settings = _job_settings(args)
    for layer, channels in jobs.items():
        png = out if len(jobs) == 1 else out.with_name(f"{out.stem}_{layer}.png")
        result = render_atlas(model, layer, channels, png, columns=args.columns, **settings)
        if jax.process_index() == 0:
            summary = {"layer": layer, "seconds": round(result.seconds, 3),
                       "objective": {str(c): result.records[c]["objective"] for c in channels}}
            write_text_atomic(json.dumps(summary, indent=1), png.with_suffix(".json"))
            print(f"wrote {png} ({plural(len(channels), 'channel')} of {layer}) and "
                  f"{png.with_suffix('.json')}")


def _add_render_options(p, layer_required: bool):
    p.add_argument("--layer", required=layer_required,
                   help=None if layer_required else "default: the model's default layer; "
                   "'all': one atlas per layer")
    p.add_argument("--channels", default=None, help="e.g. 0-7,12 (default: all)")
    add_render_options(p)
    p.add_argument("--devices", help="shard each chunk over 'all' local devices or the first N")
    add_distributed_options(p)
    p.add_argument("--out", required=True, help="output folder (render) or .png file (atlas)")
    return p


def register(sub) -> None:
    """Add ``models``, ``layers``, ``predict``, ``render`` and ``atlas`` to an argparse
    subparsers object."""
    sub.add_parser("models", help="list the models --model accepts").set_defaults(func=cmd_models)

    p = add_model_options(sub.add_parser("layers", help="list layers, shapes and channel counts"))
    p.add_argument("--size", type=int, default=None,
                   help="input side in pixels (default: the model's input size)")
    p.set_defaults(func=cmd_layers)

    p = add_model_options(sub.add_parser("predict", help="classify images"))
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=5, help="classes listed per image")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = add_model_options(sub.add_parser("render", help="render channels to PNGs"))
    _add_render_options(p, layer_required=True).set_defaults(func=cmd_render)

    p = add_model_options(sub.add_parser(
        "atlas", help="render a layer's atlas (--layer all: one atlas per layer)"))
    _add_render_options(p, layer_required=False)
    p.add_argument("--columns", type=int, default=None,
                   help="tiles per row (default: about square)")
    p.set_defaults(func=cmd_atlas)
