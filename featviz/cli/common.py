"""What the commands share: the model and render options, the checks made before any work
(option ranges, a writable output), and the flags that library messages' arguments stand for.

Nothing here imports JAX, so ``featviz --help`` and a mistyped option answer at once.

Example:
    >>> import argparse
    >>> args = argparse.Namespace(steps=0)
    >>> try:
    ...     check_options(args)
    ... except UsageError as err:
    ...     print(err)
    --steps must be from 1 to 1000000, not 0
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

from ..config import (
    ACTIVATIONS,
    DEFAULT_LR,
    DEFAULT_LR_RAMP,
    OPTION_RANGES,
    PARAMETERIZATIONS,
    PRECISIONS,
    VIEWS,
    RenderConfig,
    checked_ramp,
    range_error,
)
from ..errors import ConfigError, UsageError

# the settings whose flag is not their name
_OPTION_FLAGS = {"class_id": "--class", "sample_count": "--samples"}


def check_options(args) -> None:
    """Raise ``UsageError`` for the first numeric option outside ``OPTION_RANGES`` (or a
    malformed ``--lr-ramp``)."""
    if getattr(args, "lr_ramp", None) is not None:
        lr_ramp(args.lr_ramp)
    for name in OPTION_RANGES:
        value = getattr(args, name, None)
        flag = _OPTION_FLAGS.get(name, "--" + name.replace("_", "-"))
        problem = None if value is None else range_error(name, value, flag)
        if problem:
            raise UsageError(problem)


def lr_ramp(text: str) -> tuple[float, float]:
    """``--lr-ramp FIRST,LAST`` as two numbers, or a ``UsageError`` unless both are in
    ``RAMP_RANGE``.

    >>> lr_ramp("1.6,0.5")
    (1.6, 0.5)
    """
    try:
        return checked_ramp(text, f"--lr-ramp {text}:")
    except ConfigError as err:
        raise UsageError(str(err)) from None


def check_distributed(args) -> None:
    """Raise ``UsageError`` where ``--distributed``, ``--num-processes`` and ``--process-id``
    cannot make a run: a malformed address, a missing or stray option, an id out of range."""
    spec = getattr(args, "distributed", None)
    given = [flag for flag, dest in (("--num-processes", "num_processes"),
                                     ("--process-id", "process_id"))
             if getattr(args, dest, None) is not None]
    if spec is None or spec == "auto":
        if given:
            raise UsageError(f"{given[0]} goes with --distributed HOST:PORT; add that or drop "
                             f"{given[0]}" + (" (auto reads it from the cluster)" if spec else ""))
        return
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f"--distributed {spec} is not HOST:PORT; give e.g. localhost:12345 "
                         "(port 1-65535) or auto")
    if len(given) < 2:
        raise UsageError(f"--distributed {spec} needs --num-processes N and --process-id I "
                         "(I from 0 to N-1)")
    if args.process_id >= args.num_processes:
        raise UsageError(f"--process-id must be from 0 to {args.num_processes - 1} with "
                         f"--num-processes {args.num_processes}, not {args.process_id}")


def add_distributed_options(p):
    """``--distributed``, ``--num-processes`` and ``--process-id`` (``check_distributed``
    checks them, ``featviz.cli`` joins the run); returns the parser."""
    p.add_argument("--distributed", metavar="HOST:PORT|auto",
                   help="join a multi-process run through jax.distributed")
    p.add_argument("--num-processes", type=int,
                   help="processes in the run (with --distributed HOST:PORT)")
    p.add_argument("--process-id", type=int, help="this process's number, 0 to N-1")
    return p


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, singular for one: "1 image", "2 images"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def picked_channels(model, layer: str, spec: str | None) -> list[int]:
    """The channels of ``layer`` (its name checked) that a ``--channels`` spec picks."""
    from ..channels import parse_channels
    return parse_channels(spec, model.channels(model.check_layer(layer)), layer)


def add_model_options(parser):
    """``--model`` and ``--weights``; returns the parser."""
    parser.add_argument("--model", help="a zoo model ('featviz models' lists them; default: "
                        "efficientnet-lite0); keras:NAME, a keras.applications network with "
                        "its ImageNet weights (Keras's cached file, downloaded by Keras if "
                        "missing, or --weights FILE); a model saved by Keras (mine.keras, "
                        "mine.h5); or a function that returns one (a featviz Model, a Keras "
                        "model, a Flax module and its variables): package.module:function or "
                        "path/to/file.py:function")
    parser.add_argument("--weights", help="another weights file for a zoo model or keras:NAME")
    return parser


def model_from_args(args):
    """The model that ``--model``/``--weights`` name."""
    from ..models import DEFAULT_MODEL, WeightsFileError, load_model
    if args.weights is not None and not Path(args.weights).is_file():
        raise WeightsFileError(f"no weights file at {args.weights}; give the path of a weights "
                               "file")
    return load_model(args.model or DEFAULT_MODEL, args.weights)


def _check_writable(folder: Path, target, flag: str) -> None:
    """Raise ``UsageError`` unless files can be made in ``folder`` (or, where it does not exist
    yet, in its nearest existing ancestor); ``target`` is the output path the user gave."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"cannot write {flag} {target}: {existing} is a file, not a folder; "
                         f"choose another {flag}")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError:
        raise UsageError(f"cannot write {flag} {target}: {existing} is not writable; choose "
                         f"another {flag}") from None


