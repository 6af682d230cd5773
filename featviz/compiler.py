"""Compiling the render program: featviz's XLA options per platform, the store key of a
segment program, and the memo that compiles (or loads) each program once.

A program is looked up, in order: in the memo (this renderer compiled it already), in the
program store (``featviz.programs``, keyed without tracing, for programs whose code is all
featviz's), and in JAX's persistent cache (keyed by the lowered program); only then is it
compiled, and a program compiled here is added to the store.

Example:
    >>> compiler_options("cpu")
    {}
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import jax
import numpy as np

from . import cache, programs

# On the CPU, recent XLA hands matmuls to YNNPACK, whose results do not depend on how many
# threads share the work. XLA's own matmul kernels (``FEATVIZ_CPU_MATMULS=xla``) made a step of
# EfficientNet-Lite0 6% faster, but its images changed with the machine's core count and the
# number of host devices, which set how XLA splits loops over threads: featviz keeps XLA's
# default (benchmarks/RESULTS.md, "Images for any device count").
_XLA_OWN_CPU_MATMULS = {"xla_cpu_experimental_ynn_fusion_type": ""}
_REFUSED_OPTIONS: set = set()  # platforms whose XLA rejected featviz's options


def compiler_options(platform: str) -> dict:
    """The XLA options featviz compiles its render program with on ``platform``: XLA's
    defaults, unless the environment asks otherwise.

    ``FEATVIZ_CPU_MATMULS=xla`` compiles CPU programs with XLA's own matmul kernels instead of
    YNNPACK (faster, but the images then depend on the core and device count). On a GPU,
    ``FEATVIZ_GPU_AUTOTUNE_LEVEL`` (0-4; XLA's default is 4) sets how much XLA autotunes
    convolutions and matmuls while compiling, which costs compile time and may gain speed
    (``benchmarks/bench_end_to_end.py`` measures both).
    """
    options: dict = {}
    if platform == "cpu" and os.environ.get("FEATVIZ_CPU_MATMULS", "") == "xla":
        options.update(_XLA_OWN_CPU_MATMULS)
    level = os.environ.get("FEATVIZ_GPU_AUTOTUNE_LEVEL", "")
    if platform == "gpu" and level.isdigit():
        options["xla_gpu_autotune_level"] = int(level)
    return options


def compile_lowered(lowered, platform: str):
    """Compile with featviz's options for ``platform``; an XLA that does not know an option
    (older or newer than the one measured) compiles without them."""
    options = compiler_options(platform)
    if options and platform not in _REFUSED_OPTIONS:
        try:
            return lowered.compile(compiler_options=options)
        except Exception:  # noqa: BLE001 - XLA reports an unknown option as a generic error
            _REFUSED_OPTIONS.add(platform)
    return lowered.compile()


def segment_key(settings, model_params, objectives, keys, device) -> str | None:
    """The store key of a segment program (``featviz.ascent``) for this batch, or None where
    the store does not apply: objectives whose code featviz cannot name, a model not from the
    zoo, or several processes (JAX's cache keys their topology)."""
    signature = programs.objective_signature(objectives)
    if not (settings.model.program_id and signature and jax.process_count() == 1):
        return None
    return programs.program_key({
        "program": "render segment", "model": settings.model.program_id,
        "weights": programs.weight_signature(model_params),
        "size": settings.size, "compute_dtype": str(settings.compute_dtype),
        "loop": settings.loop,
        "objectives": signature, "keys": (keys.shape, str(keys.dtype)),
        "reads": sorted(settings.optimized_layers(objectives.layers).items()),
        "platform": device.platform, "device": device.device_kind,
        "options": compiler_options(device.platform)})


class Executables:
    """Compiled programs by the form and shapes of their arguments, each compiled or loaded
    once; ``seconds`` is the time spent tracing, lowering and compiling (or loading)."""

    def __init__(self):
        self._compiled: dict = {}
        self.seconds = 0.0

    def get(self, arguments, store_key: Callable[[], str | None], lower: Callable, platform: str,
            check: Callable = lambda compiled: None):
        """The program for ``arguments`` (a pytree of arrays). ``store_key()`` names it in the
        store (None: not stored); ``lower()`` lowers it; ``check(compiled)`` may refuse a new
        program (say, one too large for memory) by raising, and it is then not kept."""
        leaves, form = jax.tree_util.tree_flatten(arguments)
        memo_key = (form, tuple((np.shape(a), str(a.dtype)) for a in leaves))
        if memo_key in self._compiled:
            return self._compiled[memo_key]
        cache.enable_persistent_cache()
        began = time.perf_counter()
        key = store_key()
        compiled = programs.load(key) if key else None
        if compiled is None:
            lowered = lower()
            hits = programs.jax_cache_hits()
            compiled = compile_lowered(lowered, platform)
            if key and programs.jax_cache_hits() == hits:  # compiled here, now
                programs.save(key, compiled)
        self.seconds += time.perf_counter() - began
        check(compiled)
        self._compiled[memo_key] = compiled
        return compiled
