"""The classic views as ``featviz`` subcommands.

    featviz activations IMAGE --layer L [--channels 0-15] [--per-channel-scale] --out grid.png
    featviz top-patches [--images DIR] --layer L --channels 0-7 [--k 9] --out DIR
    featviz project IMAGE --layer L --channel C [--method deconvnet|guided] --out p.png
    featviz saliency IMAGE [--class K] [--method vanilla|smoothgrad|gradxinput] --out s.png
    featviz gradcam IMAGE [--class K] [--layer L] [--method gradcam|cam] --out heat.png
    featviz unit --layer L --channel C [--images DIR] [--k 9] [every render option: --steps N
        --size PX --lr-ramp A,B --param P ...] --out sheet.png

Map commands also take ``--save-array FILE.npy`` for the raw array.
"""
from __future__ import annotations

import json

from ..config import PROJECTIONS
from .common import (
    add_model_options,
    add_render_options,
    check_png_outputs,
    model_from_args,
    picked_channels,
    plural,
    render_config,
    writable_dir,
)

SALIENCY_METHODS = ("vanilla", "smoothgrad", "gradxinput")


def _model_and_image(args):
    """The model and the image at the model's input size; checks --out before any work."""
    from ..image import load_image
    check_png_outputs(args)
    model = model_from_args(args)
    return model, load_image(args.image, size=args.size or model.image_size)


def _write(args, picture, array) -> None:
    from ..image import save_npy, save_png
    save_png(picture, args.out)
    extra = ""
    if args.save_array:
        save_npy(array, args.save_array)
        extra = f" and {args.save_array} {tuple(array.shape)}"
    print(f"wrote {args.out}{extra}")


def _class_label(model, image, class_id) -> str:
    from .. import attribution as attr
    k = int(attr.predict(model, image[None])[0]) if class_id is None else class_id
    return f"class {k} ({model.class_names[k]})" if model.class_names else f"class {k}"


def cmd_activations(args):
    from ..activations import activation_grid, layer_maps
    model, image = _model_and_image(args)
    channels = picked_channels(model, args.layer, args.channels)
    maps = layer_maps(model, image, args.layer, channels)
    _write(args, activation_grid(maps, channels, shared_scale=not args.per_channel_scale), maps)


def cmd_top_patches(args):
    from ..image import save_png, write_text_atomic
    from ..photos import iter_images, sample_photos, warn_once
    from ..top_patches import patch_grid, top_patches
    model = model_from_args(args)
    channels = picked_channels(model, args.layer, args.channels)
    out = writable_dir(args.out)
    images = iter_images(args.images, args.size, warn_once()) if args.images else sample_photos()
    result = top_patches(model, images, args.layer, channels, k=args.k, size=args.size,
                         batch=args.batch)
    for c, examples in result.examples.items():
        save_png(patch_grid(examples), out / f"{args.layer}_{c}.png")
    report = {"layer": args.layer, "size": args.size, "images": result.n_images,
              "receptive_field": result.field._asdict(),
              "channels": {str(c): [{"value": e.value, "image": e.image, "y": e.y, "x": e.x}
                                    for e in examples] for c, examples in result.examples.items()}}
    write_text_atomic(json.dumps(report, indent=1), out / "results.json")
    print(f"wrote {plural(len(channels), 'grid')} and results.json to {out} "
          f"({plural(result.n_images, 'image')}, receptive field {result.field.size} px)")


def cmd_project(args):
    import numpy as np

    from .. import attribution as attr
    from ..image import to_uint8
    model, image = _model_and_image(args)
    grad = attr.project(model, image, args.layer, args.channel,
                        method=args.method, reduce=args.reduce)
    _write(args, np.concatenate([to_uint8(image), attr.gradient_image(grad)], axis=1), grad)


def cmd_saliency(args):
    import jax
    import numpy as np

    from .. import attribution as attr
    from ..image import to_uint8
    model, image = _model_and_image(args)
    x = image[None]
    if args.method == "smoothgrad":
        heat = attr.smoothgrad(model, x, jax.random.key(args.seed), args.class_id, n=args.samples)
    else:
        heat = (attr.saliency if args.method == "vanilla" else attr.grad_x_input)(
            model, x, args.class_id)
    heat = np.asarray(heat[0])
    _write(args, np.concatenate([to_uint8(image), attr.colorize(heat)], axis=1), heat)
    print(f"  for {_class_label(model, image, args.class_id)}")


