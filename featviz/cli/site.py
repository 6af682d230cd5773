"""``featviz gallery``: a static HTML site of a model's layers and units (``featviz.gallery``).

    featviz gallery --out site/ [--layers blocks_3,blocks_8|all] [--channels 0-3] [--images DIR]
                    [--k 9] [--image-size PX] [--devices N|all]
                    [every render option: --steps N --size PX --diverse K --lr ... --chunk N]
                    [--distributed HOST:PORT|auto --num-processes N --process-id I]
"""
from __future__ import annotations

from ..errors import UsageError
from .common import (
    add_distributed_options,
    add_model_options,
    add_render_options,
    model_from_args,
    plural,
    render_config,
)
from .rendering import _devices

GALLERY_DIVERSE = 4  # diverse images per unit unless --diverse says otherwise


def _named_layers(spec: str) -> list[str]:
    """The layer names of ``--layers``, which must name at least one."""
    layers = [name.strip() for name in spec.split(",") if name.strip()]
    if not layers:
        raise UsageError(f"--layers {spec!r} names no layer; give comma-separated names, e.g. "
                         "--layers conv2,conv3, or all ('featviz layers' lists them)")
    return layers


def _shown_layers(model, named: list[str] | None) -> list[str]:
    """The layers shown: those named, every layer with a spatial map for ``all``, or the
    model's default ones when none is named."""
    if named is None:
        return list(model.shown_layers)
    return list(model.spatial_layers()) if [n.lower() for n in named] == ["all"] else named


def cmd_gallery(args) -> None:
    import jax

    from ..gallery import build_gallery, chosen_units
    from ..site_estimate import estimate
    named = None if args.layers is None else _named_layers(args.layers)
    model = model_from_args(args)
    layers = _shown_layers(model, named)
    config, devices = render_config(args), _devices(args.devices)
    lead = jax.process_index() == 0  # the process that writes the site and reports
    if lead and not args.quiet:
        chosen = chosen_units(model, layers, args.channels, config.size)
        print(estimate(model, chosen, config, k=args.k, images=args.images,
                       image_size=args.image_size).summary(), flush=True)
    out = build_gallery(model, args.out, layers, args.channels, config, k=args.k,
                        images=args.images, image_size=args.image_size,
                        devices=devices, progress=not args.quiet)
    if lead:
        print(f"wrote {out / 'index.html'} ({plural(len(layers), 'layer')}); open it in a browser")


def register(sub) -> None:
    """Add the ``gallery`` subcommand to an ``argparse`` subparsers object."""
    p = add_model_options(sub.add_parser(
        "gallery", help="a static HTML site of a model's layers and units",
        description="Each unit's page shows its channel, centre-neuron and negative images, "
        "--diverse K diverse images, its top and bottom dataset examples, the units of the "
        "layer shown before it that contribute most, and the classes it drives most; --view "
        "picks the image shown on layer pages and the objective of the diverse images. The "
        "time and size it will take are printed first."))
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--layers", default=None,
                   help="comma-separated layer names, or all (every layer with a spatial map; "
                   "default: the model's default layers)")
    p.add_argument("--channels", default="0-15", help="e.g. 0-7,12 or all (default: 0-15)")
    add_render_options(p, steps=256)
    p.set_defaults(diverse=GALLERY_DIVERSE)
    p.add_argument("--images", help="folder of photos, searched with its subfolders, in any "
                   "format Pillow reads (default: scikit-image photos)")
    p.add_argument("--image-size", type=int, default=None,
                   help="side the photos are searched at (default: the model's input size)")
    p.add_argument("--k", type=int, default=9, help="top and bottom dataset examples per unit")
    p.add_argument("--devices", help="shard each render chunk over 'all' local devices or the "
                   "first N (diverse images render on one)")
    add_distributed_options(p)
    p.set_defaults(func=cmd_gallery)
