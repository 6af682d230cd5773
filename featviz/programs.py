"""Compiled render programs stored on disk under a key computed without tracing.

JAX's persistent cache (``featviz.cache``) keys a program by its lowered text, so even a cache
hit first traces and lowers the whole render program (about 1.5 s on EfficientNet-Lite0 on
the CPU). For the programs whose code featviz fully knows (a zoo model, the default
parameterization, transforms and optimizer, objectives built by ``featviz.objectives``, one
device), the store keys the program by what fixes that code instead: featviz's own source,
the JAX and XLA versions and flags, the platform, the model's name and weight shapes, the
objectives' form and the batch. A new process then loads the executable directly. Anything
else (your own module or objective function, several devices) goes through JAX's cache, as
does a program that JAX loaded from its own cache (only an executable compiled in this
process is stored).

The store lives in ``<cache directory>/programs`` (and the zoo models' layer shapes, which
also cost a trace, in ``<cache directory>/shapes``); it is off when the cache is off. An entry is
a pickle, so it is read only when the file and its folders up to the cache directory are yours
and nobody else may write them; otherwise featviz warns once and compiles (``load``).

Example:
    >>> import numpy as np
    >>> from featviz import objectives as obj
    >>> objective_signature(obj.stack([obj.channel("conv", 0), obj.channel("conv", 1)]))
    "Objective(featviz.objectives._channel_value,('channel','conv'),{'conv'})...|(2,):int32"
    >>> objective_signature(obj.channel("conv", 0) + obj.l1()) is not None
    True
    >>> objective_signature(obj.Objective(lambda p, a, i, s: 0.0, (), ())) is None
    True
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import stat
import warnings
from functools import lru_cache
from pathlib import Path

import jax
import numpy as np

from . import cache, objectives as objectives_lib

log = logging.getLogger(__name__)
KNOWN_MODULES = ("featviz.objectives", "operator", "_operator")


class _Unknown(Exception):
    """A value whose code featviz cannot name stably."""


def _stable(value) -> str:
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "(" + ",".join(_stable(v) for v in value) + ")"
    if isinstance(value, (set, frozenset)):
        return "{" + ",".join(sorted(_stable(v) for v in value)) + "}"
    if callable(value) and getattr(value, "__module__", None) in KNOWN_MODULES \
            and "<" not in getattr(value, "__qualname__", "<"):
        return f"{value.__module__.lstrip('_')}.{value.__qualname__}"
    raise _Unknown(value)


def weight_signature(params) -> list:
    """Shape and dtype of every weight array: what of the weights fixes a program."""
    return [(np.shape(a), str(a.dtype)) for a in jax.tree.leaves(params)]


def objective_signature(objectives) -> str | None:
    """A text that fixes a stacked objective's program (its functions, static structure and
    leaf shapes), or None when it holds code featviz cannot name (e.g. a lambda)."""
    if not isinstance(objectives, objectives_lib.Objective):
        return None
    try:
        head = (f"Objective({_stable(objectives.fn)},{_stable(objectives.static)},"
                f"{_stable(objectives.layers)})")
    except _Unknown:
        return None
    leaves, structure = jax.tree_util.tree_flatten(objectives.params)
    shapes = ";".join(f"{np.shape(a)}:{np.asarray(a).dtype}" for a in leaves)
    return f"{head}{structure}|{shapes}"


@lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """SHA-256 of featviz's own source files: a new version of any of them is a new key."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def program_key(parts: dict) -> str:
    """The store key of a program: ``parts`` plus featviz's source, JAX's versions and every
    setting of the environment that changes what XLA compiles."""
    import jaxlib.version
    environment = {k: v for k, v in sorted(os.environ.items())
                   if k.startswith(("FEATVIZ_", "XLA_", "JAX_"))
                   and "CACHE" not in k and "LOG" not in k}
    document = {"parts": parts, "source": source_fingerprint(), "jax": jax.__version__,
                "jaxlib": jaxlib.version.__version__, "environment": environment}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def _path(key: str, kind: str = "programs", suffix: str = ".bin") -> Path | None:
    folder = cache.cache_dir()
    return Path(folder) / kind / f"{key}{suffix}" if folder else None


_warned_untrusted = False  # the one warning of an untrusted store, this process


def _doubt(path: Path, status: os.stat_result | None = None) -> str | None:
    """Why someone else could have written ``path`` (None: only you can); raises OSError."""
    if not hasattr(os, "getuid"):  # Windows: mode bits do not tell who may write
        return None
    status = os.stat(path) if status is None else status
    if status.st_uid != os.getuid():
        return f"owned by uid {status.st_uid}, not by you (uid {os.getuid()})"
    if status.st_mode & 0o022:
        return f"writable by group or others (mode {stat.S_IMODE(status.st_mode):o})"
    return None


