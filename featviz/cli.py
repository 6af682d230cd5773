"""The ``featviz`` command.

    featviz layers [--model M]
    featviz predict IMAGE... [--top 5] [--json]
    featviz render --layer L --channels 0-7,12 [--steps N] [--size PX] [--seed S] --out DIR
    featviz atlas [--layer L] [--channels ...] [--steps N] [--size PX] --out atlas.png

A user mistake (unknown layer, channel out of range, unreadable image, tampered weights file)
prints one line that says what to do and exits with status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from . import classic_cli
from .atlas import ChannelRangeError, SizeError, parse_channels, render_atlas, render_channels
from .image import ImageReadError, write_text_atomic
from .render import ChunkTooLargeError
from .models import DEFAULT_MODEL, ZOO, UnknownLayerError, UnknownModelError, WeightsFileError

USER_ERRORS = (ChannelRangeError, ChunkTooLargeError, SizeError, ImageReadError,
               UnknownLayerError, UnknownModelError, WeightsFileError) + classic_cli.USER_ERRORS


class UsageError(ValueError):
    """A bad command-line value."""


def _model(args):
    from .models import load_model
    if args.weights is not None and not Path(args.weights).is_file():
        raise WeightsFileError(f"no weights file at {args.weights}; give the path of a .pth file")
    return load_model(args.model, args.weights)


def cmd_layers(args):
    model = _model(args)
    shapes = model.layer_shapes(args.size)
    print(f"{'layer':<12} {'shape (H, W, C) at ' + str(args.size) + ' px':<28} channels")
    for name, shape in shapes.items():
        print(f"{name:<12} {str(shape):<28} {shape[-1]}")


def cmd_predict(args):
    import jax
    import numpy as np

    from .image import load_image
    model = _model(args)
    images = np.stack([load_image(p, size=224) for p in args.images])
    probs = np.asarray(jax.nn.softmax(jax.jit(model.activations)(images)["logits"], axis=-1))
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


def _render_settings(args):
    return dict(steps=args.steps, size=args.size, seed=args.seed, chunk_size=args.chunk,
                lr=args.lr, devices=_devices(args.devices), precision=args.precision,
                progress=not args.quiet)


def _writable_dir(folder) -> Path:
    """Create ``folder`` if needed and check that files can be written there, before any work."""
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise UsageError(f"cannot write to {folder} ({err.strerror}); choose another --out") from None
    return folder


def cmd_render(args):
    _writable_dir(args.out)
    model = _model(args)
    channels = parse_channels(args.channels, model.channels(model.check_layer(args.layer)))
    result = render_channels(model, args.layer, channels, args.out, **_render_settings(args))
    print(f"wrote {len(channels)} images and results.json to {args.out} "
          f"({result.seconds:.1f} s rendering)")


def cmd_atlas(args):
    import jax

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {args.out} must name a .png file, e.g. --out atlas.png")
    _writable_dir(out.parent)
    model = _model(args)
    layers = list(model.layers) if args.layer == "all" else [model.check_layer(args.layer)]
    settings = _render_settings(args)
    for layer in layers:
        channels = parse_channels(args.channels, model.channels(layer))
        png = out if len(layers) == 1 else out.with_name(f"{out.stem}_{layer}.png")
        result = render_atlas(model, layer, channels, png, columns=args.columns, **settings)
        if jax.process_index() == 0:
            summary = {"layer": layer, "seconds": round(result.seconds, 3),
                       "objective": {str(c): result.records[c]["objective"] for c in channels}}
            write_text_atomic(json.dumps(summary, indent=1), png.with_suffix(".json"))
            print(f"wrote {png} ({len(channels)} channels of {layer}) and {png.with_suffix('.json')}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featviz", description="See what each filter of a "
                                     "convolutional network responds to.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_model(p):
        p.add_argument("--model", default=DEFAULT_MODEL, help=f"one of: {', '.join(ZOO)}")
        p.add_argument("--weights", help="another copy of the model's weights file (.pth)")
        return p

    def with_render(p, layer_default=None):
        p.add_argument("--layer", required=layer_default is None, default=layer_default)
        p.add_argument("--channels", default=None, help="e.g. 0-7,12 (default: all)")
        p.add_argument("--steps", type=int, default=512)
        p.add_argument("--size", type=int, default=128, help="image side in pixels")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
        p.add_argument("--chunk", type=int, default=None,
                       help="channels rendered at once (default: 8 on CPU, what fits on GPU)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                       help="the network's compute precision (image parameters stay float32)")
        p.add_argument("--devices", help="shard each chunk over 'all' local devices or the first N")
        p.add_argument("--distributed", metavar="HOST:PORT|auto",
                       help="join a multi-process run through jax.distributed")
        p.add_argument("--num-processes", type=int)
        p.add_argument("--process-id", type=int)
        p.add_argument("--out", required=True)
        return p

    p = with_model(sub.add_parser("layers", help="list layers, shapes and channel counts"))
    p.add_argument("--size", type=int, default=224)
    p.set_defaults(func=cmd_layers)

    p = with_model(sub.add_parser("predict", help="classify images"))
    p.add_argument("images", nargs="+")
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = with_render(with_model(sub.add_parser("render", help="render channels to PNGs")))
    p.set_defaults(func=cmd_render)

    p = with_render(with_model(sub.add_parser(
        "atlas", help="render a layer's atlas (--layer all: one atlas per layer)")),
        layer_default="blocks_8")
    p.add_argument("--columns", type=int, default=None)
    p.set_defaults(func=cmd_atlas)
    classic_cli.register(sub)
    from . import gallery
    gallery.register(sub)
    return parser


# Every numeric option of every command: (lowest, highest) allowed; None is unbounded. "lr"
# must also be finite and above zero.
OPTION_RANGES = {
    "steps": (1, 1_000_000), "size": (16, 4096), "seed": (0, 2**32 - 1), "lr": (0, 100),
    "chunk": (1, None), "columns": (1, None), "top": (1, None), "k": (1, 10_000),
    "batch": (1, None), "samples": (1, 10_000), "channel": (0, None), "class_id": (0, None),
    "num_processes": (1, None), "process_id": (0, None),
}


def check_options(args) -> None:
    """Raise ``UsageError`` for the first numeric option outside ``OPTION_RANGES``."""
    for name, (lowest, highest) in OPTION_RANGES.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        flag = "--class" if name == "class_id" else "--" + name.replace("_", "-")
        if name == "lr":
            if not (math.isfinite(value) and lowest < value <= highest):
                raise UsageError(f"{flag} must be a finite number above {lowest} and at most "
                                 f"{highest}, not {value}")
        elif value < lowest or (highest is not None and value > highest):
            bounds = f"from {lowest} to {highest}" if highest is not None else f"at least {lowest}"
            raise UsageError(f"{flag} must be {bounds}, not {value}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_options(args)
        if getattr(args, "distributed", None):  # before anything touches a JAX backend
            from . import distributed
            distributed.initialize(args.distributed, args.num_processes, args.process_id)
        args.func(args)
    except USER_ERRORS + (UsageError,) as err:
        print(f"featviz: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a file system refusal met mid-way (disk full, permissions)
        print(f"featviz: error: cannot write {err.filename or 'a file'} ({err.strerror}); "
              "check the output path and free space", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - only running out of memory is turned into a line
        if "RESOURCE_EXHAUSTED" not in str(err) and not isinstance(err, MemoryError):
            raise
        print("featviz: error: out of memory for this job; use a smaller --size, --chunk or "
              "--batch", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("featviz: interrupted; finished chunks are kept, rerun to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
