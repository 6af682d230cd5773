"""Device memory: what is free, what a compiled program needs, what one image of a render is
estimated to need before anything is compiled, and so how many images to render at once.

A chunk may fill ``MEMORY_SHARE`` of the free memory of every device it runs on.

Example:
    >>> chunk_sizes(1280, 1000), chunk_sizes(10, 8, n_devices=4)
    (640, 8)
"""
from __future__ import annotations

import os

import jax
import numpy as np
from jax.extend.core import jaxprs_in_params

from .draws import abstract_keys
from .errors import ChunkTooLargeError

CPU_CHUNK = 8  # fastest image-steps per second on XLA:CPU (benchmarks/RESULTS.md)
MEMORY_SHARE = 0.8  # of the free device memory that a chunk may fill
PIPELINE_CANVASES = 16  # image-sized float32 buffers per image outside the network
_KEPT_FOR_BACKWARD = ("dot_general", "conv_general_dilated", "custom_vjp_call")


def free_memory_bytes(device) -> int:
    """Memory still free on ``device`` (for CPU devices: the host's available memory, page
    cache included, as the kernel reports it in /proc/meminfo)."""
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def program_bytes(compiled) -> int:
    """Device memory a compiled program needs: its arguments, outputs and temporaries."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return 0
    return (analysis.temp_size_in_bytes + analysis.argument_size_in_bytes
            + analysis.output_size_in_bytes)


def check_memory(compiled, batch: int, devices) -> None:
    """Raise ``ChunkTooLargeError`` (with a chunk size that fits) if the compiled program needs
    more memory per device than the devices have free."""
    need = program_bytes(compiled)
    free = min(free_memory_bytes(d) for d in devices)
    if need > free:
        fits = max(1, int(batch * MEMORY_SHARE * free / need))
        raise ChunkTooLargeError(
            f"a chunk of {batch} images needs {need / 2**30:.1f} GiB per device but only "
            f"{free / 2**30:.1f} GiB is free; use chunk={fits} (or fewer)", fits)


def _kept_bytes(jaxpr) -> int:
    """Bytes of the outputs of a jaxpr's matmuls, convolutions and custom-gradient calls (the
    values a backward pass keeps; elementwise work between them fuses), sub-programs included."""
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name.startswith(_KEPT_FOR_BACKWARD):
            total += sum(v.aval.size * v.aval.dtype.itemsize for v in eqn.outvars)
        elif not eqn.primitive.name.startswith("custom_"):
            total += sum(_kept_bytes(sub) for sub in jaxprs_in_params(eqn.params))
    return total


def image_bytes(settings, layer: str) -> int:
    """An estimate of the device memory one image of a render (``featviz.ascent``'s settings)
    needs: twice the values the network's forward pass up to ``layer`` keeps for its backward
    pass (the gradients take about as much), at the size the transforms hand the network, plus
    ``PIPELINE_CANVASES`` canvases for the parameterization, transforms and optimizer. It is
    read from the traced program; nothing is compiled (on the CPU it came out 1.1-1.5x the
    compiled programs' footprint for stem, blocks_8 and head)."""
    model, size = settings.model, settings.size
    canvas = jax.eval_shape(settings.transform, abstract_keys(),
                            jax.ShapeDtypeStruct((size, size, model.input_channels),
                                                 np.float32)).shape
    x = jax.ShapeDtypeStruct((1,) + tuple(canvas), settings.compute_dtype)
    forward = jax.make_jaxpr(lambda p, v: model.apply(p, v, [layer]))(model.params, x)
    return 2 * _kept_bytes(forward.jaxpr) + PIPELINE_CANVASES * x.size * 4


def chunk_sizes(n_channels: int, largest: int, n_devices: int = 1) -> int:
    """The chunk size that renders ``n_channels`` in as few chunks as ``largest`` allows, all
    of (nearly) the same size and a multiple of the devices: 1280 channels that fit 1000 at a
    time run as 2 x 640, not 1000 plus a padded 1000."""
    largest = max(n_devices, largest // n_devices * n_devices)
    n_chunks = -(-n_channels // largest)
    per_chunk = -(-n_channels // n_chunks)
    return -(-per_chunk // n_devices) * n_devices


def auto_chunk_size(settings, devices, layer: str, n_channels: int) -> int:
    """Channels per chunk: on CPUs the cache-friendly ``CPU_CHUNK`` per device; on
    accelerators as many as fit in ``MEMORY_SHARE`` of the free device memory (estimated by
    ``image_bytes``); balanced over the chunks either way."""
    if devices[0].platform == "cpu":
        largest = CPU_CHUNK * len(devices)
    else:
        free = min(free_memory_bytes(d) for d in devices)
        largest = int(MEMORY_SHARE * free / max(image_bytes(settings, layer), 1)) * len(devices)
    return chunk_sizes(n_channels, min(largest, 4096), len(devices))
