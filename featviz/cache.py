"""The persistent compilation cache: compiled render programs kept on disk and shared by every
process, so only the first run of a job pays XLA's compile time.

It is on by default, for library calls and the command line alike, as soon as ``featviz`` is
imported (before JAX is: through JAX's own environment variables, so that importing featviz
stays cheap; after it: through ``jax.config``). Location: ``$FEATVIZ_CACHE_DIR``, by default
``~/.cache/featviz/xla`` (under ``$XDG_CACHE_HOME`` when set). ``FEATVIZ_CACHE_DIR=""`` turns
it off. A cache that JAX was already told to use (``JAX_COMPILATION_CACHE_DIR`` or
``jax_compilation_cache_dir``) is left as it is. JAX decides once per process, at its first
compilation, whether a cache is used: set these before compiling anything.

A program's cache key is its StableHLO text plus the JAX version, platform and compile
options; featviz passes the seed, steps, learning rate, channels and network weights as
arguments, never as constants, so none of them enters the key.

Example:
    >>> enable_persistent_cache() == cache_dir()   # the directory in use, or None if off
    True
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

# Programs that compile faster than this are not worth a disk entry (JAX's default is 1 s;
# a final-evaluation forward program takes about 0.8 s on the CPU and is worth keeping).
MIN_COMPILE_SECONDS = 0.3


def default_cache_dir() -> str:
    """``$FEATVIZ_CACHE_DIR``, else ``$XDG_CACHE_HOME/featviz/xla`` or ``~/.cache/featviz/xla``."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return os.environ.get("FEATVIZ_CACHE_DIR", str(base / "featviz" / "xla"))


def enable_persistent_cache() -> str | None:
    """Point JAX's persistent compilation cache at ``default_cache_dir()`` unless it already
    has a directory or featviz's is turned off; returns the directory in use (None: off)."""
    path = default_cache_dir()
    if "jax" not in sys.modules:  # JAX reads these when it is imported
        if path and not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            os.environ["JAX_COMPILATION_CACHE_DIR"] = path
            os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = str(MIN_COMPILE_SECONDS)
        return os.environ.get("JAX_COMPILATION_CACHE_DIR") or None
    import jax
    # jax.config's options are attributes it defines at runtime, unknown to its type hints
    if path and not jax.config.jax_compilation_cache_dir:  # pyright: ignore[reportAttributeAccessIssue]
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return cache_dir()


def cache_dir() -> str | None:
    """The directory JAX's persistent compilation cache uses now (None: no cache)."""
    import jax
    # jax.config's options are attributes it defines at runtime, unknown to its type hints
    return jax.config.jax_compilation_cache_dir or None  # pyright: ignore[reportAttributeAccessIssue]
