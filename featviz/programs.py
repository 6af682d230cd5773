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
also cost a trace, in ``<cache directory>/shapes``); it is off when the cache is off.

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
from functools import lru_cache
from pathlib import Path

import jax
import numpy as np

from . import cache
from . import objectives as objectives_lib

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
    import jaxlib
    environment = {k: v for k, v in sorted(os.environ.items())
                   if k.startswith(("FEATVIZ_", "XLA_", "JAX_"))
                   and "CACHE" not in k and "LOG" not in k}
    document = {"parts": parts, "source": source_fingerprint(), "jax": jax.__version__,
                "jaxlib": jaxlib.__version__, "environment": environment}
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def _path(key: str, kind: str = "programs", suffix: str = ".bin") -> Path | None:
    folder = cache.cache_dir()
    return Path(folder) / kind / f"{key}{suffix}" if folder else None


def layer_shape(model, layer: str, size: int, compute) -> tuple:
    """``compute()`` (a layer's activation shape, which costs a trace of the network), kept in
    the store for zoo models: a new process looks it up instead of tracing."""
    if not model.program_id:
        return compute()
    path = _path(program_key({"what": "layer shape", "model": model.program_id, "layer": layer,
                              "weights": weight_signature(model.params), "size": size}),
                 "shapes", ".json")
    if path is not None and path.is_file():
        try:
            return tuple(json.loads(path.read_text()))
        except (OSError, ValueError):
            pass
    shape = compute()
    if path is not None:
        from .image import write_text_atomic
        try:
            write_text_atomic(json.dumps(list(shape)), path)
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
    """The stored executable for ``key``, or None (no store, no entry, or an unreadable one)."""
    from jax.experimental.serialize_executable import deserialize_and_load

    path = _path(key)
    if path is None or not path.is_file():
        return None
    try:
        payload, in_tree, out_tree = pickle.loads(path.read_bytes())
        compiled = deserialize_and_load(payload, in_tree, out_tree)
    except Exception as err:  # noqa: BLE001 - a damaged or foreign entry is compiled anew
        log.warning("removed unreadable stored program %s (%s)", path.name, err)
        path.unlink(missing_ok=True)
        return None
    log.info("loaded stored program %s", path.name)
    return compiled


def save(key: str, compiled) -> None:
    """Store ``compiled`` under ``key`` (atomically; a failure only costs the next process a
    compilation)."""
    from jax.experimental.serialize_executable import serialize

    from .image import _write_atomic
    path = _path(key)
    if path is None:
        return
    try:
        blob = pickle.dumps(serialize(compiled))
        _write_atomic(path, lambda f: f.write(blob), "wb")
    except Exception as err:  # noqa: BLE001 - e.g. a backend that cannot serialize
        log.warning("could not store program %s (%s)", path.name, err)
