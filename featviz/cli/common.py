"""What the commands share: the model and rendering options, the user-error classes, and the
checks made before any work (option ranges, a writable output).

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

import math
import tempfile
from pathlib import Path


class UsageError(ValueError):
    """A bad command-line value."""


def user_errors() -> tuple[type[Exception], ...]:
    """The exception classes that mean a user mistake (printed as one line, exit status 2)."""
    from ..atlas import ChannelRangeError, SizeError
    from ..attribution import ClassifierError, ClassIndexError
    from ..engine import ChunkTooLargeError
    from ..image import ImageReadError
    from ..models import UnknownLayerError, UnknownModelError, WeightsFileError
    from ..models.keras import KerasModelError, KerasUnavailableError
    from ..objectives import ObjectiveIndexError
    from ..photos import DatasetError
    return (UsageError, ChannelRangeError, ChunkTooLargeError, SizeError, ImageReadError,
            UnknownLayerError, UnknownModelError, WeightsFileError, ClassIndexError,
            ClassifierError, DatasetError, KerasModelError, KerasUnavailableError,
            ObjectiveIndexError)


# Every numeric option of every command: (lowest, highest) allowed; None is unbounded. "lr"
# must also be finite and above zero.
OPTION_RANGES = {
    "steps": (1, 1_000_000), "size": (16, 4096), "seed": (0, 2**32 - 1), "lr": (0, 100),
    "chunk": (1, None), "columns": (1, None), "top": (1, None), "k": (1, 10_000),
    "batch": (1, None), "samples": (1, 10_000), "channel": (0, None), "class_id": (0, None),
    "num_processes": (1, None), "process_id": (0, None), "image_size": (16, 4096),
}


def check_options(args) -> None:
    """Raise ``UsageError`` for the first numeric option outside ``OPTION_RANGES`` (or a
    malformed ``--lr-ramp``)."""
    if getattr(args, "lr_ramp", None) is not None:
        lr_ramp(args.lr_ramp)
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


# ``featviz.engine.RAMP_RANGE``, spelled out so that checking options needs no JAX
RAMP_RANGE = (1e-3, 1e3)


def lr_ramp(text: str) -> tuple[float, float]:
    """``--lr-ramp FIRST,LAST`` as two numbers, or a ``UsageError`` unless both are in
    ``RAMP_RANGE``.

    >>> lr_ramp("1.6,0.5")
    (1.6, 0.5)
    """
    try:
        first, last = (float(part) for part in text.split(","))
    except ValueError:
        raise UsageError(f"--lr-ramp {text}: give two numbers FIRST,LAST, e.g. 1.6,0.5 "
                         "(1,1 for a constant rate)") from None
    low, high = RAMP_RANGE
    if not all(low <= r <= high for r in (first, last)):  # also refuses NaN
        raise UsageError(f"--lr-ramp {text}: both multiples must be from {low:g} to {high:g}")
    return first, last


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


def plural(n: int, noun: str) -> str:
    """``n`` and ``noun``, singular for one: "1 image", "2 images"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def picked_channels(model, layer: str, spec: str | None) -> list[int]:
    """The channels of ``layer`` (its name checked) that a ``--channels`` spec picks."""
    from ..atlas import parse_channels
    return parse_channels(spec, model.channels(model.check_layer(layer)), layer)


def add_model_options(parser):
    """``--model`` and ``--weights``; returns the parser."""
    parser.add_argument("--model", help="a zoo model ('featviz models' lists them; default: "
                        "efficientnet-lite0) or keras:NAME, a keras.applications network "
                        "(with --weights FILE)")
    parser.add_argument("--weights", help="another copy of the model's weights file")
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
