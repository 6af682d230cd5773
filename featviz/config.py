"""Every render setting in one frozen value, each with its one default and its check.

``RenderConfig`` is what ``Renderer``, ``render_channels``, ``unit_sheet``, ``build_gallery``
and the command line pass around; an atlas's resume record is the config itself, so a new
setting can never be left out of it. Nothing here imports JAX: the command line checks its
options with the same table before any work starts.

Example:
    >>> config = RenderConfig(steps=64, size=96)
    >>> config.replace(seed=3).seed, config.lr_ramp
    (3, None)
    >>> RenderConfig(steps=0)
    Traceback (most recent call last):
    ...
    featviz.errors.ConfigError: steps must be from 1 to 1000000, not 0
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

from .errors import ConfigError

DEFAULT_LR = 0.05  # Lucid's Adam step
# the learning rate at the first and the last step, as multiples of ``lr``: more contrast than
# Lucid's constant rate at the same activation (benchmarks/RESULTS.md, "The learning-rate ramp")
DEFAULT_LR_RAMP = (1.6, 0.5)
RAMP_RANGE = (1e-3, 1e3)  # the multiples a ramp may take (1e38 made NaN images)
PARAMETERIZATIONS = ("fourier", "pixels", "maco")  # ``featviz.param.PARAMETERIZATIONS``'s names
ACTIVATIONS = ("pre", "post")
PROJECTIONS = ("deconvnet", "guided")  # the rectifier rules a unit is projected to pixels by
VIEWS = ("channel", "neuron", "negative")  # what a unit's image maximizes (objectives.unit)
PRECISIONS = ("float32", "bfloat16")

# Every numeric setting or option: (lowest, highest) allowed; None is unbounded. "lr" must also
# be finite and above its lowest.
OPTION_RANGES = {
    "steps": (1, 1_000_000), "size": (16, 4096), "seed": (0, 2**32 - 1), "lr": (0, 100),
    "chunk": (1, None), "redirect_steps": (0, 1_000_000), "diverse": (1, 64), "columns": (1, None),
    "top": (1, None), "k": (1, 10_000), "batch": (1, None), "samples": (1, 10_000),
    "channel": (0, None), "class_id": (0, None), "num_processes": (1, None),
    "process_id": (0, None), "image_size": (16, 4096), "grid": (2, 200),
    "sample_count": (100, 10_000_000), "penalty": (0, 1000), "perturbation": (0, 1),
    "power": (0, 16),
}
# the settings that take any real number in their range (the others take whole numbers); a
# learning rate must also be above its lowest value
REAL_OPTIONS = frozenset({"lr", "penalty", "perturbation", "power"})
_CHOICES = {"param": PARAMETERIZATIONS, "activation": ACTIVATIONS, "precision": PRECISIONS,
            "view": VIEWS}


def range_error(name: str, value, label: str | None = None) -> str | None:
    """Why ``value`` is not allowed for the setting ``name`` (``OPTION_RANGES``), named
    ``label`` in the message; None if it is allowed.

    >>> range_error("size", 8, "--size")
    '--size must be from 16 to 4096, not 8'
    """
    label = label or name
    lowest, highest = OPTION_RANGES[name]
    if name in REAL_OPTIONS:
        above = "above" if name == "lr" else "at least"
        if isinstance(value, numbers.Real) and math.isfinite(value) and value <= highest and (
                value > lowest or (name != "lr" and value == lowest)):
            return None
        return (f"{label} must be a finite number {above} {lowest} and at most {highest}, "
                f"not {value}")
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        return f"{label} must be a whole number, not {value!r}"
    if value < lowest or (highest is not None and value > highest):
        bounds = f"from {lowest} to {highest}" if highest is not None else f"at least {lowest}"
        return f"{label} must be {bounds}, not {value}"
    return None


def checked_ramp(ramp, label: str = "lr_ramp") -> tuple[float, float]:
    """``ramp`` as two floats, or a ``ConfigError`` unless it is two numbers in ``RAMP_RANGE``.

    >>> checked_ramp((1.6, 0.5)), checked_ramp("2,1")
    ((1.6, 0.5), (2.0, 1.0))
    """
    try:
        parts = ramp.split(",") if isinstance(ramp, str) else ramp
        first, last = (float(r) for r in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"{label} must be two numbers FIRST,LAST (e.g. 1.6,0.5; 1,1 for a "
                          f"constant rate), not {ramp!r}") from None
    low, high = RAMP_RANGE
    if not all(low <= r <= high for r in (first, last)):  # also refuses NaN
        raise ConfigError(f"{label} must be two numbers from {low:g} to {high:g}, not {ramp!r}")
    return first, last


@dataclass(frozen=True)
class RenderConfig:
    """How a feature visualization is rendered. Defaults are Lucid's but for the ramp.

    Args:
        steps: gradient-ascent steps.
        size: image side in pixels.
        seed: the same seed gives the same images; image i's key comes from (seed, channel).
        lr: Adam's learning rate; None: 0.05 for featviz's Adam, a custom optimizer's own.
        lr_ramp: the rate goes linearly from ``lr_ramp[0] * lr`` at the first step to
            ``lr_ramp[1] * lr`` at the last; None: ``DEFAULT_LR_RAMP`` for featviz's Adam, a
            constant rate for a custom optimizer; ``(1, 1)`` is Lucid's constant rate.
        param: the image parameterization's name (``PARAMETERIZATIONS``).
        activation: on a rectified layer, optimize its values before the rectifier ("pre")
            or after it ("post").
        precision: the network's compute precision; image parameters stay float32.
        redirect_steps: steps at the start in which dead rectifiers pass a redirected gradient.
        chunk: images rendered at once by ``render_channels``; None: what fits.
        view: what each unit's image maximizes (``VIEWS``): its channel's mean activation, its
            centre neuron, or the channel's negative (what the unit responds to least).
        diverse: images per unit; more than one are pushed apart by Lucid's diversity term
            within each unit's group (``objectives.diversity(..., group=diverse)``).
    """

    steps: int = 512
    size: int = 128
    seed: int = 0
    lr: float | None = None
    lr_ramp: tuple[float, float] | None = None
    param: str = "fourier"
    activation: str = "pre"
    precision: str = "float32"
    redirect_steps: int = 8
    chunk: int | None = None
    view: str = "channel"
    diverse: int = 1

    def __post_init__(self):
        for name in ("steps", "size", "seed", "redirect_steps", "chunk", "lr", "diverse"):
            value = getattr(self, name)
            problem = None if value is None else range_error(name, value)
            if problem:
                raise ConfigError(problem)
        if self.lr_ramp is not None:
            object.__setattr__(self, "lr_ramp", checked_ramp(self.lr_ramp))
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not "
                                  f"{getattr(self, name)!r}")

    def replace(self, **changes) -> RenderConfig:
        """A copy with ``changes``, checked; an unknown name is a ``ConfigError``."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown render setting(s) {', '.join(sorted(unknown))}; the "
                              f"settings are {', '.join(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **changes)

    def record(self) -> dict:
        """The settings as JSON values (a resume record compares these)."""
        doc = dataclasses.asdict(self)
        doc["lr_ramp"] = None if self.lr_ramp is None else list(self.lr_ramp)
        return doc
