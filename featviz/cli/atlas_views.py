"""The activation atlas as a ``featviz`` subcommand.

    featviz activation-atlas --layer L [--images DIR] [--grid N] [--samples N] [every render
        option: --steps N --size PX --lr-ramp A,B --param P ...] --out atlas.png
"""
from __future__ import annotations

from ..errors import UsageError
from .common import (
    add_model_options,
    add_render_options,
    model_from_args,
    plural,
    render_config,
    writable_file,
)

DEFAULT_GRID, DEFAULT_SAMPLES = 20, 30_000  # featviz.views.activation_atlas's (no JAX here)
DEFAULT_STEPS, DEFAULT_SIZE = 256, 80


def cmd_activation_atlas(args):
    import numpy as np

    from ..views.activation_atlas import activation_atlas
    if not args.out.lower().endswith(".png"):
        raise UsageError(f"--out {args.out} must name a .png file, e.g. --out atlas.png")
    out = writable_file(args.out)
    model = model_from_args(args)
    atlas = activation_atlas(model, args.layer, args.images, grid=args.grid, out=out,
                             config=render_config(args), seed=args.seed,
                             samples=args.sample_count, progress=not args.quiet)
    cosines = np.array([cell["cosine"] for cell in atlas.cells])
    reused = [phase for phase in ("samples", "layout") if atlas.reused[phase]]
    if atlas.reused["cells"]:
        reused.append(plural(atlas.reused["cells"], "icon"))
    print(f"wrote {out} ({plural(len(atlas.cells), 'cell')} of a {args.grid}x{args.grid} grid "
          f"over {atlas.samples} activations of {args.layer}; icon cosine to its cell "
          f"min {cosines.min():.2f}, median {np.median(cosines):.2f}) and "
          f"{out.with_suffix('.json')} in {sum(atlas.timing.values()):.0f} s"
          + (f" (reused: {', '.join(reused)})" if reused else ""))


def register(sub) -> None:
    """Add ``activation-atlas`` to an argparse subparsers object."""
    p = add_model_options(sub.add_parser(
        "activation-atlas", help="lay a layer's activations on photos out in 2-D and render "
        "each grid cell's mean (Carter et al., 2019)"))
    p.add_argument("--layer", required=True, help="a layer with a spatial map")
    p.add_argument("--images", default=None,
                   help="folder of photos to sample (default: scikit-image's sample photos)")
    p.add_argument("--grid", type=int, default=DEFAULT_GRID, help="cells across and down")
    p.add_argument("--samples", dest="sample_count", type=int, default=DEFAULT_SAMPLES,
                   help="activations sampled from random crops of the photos")
    add_render_options(p, steps=DEFAULT_STEPS)
    p.set_defaults(size=DEFAULT_SIZE)
    p.add_argument("--out", required=True, help="the atlas .png (its .json beside it)")
    p.set_defaults(func=cmd_activation_atlas)