def cmd_gradcam(args):
    import numpy as np

    from .. import attribution as attr
    model, image = _model_and_image(args)
    fn = attr.gradcam if args.method == "gradcam" else attr.cam
    heat = np.asarray(fn(model, image[None], class_idx=args.class_id, layer=args.layer)[0])
    _write(args, attr.overlay(image, heat), heat)
    print(f"  for {_class_label(model, image, args.class_id)}, layer "
          f"{args.layer or attr.last_spatial_layer(model)}")


def cmd_unit(args):
    from ..image import save_png
    from ..unit_sheet import unit_sheet
    check_png_outputs(args)
    model = model_from_args(args)
    sheet = unit_sheet(model, args.layer, args.channel, render_config(args),
                       images=args.images or None, k=args.k, image_size=args.image_size)
    save_png(sheet, args.out)
    found = "top patch" if args.k == 1 else f"top {args.k} patches"
    print(f"wrote {args.out} ({args.layer}:{args.channel}: feature visualization, {found}, "
          "deconvnet and guided projections)")


def register(sub) -> None:
    """Add the classic-view subcommands to an ``argparse`` subparsers object."""
    def command(name, about, func, image=True, out_help="output .png file"):
        p = add_model_options(sub.add_parser(name, help=about))
        if image:
            p.add_argument("image")
            p.add_argument("--size", type=int, default=None,
                           help="image side in pixels (default: the model's input size)")
            p.add_argument("--save-array", metavar="FILE.npy", help="also save the raw array")
        p.add_argument("--out", required=True, help=out_help)
        p.set_defaults(func=func)
        return p

    p = command("activations", "a layer's activation maps on one image", cmd_activations)
    p.add_argument("--layer", required=True)
    p.add_argument("--channels", default="0-15", help="e.g. 0-7,12 or all (default: 0-15)")
    p.add_argument("--per-channel-scale", action="store_true",
                   help="one color scale per channel instead of a shared one")

    p = command("top-patches", "the dataset patches that excite channels most", cmd_top_patches,
                image=False, out_help="output folder")
    p.add_argument("--images", help="folder of photos, searched with its subfolders, in any "
                   "format Pillow reads (default: scikit-image photos)")
    p.add_argument("--layer", required=True)
    p.add_argument("--channels", required=True, help="e.g. 0-7,12")
    p.add_argument("--k", type=int, default=9, help="patches per channel")
    p.add_argument("--size", type=int, default=224, help="image side in pixels")
    p.add_argument("--batch", type=int, default=16, help="images per forward pass")

    p = command("project", "deconvnet / guided-backprop projection of a channel", cmd_project)
    p.add_argument("--layer", required=True)
    p.add_argument("--channel", type=int, required=True)
    p.add_argument("--method", choices=PROJECTIONS, default="deconvnet",
                   help="the backward rule")
    p.add_argument("--reduce", choices=("max", "mean"), default="max",
                   help="project the channel's strongest unit or its mean")

    p = command("saliency", "input-gradient saliency for a class", cmd_saliency)
    p.add_argument("--class", dest="class_id", type=int, default=None,
                   help="class id (default: the top prediction)")
    p.add_argument("--method", choices=SALIENCY_METHODS, default="vanilla", help="the saliency map")
    p.add_argument("--samples", type=int, default=16, help="SmoothGrad noisy copies")
    p.add_argument("--seed", type=int, default=0, help="seed of SmoothGrad's noise")

    p = command("gradcam", "Grad-CAM (or CAM) heatmap for a class", cmd_gradcam)
    p.add_argument("--class", dest="class_id", type=int, default=None,
                   help="class id (default: the top prediction)")
    p.add_argument("--layer", default=None, help="default: the last layer with a spatial map")
    p.add_argument("--method", choices=("gradcam", "cam"), default="gradcam")

    p = command("unit", "one channel's sheet: feature visualization, top patches, projections",
                cmd_unit, image=False)
    p.add_argument("--layer", required=True)
    p.add_argument("--channel", type=int, required=True)
    p.add_argument("--images", help="folder of photos, searched with its subfolders, in any "
                   "format Pillow reads (default: scikit-image photos)")
    p.add_argument("--k", type=int, default=9, help="top patches")
    p.add_argument("--image-size", type=int, default=None,
                   help="side the photos are searched at (default: the model's input size)")
    add_render_options(p, steps=256)
