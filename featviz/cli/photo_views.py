"""Views of one photo as ``featviz`` subcommands.

    featviz accentuate IMAGE --layer L --channels 0-3 [--penalty W] [--penalty-layer L2]
        [every render option: --steps N --size PX --lr A ...] --out DIR
    featviz caricature IMAGE --layer L [--layer L2 ...] [--invert] [--power P]
        [every render option] --out c.png
"""
from __future__ import annotations

import json

from ..errors import UsageError
from .common import (
    add_model_options,
    add_render_options,
    model_from_args,
    picked_channels,
    plural,
    render_config,
    writable_dir,
    writable_file,
)

# featviz.views.accentuation's and featviz.views.caricature's defaults (no JAX here)
ACCENTUATION_STEPS, ACCENTUATION_LR, DEFAULT_PENALTY = 64, 0.02, 3.0
CARICATURE_STEPS, DEFAULT_POWER = 128, 1.0


def _render_options(p, steps: int):
    """``add_render_options`` with this command's steps, and ``--chunk``'s default as these
    views have it: one batch."""
    add_render_options(p, steps=steps)
    chunk = next(a for a in p._actions if a.dest == "chunk")
    chunk.help = "images rendered at once (default: all, in one batch)"


def _photo(args):
    """The photo at ``--size`` px (its centred square), read before the model is loaded."""
    from ..image import load_image
    return load_image(args.image, size=args.size)


def cmd_accentuate(args):
    from ..image import save_png, write_text_atomic
    from ..views.accentuation import accentuate
    out = writable_dir(args.out)
    penalty = args.penalty
    perturbation = args.perturbation
    photo = _photo(args)
    model = model_from_args(args)
    channels = picked_channels(model, args.layer, args.channels)
    if args.penalty_layer is not None:
        model.check_layer(args.penalty_layer)
    result = accentuate(model, photo, args.layer, channels, config=render_config(args),
                        penalty_layer=args.penalty_layer, penalty=penalty,
                        perturbation=perturbation)
    save_png(result.photo, out / "photo.png")
    for c, image in zip(channels, result.images):
        save_png(image, out / f"{args.layer}_{c}.png")
    write_text_atomic(json.dumps({"image": str(args.image), "penalty": penalty,
                                  **result.record()}, indent=1), out / "results.json")
    raised = sum(a > b for a, b in zip(result.after, result.before))
    print(f"wrote {plural(len(channels), 'image')}, photo.png and results.json to {out} "
          f"({raised} of {len(channels)} raised; distance at {result.penalty_layer} "
          f"{min(result.distance):.2f}-{max(result.distance):.2f}; {result.seconds:.1f} s)")


def cmd_caricature(args):
    import numpy as np

    from ..image import make_grid, save_png, write_text_atomic
    from ..views.caricature import caricature
    if not args.out.lower().endswith(".png"):
        raise UsageError(f"--out {args.out} must name a .png file, e.g. --out caricature.png")
    out = writable_file(args.out)
    power = args.power
    photo = _photo(args)
    model = model_from_args(args)
    layers = list(dict.fromkeys(args.layer))
    result = caricature(model, photo, layers, invert=args.invert, power=power,
                        config=render_config(args))
    if len(layers) == 1:
        picture = result.images[0, 0]
    else:  # the photo, then one labelled tile per layer
        picture = make_grid(np.concatenate([result.photos[:1], result.images[0]]),
                            columns=len(layers) + 1, labels=["photo", *layers])
    save_png(picture, out)
    record = {"image": str(args.image), "png": str(out), **result.record()}
    write_text_atomic(json.dumps(record, indent=1), out.with_suffix(".json"))
    similarity = ", ".join(f"{layer} {s:.2f}" for layer, s in zip(layers, result.similarity[0]))
    print(f"wrote {out} and {out.with_suffix('.json')} (cosine to the photo: {similarity}; "
          f"{result.seconds:.1f} s)")


def register(sub) -> None:
    """Add ``accentuate`` and ``caricature`` to an argparse subparsers object."""
    p = add_model_options(sub.add_parser(
        "accentuate", help="change a photo so that channels respond more, keeping it close "
        "to the photo (feature accentuation, Hamblin et al. 2024)"))
    p.add_argument("image", help="the photo (its centred square, resized to --size)")
    p.add_argument("--layer", required=True)
    p.add_argument("--channels", default=None, help="e.g. 0-3,12 (default: all)")
    p.add_argument("--penalty", type=float, default=DEFAULT_PENALTY,
                   help="weight of the distance to the photo at --penalty-layer, in units of "
                   "the RMS of the photo's activations at --layer; 0: none")
    p.add_argument("--penalty-layer", default=None,
                   help="where the image is kept close to the photo (default: the spatial "
                   "layer halfway to --layer)")
    p.add_argument("--perturbation", type=float, default=0.0,
                   help="noise added to the photo's Fourier coefficients at the start, from "
                   "each image's seed (0.01: the noise a render starts from)")
    _render_options(p, ACCENTUATION_STEPS)
    p.set_defaults(lr=ACCENTUATION_LR)
    p.add_argument("--out", required=True, help="output folder: <layer>_<c>.png per channel, "
                   "photo.png (the photo as the network saw it) and results.json (each "
                   "channel's activation before and after, and its distance to the photo)")
    p.set_defaults(func=cmd_accentuate)

    p = add_model_options(sub.add_parser(
        "caricature", help="make an image from noise whose activations echo a photo's at "
        "layers (Lucid's caricature; --invert: feature inversion)"))
    p.add_argument("image", help="the photo (its centred square, resized to --size)")
    p.add_argument("--layer", required=True, action="append",
                   help="a layer; repeat for several (rendered in one batch)")
    p.add_argument("--invert", action="store_true",
                   help="match the photo's activations (L2) instead of exaggerating them")
    p.add_argument("--power", type=float, default=DEFAULT_POWER,
                   help="the caricature's objective: dot(a, a_photo) * cos(a, a_photo)^POWER")
    _render_options(p, CARICATURE_STEPS)
    p.add_argument("--out", required=True,
                   help="output .png: with one --layer its image; with several, a row of the "
                   "photo and one labelled image per layer; a .json beside it holds the "
                   "cosine similarity to the photo's activations at each layer")
    p.set_defaults(func=cmd_caricature)