def _warn_untrusted(path: Path, reason: str) -> None:
    global _warned_untrusted
    if not _warned_untrusted:
        _warned_untrusted = True
        warnings.warn(f"not loading stored programs: {path} is {reason}, so someone else could "
                      "have written them; compiling instead (the store is used only where you "
                      "own it and nobody else may write it)", RuntimeWarning, stacklevel=4)


def _folders_doubt(folder: Path) -> tuple[Path, str] | None:
    """The first of the cache directory and ``folder`` in it that someone else could write,
    and why; None when only you can write both."""
    for path in (folder.parent, folder):  # from the top: a folder of yours holds what it holds
        reason = _doubt(path)
        if reason:
            return path, reason
    return None


def _read_trusted(path: Path) -> bytes | None:
    """The bytes of a store entry, or None when it is missing, unreadable or untrusted (then
    warned of, once): it and its folders must be yours and writable by you only."""
    try:
        doubt = _folders_doubt(path.parent)
        if doubt is None:
            with open(path, "rb") as f:  # the folders are yours: nobody swaps the file now
                reason = _doubt(path, os.fstat(f.fileno()))
                if reason is None:
                    return f.read()
                doubt = path, reason
    except OSError:
        return None
    _warn_untrusted(*doubt)
    return None


def _own_folder(kind: str) -> Path | None:
    """``<cache directory>/<kind>``, made private (0700) where it is missing; None when the
    store is off, or someone else could write the folder (warned of, once)."""
    root = cache.cache_dir()
    if not root:
        return None
    folder = Path(root) / kind
    try:
        Path(root).mkdir(mode=0o700, parents=True, exist_ok=True)
        reason = _doubt(folder.parent)  # nothing is made in a folder others could write
        if reason is None:
            folder.mkdir(mode=0o700, exist_ok=True)
        doubt = (folder.parent, reason) if reason else _folders_doubt(folder)
    except OSError:
        return None
    if doubt:
        _warn_untrusted(*doubt)
        return None
    return folder


def layer_shape(model, layer: str, size: int, compute) -> tuple:
    """``compute()`` (a layer's activation shape, which costs a trace of the network), kept in
    the store for zoo models: a new process looks it up instead of tracing."""
    if not model.program_id:
        return compute()
    path = _path(program_key({"what": "layer shape", "model": model.program_id, "layer": layer,
                              "weights": weight_signature(model.params), "size": size}),
                 "shapes", ".json")
    text = _read_trusted(path) if path is not None and path.is_file() else None
    if text is not None:
        try:
            return tuple(json.loads(text))
        except ValueError:
            pass
    shape = compute()
    if path is not None and _own_folder("shapes"):
        from .image import write_text_atomic
        try:
            write_text_atomic(json.dumps(list(shape)), path, permissions=0o600)
        except OSError:
            pass
    return shape


_loaded_from_jax_cache = [0]  # programs JAX loaded from its persistent cache, this process


def _count_cache_hits(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _loaded_from_jax_cache[0] += 1


jax.monitoring.register_event_listener(_count_cache_hits)


def jax_cache_hits() -> int:
    """How many programs JAX has loaded from its persistent cache in this process. Only an
    executable compiled in this process may be stored: one that JAX loaded from its cache
    serializes without all of its compiled functions."""
    return _loaded_from_jax_cache[0]


def load(key: str):
    """The stored executable for ``key``, or None (no store, no entry, an unreadable one, or
    one that someone else could have written: see ``_read_trusted``)."""
    from jax.experimental.serialize_executable import deserialize_and_load

    path = _path(key)  # the folders are made private before JAX's cache makes the root
    if path is None or _own_folder("programs") is None or not path.is_file():
        return None
    blob = _read_trusted(path)
    if blob is None:
        return None
    try:
        payload, in_tree, out_tree = pickle.loads(blob)
        compiled = deserialize_and_load(payload, in_tree, out_tree)
    except Exception as err:  # noqa: BLE001 - a damaged or foreign entry is compiled anew
        log.warning("removed unreadable stored program %s (%s)", path.name, err)
        path.unlink(missing_ok=True)
        return None
    log.info("loaded stored program %s", path.name)
    return compiled


def save(key: str, compiled) -> None:
    """Store ``compiled`` under ``key`` (atomically, readable by you only; a failure only
    costs the next process a compilation). Nothing is stored in a folder others could write."""
    from jax.experimental.serialize_executable import serialize

    from .image import _write_atomic
    path = _path(key)
    if path is None or _own_folder("programs") is None:
        return
    try:
        blob = pickle.dumps(serialize(compiled))
        _write_atomic(path, lambda f: f.write(blob), "wb", permissions=0o600)
    except Exception as err:  # noqa: BLE001 - e.g. a backend that cannot serialize
        log.warning("could not store program %s (%s)", path.name, err)
