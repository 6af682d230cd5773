"""The ``featviz`` command: ``featviz --help`` lists the subcommands, ``featviz CMD --help``
their options. Building the parser imports no JAX; each command imports what it needs.

A user mistake (unknown layer, channel out of range, unreadable image, tampered weights file,
an option out of its range) prints one line that says what to do and exits with status 2,
without a traceback.

Example:
    >>> main(["render", "--layer", "blocks_8", "--steps", "0", "--out", "/tmp/x"])
    2
"""
from __future__ import annotations

import argparse
import functools
import sys
import warnings

from ..errors import FeatvizError, UsageError
from . import atlas_views, classic, photo_views, rendering, site
from .common import OPTION_RANGES, check_distributed, check_options, with_flags

__all__ = ["OPTION_RANGES", "UsageError", "build_parser", "main"]


class _ShowDefaults(argparse.HelpFormatter):
    """Help that ends each option's text with its default, where it has a value to show."""

    def _get_help_string(self, action):
        text = action.help or ""
        if any(action.default is value for value in (None, False, argparse.SUPPRESS)) \
                or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)".lstrip()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featviz", description="See what each filter of a "
                                     "convolutional network responds to.")
    parser_class = functools.partial(argparse.ArgumentParser, formatter_class=_ShowDefaults)
    # argparse only calls parser_class(**kwargs); typeshed asks for a class, not a partial
    sub = parser.add_subparsers(dest="command", required=True,
                                parser_class=parser_class)  # pyright: ignore[reportArgumentType]
    for group in (rendering, classic, atlas_views, photo_views, site):
        group.register(sub)
    return parser


def _join_run(args) -> None:
    """Join the multi-process run that ``--distributed`` names; JAX's refusal as a usage error."""
    from .. import distributed
    try:
        distributed.initialize(args.distributed, args.num_processes, args.process_id)
    except ValueError as err:
        hint = ("run it under a cluster manager such as SLURM, or give --distributed HOST:PORT "
                "--num-processes N --process-id I" if args.distributed == "auto"
                else "check --distributed, --num-processes and --process-id")
        raise UsageError(f"--distributed {args.distributed}: cannot join a run "
                         f"({str(err).rstrip('.')}); {hint}") from None


def _run(args) -> None:
    check_options(args)
    check_distributed(args)
    if getattr(args, "distributed", None):  # before anything touches a JAX backend
        _join_run(args)
    args.func(args)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as the commands print them: one line, no source location."""
    print(f"featviz: warning: {with_flags(str(message))}", file=sys.stderr)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            _run(args)
    except KeyboardInterrupt:
        print("featviz: interrupted; finished chunks are kept, rerun to resume", file=sys.stderr)
        return 130
    except OSError as err:  # a file system refusal met mid-way (disk full, permissions)
        print(f"featviz: error: cannot write {err.filename or 'a file'} ({err.strerror}); "
              "check the output path and free space", file=sys.stderr)
        return 2
    except FeatvizError as err:  # a user mistake: one line
        print(f"featviz: error: {with_flags(str(err))}", file=sys.stderr)
        return 2
    except Exception as err:  # running out of memory, else a bug: re-raised
        if "RESOURCE_EXHAUSTED" not in str(err) and not isinstance(err, MemoryError):
            raise
        print("featviz: error: out of memory for this job; use a smaller --size, --chunk or "
              "--batch", file=sys.stderr)
        return 2
    return 0
