"""What featviz needs of a network: the ``Model`` record, whose ``apply`` gives activations.

Images everywhere in featviz are float RGB in [0, 1], shaped (N, H, W, 3), or (N, H, W, 1) for
a network that takes grey images (``Model.input_channels``; RGB photos given to such a network
are turned grey); ``Model.preprocess`` maps them to what the network was trained on.
Activations are NHWC (N, H, W, C) or (N, C).

The adapters build one: ``featviz.models.flax_adapters`` (``from_linen``, ``from_nnx``) and
``featviz.models.keras`` (``from_keras``).

Example:
    >>> import jax.numpy as jnp
    >>> def apply(params, x, layers=None):
    ...     out = {"double": x * params["scale"], "mean": (x * params["scale"]).mean((1, 2))}
    ...     return {k: v for k, v in out.items() if layers is None or k in layers}
    >>> model = Model("double", apply, {"scale": 2.0}, layers=("double", "mean"), image_size=8)
    >>> model.layer_shapes(8)
    {'double': (8, 8, 3), 'mean': (3,)}
    >>> model.spatial_layers()
    ('double',)
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import jax
import jax.numpy as jnp

from ..errors import NoSpatialMapError, UnknownLayerError, UnknownModelError  # noqa: F401


def _identity(x):
    return x


class ApplyFn(Protocol):
    """A network's forward pass: preprocessed inputs to ``{layer: activations}`` for the named
    layers (None: every layer the model exposes, and the pre-activations it names)."""

    def __call__(self, params: Any, x: jax.Array, /,
                 layers: Sequence[str] | None = None) -> dict[str, jax.Array]: ...


# (model, layer, size, compute) -> the layer's activation shape: ``compute()`` traces the
# network for it; a store may answer from disk instead (``featviz.programs.layer_shape``)
ShapeStore = Callable[["Model", str, int, Callable[[], tuple]], tuple]


@dataclass(frozen=True, eq=False)
class Model:
    """A network as featviz sees it: named layers, a preprocessing step, parameters.

    ``apply(params, x, layers=None)`` takes preprocessed inputs and returns
    ``{layer: activations}`` for the named layers (None: every exposed layer). Adapted linen
    modules stop their forward pass once the named layers are computed, so an objective on an
    early layer neither traces nor computes the layers after it.

    The compiled programs and shapes a model memoizes belong to it alone:
    ``dataclasses.replace(model, preprocess=...)`` starts with none of them.
    """

    name: str
    apply: ApplyFn = field(repr=False)
    params: Any = field(repr=False)
    layers: tuple[str, ...]
    preprocess: Callable[[jax.Array], jax.Array] = field(default=_identity, repr=False)
    image_size: int = 224
    class_names: Sequence[str] | None = field(default=None, repr=False)
    # names the network's code for featviz's program store (``featviz.programs``): set by the
    # zoo's loaders, whose code is featviz's; None for adapted modules
    program_id: str | None = None
    # the layers atlases and galleries show when none is named (empty: the last layer with a
    # spatial map)
    default_layers: tuple[str, ...] = ()
    # a rectified or capped layer -> the layer holding its values before the rectifier (e.g.
    # "head" -> "head_conv"); objectives on such a layer optimize that by default
    pre_activations: dict = field(default_factory=dict)
    input_channels: int = 3  # 3: RGB; 1: grey
    # where ``layer_shape`` keeps what it traces across processes (the zoo's loader sets
    # ``featviz.programs.layer_shape``); None: traced in each process
    shape_store: ShapeStore | None = field(default=None, repr=False)
    # memos: fresh for every instance, a ``dataclasses.replace`` copy included
    _shape_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _programs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def activations(self, images, params=None, layers: Sequence[str] | None = None) -> dict:
        """Activations of ``layers`` (None: every layer) for images in [0, 1], shaped (N, H, W, 3).

        One jit-compiled program per set of layers (and input shape): called eagerly, the
        network would otherwise compile each of its operations as a program of its own."""
        key = None if layers is None else tuple(layers)
        if key not in self._programs:
            def forward(p, x):
                return self.apply(p, self.preprocess(self.as_input(x)), key)
            self._programs[key] = jax.jit(forward)
        return self._programs[key](self.params if params is None else params, images)

    def as_input(self, images):
        """RGB images as this network's input: unchanged, or grey (ITU-R 601 luma) for a
        network that takes one channel."""
        if self.input_channels == 1 and images.shape[-1] == 3:
            return (images * jnp.asarray([0.299, 0.587, 0.114], images.dtype)).sum(-1,
                                                                                  keepdims=True)
        return images

    def check_layer(self, layer: str) -> str:
        """Return ``layer`` if the model exposes it (or it is one of the model's
        pre-activations), else raise a message listing valid ones."""
        if layer not in self.layers and layer not in self.pre_activations.values():
            raise UnknownLayerError(f"unknown layer {layer!r}; valid layers: "
                                    f"{_listed(self.layers)}")
        return layer

    def layer_shapes(self, size: int) -> dict[str, tuple]:
        """Per-layer activation shape (without the batch axis) for a ``size`` x ``size`` input."""
        if size not in self._shape_cache:
            x = jax.ShapeDtypeStruct((1, size, size, self.input_channels), jnp.float32)
            shapes = jax.eval_shape(self.activations, x)
            self._shape_cache[size] = {k: tuple(shapes[k].shape[1:]) for k in self.layers}
        return self._shape_cache[size]

    def layer_shape(self, layer: str, size: int | None = None) -> tuple:
        """Activation shape of one layer (without the batch axis) for a ``size`` x ``size``
        input (default: the model's own size); traces the network only up to that layer."""
        size = size or self.image_size
        if size in self._shape_cache:
            return self._shape_cache[size][self.check_layer(layer)]
        if (layer, size) not in self._shape_cache:
            def traced():
                x = jax.ShapeDtypeStruct((1, size, size, self.input_channels), jnp.float32)
                out = jax.eval_shape(lambda v: self.activations(v, layers=[layer]), x)
                return out[layer].shape[1:]
            store = self.shape_store
            shape = traced() if store is None else store(self, layer, size, traced)
            self._shape_cache[layer, size] = tuple(shape)
        return self._shape_cache[layer, size]

    def spatial_layer(self, layer: str) -> str:
        """Return ``layer`` if it has an (h, w, C) map, else raise ``NoSpatialMapError`` naming
        the layers that do."""
        shape = self.layer_shape(self.check_layer(layer))
        if len(shape) != 3:
            spatial = self.spatial_layers()
            raise NoSpatialMapError(
                f"layer {layer!r} has no spatial map (shape {shape}); "
                + (f"pick one that has: {_listed(spatial)}" if spatial else
                   "this model exposes no layer with one (a convolution's output)"))
        return layer

    def spatial_layers(self) -> tuple[str, ...]:
        """The layers with an (h, w, C) map, in order (shapes at the model's own size)."""
        shapes = self.layer_shapes(self.image_size)
        return tuple(name for name in self.layers if len(shapes[name]) == 3)

    def pre_activation(self, layer: str) -> str | None:
        """The layer holding ``layer``'s values before its rectifier, or None (not rectified,
        or not known: pass ``pre_activations=`` when adapting a module)."""
        return self.pre_activations.get(self.check_layer(layer))

    @property
    def shown_layers(self) -> tuple[str, ...]:
        """``default_layers``, else the last layer with a spatial map (an atlas's default)."""
        if self.default_layers:
            return self.default_layers
        return self.spatial_layers()[-1:] or self.layers[-1:]

    def channels(self, layer: str, size: int | None = None) -> int:
        """Number of channels of ``layer`` (its last axis)."""
        return self.layer_shape(self.check_layer(layer), size)[-1]


def _listed(names: Sequence[str], most: int = 12) -> str:
    """Layer names for a message: all of a few, or the first and last of many."""
    if len(names) <= most:
        return ", ".join(names)
    return (f"{', '.join(names[:most - 2])}, ... ({len(names) - most + 1} more), {names[-1]} "
            "('featviz layers' lists them all)")


def _requested(layers, exposed: tuple) -> tuple:
    """The layers one ``apply`` call asks for (every adapter's): ``layers`` in the model's
    order, or every exposed one."""
    if layers is None:
        return exposed
    unknown = set(layers) - set(exposed)
    if unknown:
        raise UnknownLayerError(f"unknown layer(s) {sorted(unknown)}; valid layers: "
                                f"{', '.join(exposed)}")
    return tuple(k for k in exposed if k in layers)


def per_model(build: Callable) -> Callable:
    """Decorator: ``build(model, *args)`` (say, a jit-compiled view of one layer) memoized on
    the model itself, so that it lives and dies with the model, where a module-level cache
    would keep every model ever loaded alive."""
    @functools.wraps(build)
    def cached(model: Model, *args):
        key = (build.__module__, build.__qualname__) + args
        if key not in model._programs:
            model._programs[key] = build(model, *args)
        return model._programs[key]
    return cached
