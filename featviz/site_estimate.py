"""How long a gallery will take and how much disk it will fill, told before it starts.

Every part's work is counted in forward passes of the network up to a layer, whose
floating-point operations come from XLA's cost analysis of the lowered program (nothing is
compiled for it); one timed forward pass on this machine turns operations into seconds. The
factors below (and the compile times, which the compilation cache shortens on a rerun) were
fitted to a gallery of EfficientNet-Lite0 (2 layers x 16 units) on a 2-core CPU; an estimate is
good to a factor of about 1.5.

Example:
    >>> from featviz import RenderConfig, load_model
    >>> guess = estimate(load_model("tiny"), {"conv3": [0, 1]}, RenderConfig(steps=8, size=32))
    >>> sorted(guess.seconds), guess.files > 10
    (['compile', 'examples', 'links', 'render'], True)
"""
from __future__ import annotations

import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .attribution import score_layer
from .config import VIEWS, RenderConfig
from .models.base import Model
from .photos import PhotoSource
from .site_data import EXAMPLE_SIDE
from .top_patches import projection_rules
from .unit_links import ANALYSIS_PHOTOS, has_classes

RENDER_PASSES = 3.5  # a render step of one image, in forward passes (forward, backward, rest)
LINK_PASSES = 1.2  # a unit's links on one photo, in forward passes (their backward passes)
RENDER_COMPILE, PROGRAM_COMPILE = 6.5, 2.5  # seconds to compile a render program, another one
EXAMPLE_PROGRAMS = 3  # compiled per layer for its examples: receptive field, search, projection
RENDER_PNG_BYTES = 2.6  # a render's PNG, bytes per pixel
PREVIEW_BYTES, PATCH_BYTES = 0.53, 0.18  # WebP bytes per pixel: diverse previews, examples
UNIT_BYTES = 26_000  # a unit's HTML page, thumbnail and class vector


class SiteEstimate(NamedTuple):
    """Seconds per part (render, compile, examples, links), megabytes and files."""
    seconds: dict
    megabytes: float
    files: int

    def summary(self) -> str:
        """One line for the command line: the total time, each part's, and the size.

        >>> print(SiteEstimate({"render": 300.0, "compile": 40.0}, 12.3, 900).summary())
        ... # doctest: +NORMALIZE_WHITESPACE
        estimate: about 5.7 min (render 5 min, compile 40 s) and 12 MB in 900 files from
        scratch; parts already done are kept
        """
        parts = ", ".join(f"{name} {_duration(s)}" for name, s in self.seconds.items())
        total = sum(self.seconds.values())
        about = f"{total / 60:.1f} min" if total >= 60 else f"{total:.0f} s"
        return (f"estimate: about {about} ({parts}) and {self.megabytes:.0f} MB in "
                f"{self.files} files from scratch; parts already done are kept")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


def forward_flops(model: Model, layer: str, size: int) -> float:
    """Floating-point operations of one image's forward pass up to ``layer`` at ``size`` px,
    from XLA's cost analysis of the lowered (not compiled) program."""
    x = jax.ShapeDtypeStruct((1, size, size, model.input_channels), jnp.float32)
    lowered = jax.jit(lambda p, v: model.activations(v, p, [layer])[layer]).lower(model.params, x)
    return float((lowered.cost_analysis() or {}).get("flops", 0.0)) or 1.0


def _seconds_per_flop(model: Model, layer: str, size: int, batch: int = 8) -> float:
    """The forward pass up to ``layer`` on ``batch`` grey images here, timed once compiled:
    seconds per floating-point operation."""
    run = jax.jit(lambda p, v: model.activations(v, p, [layer])[layer])
    images = np.full((batch, size, size, model.input_channels), 0.5, np.float32)
    jax.block_until_ready(run(model.params, images))
    began = time.perf_counter()
    jax.block_until_ready(run(model.params, images))
    return max(time.perf_counter() - began, 1e-6) / (batch * forward_flops(model, layer, size))


def estimate(model: Model, chosen: dict[str, list[int]], config: RenderConfig, *, k: int = 9,
             images=None, image_size: int | None = None) -> SiteEstimate:
    """What ``build_gallery`` of the units ``chosen`` (layer -> channels, in network order)
    will cost from scratch (less where parts are done already, or programs are in the
    compilation cache)."""
    image_size = image_size or model.image_size
    layers = list(chosen)
    per_flop = _seconds_per_flop(model, layers[-1], image_size)
    flops = {layer: forward_flops(model, layer, image_size) for layer in layers}
    scores = [forward_flops(model, score_layer(model), image_size)] if has_classes(model) else []
    photos = len(PhotoSource(images))
    linked = min(photos, ANALYSIS_PHOTOS)
    per_unit = len(VIEWS) + (config.diverse if config.diverse > 1 else 0)
    programs = len(VIEWS) + (config.diverse > 1)
    patches = k * (2 + len(projection_rules(model, layers[-1])))  # no max pool there: none before
    seconds = dict.fromkeys(("render", "compile", "examples", "links"), 0.0)
    for i, layer in enumerate(layers):
        units, at_photo = len(chosen[layer]), flops[layer] * per_flop
        seconds["render"] += (config.steps * units * per_unit * RENDER_PASSES * at_photo
                              * (config.size / image_size) ** 2)
        seconds["compile"] += programs * RENDER_COMPILE
        seconds["examples"] += ((photos + units * patches) * at_photo
                                + EXAMPLE_PROGRAMS * PROGRAM_COMPILE)
        for job in [flops[layer]] * (i > 0) + scores:  # contributions (not the first), classes
            seconds["links"] += linked * units * LINK_PASSES * job * per_flop + PROGRAM_COMPILE
    units = sum(map(len, chosen.values()))
    side = min(image_size, EXAMPLE_SIDE)  # at most: a receptive field may be smaller
    previews = config.diverse if config.diverse > 1 else 0
    size_bytes = units * ((per_unit * RENDER_PNG_BYTES + previews * PREVIEW_BYTES)
                          * config.size**2 + (patches * side**2 + 150**2) * PATCH_BYTES
                          + UNIT_BYTES)
    files = 1 + units * (per_unit + previews + patches + 4) + len(layers) * (programs + 3)
    return SiteEstimate({name: round(s, 1) for name, s in seconds.items()}, size_bytes / 1e6,
                        files)
