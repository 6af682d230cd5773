"""Which channels of which layer: ``"0-7,12"`` lists, range checks, and the smallest image
a layer can be rendered at. Nothing here imports JAX.

Example:
    >>> parse_channels("0-3,7", 16)
    [0, 1, 2, 3, 7]
    >>> parse_channels("3-1", 16)
    Traceback (most recent call last):
    ...
    featviz.errors.ChannelRangeError: bad channel range '3-1'; write low-high, e.g. 0-7
"""
from __future__ import annotations

from collections.abc import Sequence

from .errors import ChannelRangeError, SizeError


def parse_channels(spec: str | None, n_channels: int, layer: str | None = None) -> list[int]:
    """Parse ``"0-7,12"`` (or ``"all"``/None for every channel) into sorted unique indices of
    a layer of ``n_channels`` (named in the error, where given)."""
    if spec is None or spec.strip().lower() == "all":
        return list(range(n_channels))
    chosen = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            lo, _, hi = part.partition("-")
            lo_i = int(lo)
            hi_i = int(hi) if hi else lo_i
        except ValueError:
            raise ChannelRangeError(f"bad channel list {spec!r}; write e.g. 0-7,12") from None
        if lo_i > hi_i:
            raise ChannelRangeError(f"bad channel range {part!r}; write low-high, e.g. 0-7")
        chosen.update(range(lo_i, hi_i + 1))
    check_channels(sorted(chosen), n_channels, layer)
    return sorted(chosen)


def check_channels(channels: Sequence[int], n_channels: int, layer: str | None = None) -> None:
    """Raise ``ChannelRangeError`` for the first channel outside ``0..n_channels - 1``."""
    bad = [c for c in channels if not 0 <= c < n_channels]
    if bad:
        owner = f"layer {layer}" if layer else "this layer"
        raise ChannelRangeError(f"channel {bad[0]} is out of range; {owner} has channels "
                                f"0-{n_channels - 1}")


def check_size(model, layer: str, size: int) -> None:
    """Raise ``SizeError`` unless a ``size`` px image gives ``layer`` a map of at least 2 x 2."""
    shape = model.layer_shape(model.check_layer(layer))
    if len(shape) < 3:
        return
    stride = max(1, round(model.image_size / shape[0]))
    minimum = max(16, 2 * stride)
    if size < minimum:
        raise SizeError(f"size {size} is too small for layer {layer} (stride {stride}); "
                        f"use size={minimum} or more")