def writable_dir(folder, flag: str = "--out") -> Path:
    """``folder``, checked before any work to be a folder that files can be written in, or one
    that can be made; nothing is created."""
    folder = Path(folder)
    _check_writable(folder, folder, flag)
    return folder


def writable_file(path, flag: str = "--out") -> Path:
    """``path``, checked before any work to name a file that can be written; nothing is
    created."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder; give a file name")
    _check_writable(path.parent, path, flag)
    return path


def check_png_outputs(args) -> None:
    """Check that ``--out`` names a writable .png file and ``--save-array`` (where given) a
    writable file, before any work."""
    if not args.out.lower().endswith(".png"):
        raise UsageError(f"--out {args.out} must name a .png file, e.g. --out {args.command}.png")
    writable_file(args.out)
    if getattr(args, "save_array", None):
        writable_file(args.save_array, "--save-array")


_DEFAULTS = RenderConfig()


def add_render_options(p, *, steps: int = _DEFAULTS.steps):
    """Every render setting of ``RenderConfig`` as an option, with its default (``steps``: this
    command's); ``render_config`` reads them back. Returns the parser."""
    p.add_argument("--steps", type=int, default=steps, help="gradient-ascent steps")
    p.add_argument("--size", type=int, default=_DEFAULTS.size, help="image side in pixels")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                   help="the same seed gives the same images")
    p.add_argument("--lr", type=float, default=DEFAULT_LR, help="Adam learning rate")
    p.add_argument("--lr-ramp", default=",".join(map(str, DEFAULT_LR_RAMP)), metavar="FIRST,LAST",
                   help="the learning rate goes linearly from FIRST x --lr at the first step "
                   "to LAST x --lr at the last; 1,1 keeps it constant (Lucid)")
    p.add_argument("--param", choices=PARAMETERIZATIONS, default=_DEFAULTS.param,
                   help="image parameterization: Lucid's Fourier basis, raw pixels, or MaCo "
                   "(phase only, photo magnitude spectrum, with its own crops)")
    p.add_argument("--activation", choices=ACTIVATIONS, default=_DEFAULTS.activation,
                   help="on a rectified layer (e.g. relu6-capped 'head'), optimize its values "
                   "before the rectifier (pre) or after it (post)")
    p.add_argument("--precision", choices=PRECISIONS, default=_DEFAULTS.precision,
                   help="the network's compute precision (image parameters stay float32)")
    p.add_argument("--redirect-steps", type=int, default=_DEFAULTS.redirect_steps,
                   help="first steps in which dead rectifiers pass a redirected gradient")
    p.add_argument("--chunk", type=int, default=None,
                   help="images rendered at once (default: 8 on CPU, what fits on GPU)")
    p.add_argument("--view", choices=VIEWS, default=_DEFAULTS.view,
                   help="what each unit's image maximizes: its channel, its centre neuron, or "
                   "the channel's negative (what the unit responds to least)")
    p.add_argument("--diverse", type=int, default=_DEFAULTS.diverse, metavar="K",
                   help="K images per unit, pushed apart by a diversity term among themselves")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def render_config(args) -> RenderConfig:
    """The ``RenderConfig`` that ``add_render_options``'s options give."""
    return RenderConfig(steps=args.steps, size=args.size, seed=args.seed, lr=args.lr,
                        lr_ramp=lr_ramp(args.lr_ramp), param=args.param,
                        activation=args.activation, precision=args.precision,
                        redirect_steps=args.redirect_steps, chunk=args.chunk, view=args.view,
                        diverse=args.diverse)


# a library message's argument -> the option it is on the command line
_FLAGS = {"chunk_size": "--chunk", "chunk": "--chunk", "size": "--size", "weights": "--weights",
          "steps": "--steps", "lr": "--lr", "lr_ramp": "--lr-ramp", "image_size": "--image-size",
          "devices": "--devices", "diverse": "--diverse"}
_ARGUMENT = re.compile(r"\b(" + "|".join(sorted(_FLAGS, key=len, reverse=True)) + r")=")


def with_flags(message: str) -> str:
    """A library message with its arguments named as the command line's options.

    >>> with_flags("use chunk=3 (or fewer), or size=64")
    'use --chunk 3 (or fewer), or --size 64'
    """
    return _ARGUMENT.sub(lambda m: _FLAGS[m.group(1)] + " ", message)
