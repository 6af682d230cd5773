"""``featviz gallery``: a static HTML site of layers, channels and their top patches.

    featviz gallery --out site/ [--layers blocks_3,blocks_8] [--channels 0-3] [--images DIR]
                    [--k 9] [every render option: --steps N --size PX --lr ... --chunk N]
"""
from __future__ import annotations

from ..errors import UsageError
from .common import add_model_options, add_render_options, model_from_args, plural, render_config


def _named_layers(spec: str) -> list[str]:
    """The layer names of ``--layers``, which must name at least one."""
    layers = [name.strip() for name in spec.split(",") if name.strip()]
    if not layers:
        raise UsageError(f"--layers {spec!r} names no layer; give comma-separated names, e.g. "
                         "--layers conv2,conv3 ('featviz layers' lists them)")
    return layers


def cmd_gallery(args) -> None:
    from ..gallery import build_gallery
    layers = None if args.layers is None else _named_layers(args.layers)
    model = model_from_args(args)
    layers = layers or list(model.shown_layers)
    out = build_gallery(model, args.out, layers, args.channels, render_config(args), k=args.k,
                        images=args.images, progress=not args.quiet)
    print(f"wrote {out / 'index.html'} ({plural(len(layers), 'layer')}); open it in a browser")


def register(sub) -> None:
    """Add the ``gallery`` subcommand to an ``argparse`` subparsers object."""
    p = add_model_options(sub.add_parser(
        "gallery", help="a static HTML site of layers, channels and patches"))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--layers", default=None,
                   help="comma-separated layer names (default: the model's default layers)")
    p.add_argument("--channels", default="0-15", help="e.g. 0-7,12 or all (default: 0-15)")
    add_render_options(p, steps=256)
    p.add_argument("--images", help="folder of .jpg/.png images (default: scikit-image photos)")
    p.add_argument("--k", type=int, default=9, help="top patches per channel")
    p.set_defaults(func=cmd_gallery)
