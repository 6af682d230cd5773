"""One adapter from any Flax module to what featviz needs: ``apply(params, x) -> {layer: activations}``.

Images everywhere in featviz are float RGB in [0, 1], shaped (N, H, W, 3), or (N, H, W, 1) for
a network that takes grey images (``Model.input_channels``; RGB photos given to such a network
are turned grey); ``Model.preprocess`` maps them to what the network was trained on. Activations are NHWC (N, H, W, C) or (N, C).

Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Tiny(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
    ...         self.sow("intermediates", "relu1", x)
    ...         return nn.Dense(2, name="out")(x.mean((1, 2)))
    >>> net = Tiny()
    >>> params = net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    >>> model = from_linen(net, params, layers=["conv1", "relu1", "out"])
    >>> model.layer_shapes(16)
    {'conv1': (16, 16, 4), 'relu1': (16, 16, 4), 'out': (2,)}
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn, traverse_util


class UnknownLayerError(ValueError):
    """A layer name the model does not expose."""


class UnknownModelError(ValueError):
    """A model name featviz does not know."""


class NoSpatialMapError(UnknownLayerError):
    """A layer without an (h, w, C) map where a view needs one."""


def _identity(x):
    return x


@dataclass(frozen=True, eq=False)
class Model:
    """A network as featviz sees it: named layers, a preprocessing step, parameters.

    ``apply(params, x, layers=None)`` takes preprocessed inputs and returns
    ``{layer: activations}`` for the named layers (None: every exposed layer). Adapted linen
    modules stop their forward pass once the named layers are computed, so an objective on an
    early layer neither traces nor computes the layers after it.
    """

    name: str
    apply: Callable[[Any, jax.Array], dict] = field(repr=False)
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
    _shape_cache: dict = field(default_factory=dict, repr=False)
    _programs: dict = field(default_factory=dict, repr=False)

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
            from .. import programs

            def traced():
                x = jax.ShapeDtypeStruct((1, size, size, self.input_channels), jnp.float32)
                out = jax.eval_shape(lambda v: self.activations(v, layers=[layer]), x)
                return out[layer].shape[1:]
            self._shape_cache[layer, size] = tuple(programs.layer_shape(self, layer, size, traced))
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


def per_model(build: Callable) -> Callable:
    """Decorator: ``build(model, *args)`` (say, a jit-compiled view of one layer) memoized on
    the model itself, so that it lives and dies with the model, where a module-level cache
    would keep every model ever loaded alive."""
    @functools.wraps(build)
    def cached(model: "Model", *args):
        key = (build.__module__, build.__qualname__) + args
        if key not in model._programs:
            model._programs[key] = build(model, *args)
        return model._programs[key]
    return cached


def _with_pre_activations(layers: Sequence[str], pre_activations: dict) -> tuple:
    """The layers an adapter's ``apply`` answers for: the exposed ones and their pre-activations."""
    return tuple(layers) + tuple(v for v in pre_activations.values() if v not in layers)


_LINEN_HINT = ("are the variables {'params': ...}? does it need apply_kwargs={'train': False}? "
              "pass input_channels= and image_size= if they differ")
_NNX_HINT = ("call module.eval() first, so that BatchNorm and Dropout are in inference mode; pass "
            "input_channels= and image_size= if they differ")


def _input_channels(apply, params, layers: tuple, preprocess, size: int, hint: str) -> int:
    """How many channels the network's input has: 3 (RGB) if it accepts them, else 1 (grey).
    Every layer is asked for, so that a name the module never produces is refused now."""
    refusals = []
    for channels in (3, 1):
        x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
        try:
            jax.eval_shape(lambda p, v: apply(p, preprocess(v), layers), params, x)
            return channels
        except UnknownLayerError:
            raise
        except Exception as refusal:  # noqa: BLE001 - whatever the module raises
            refusals.append(refusal)
    reason = (str(refusals[0]).strip().splitlines() or [""])[0]
    raise ValueError(f"the module fails on a ({size}, {size}, 3) and on a ({size}, {size}, 1) "
                     f"input; on the first: {type(refusals[0]).__name__}: {reason} ({hint})")


def _pick(found: dict, wanted: tuple, hint: str) -> dict:
    """The wanted layers from what the module produced, in order; a clear error for the rest."""
    missing = set(wanted) - set(found)
    if missing:
        raise UnknownLayerError(f"the module never produced layer(s) {sorted(missing)}; name {hint}")
    return {k: found[k] for k in wanted}


def _requested(layers, exposed: tuple) -> tuple:
    """The layers one call asks for: ``layers`` in the model's order, or every exposed one."""
    if layers is None:
        return exposed
    unknown = set(layers) - set(exposed)
    if unknown:
        raise UnknownLayerError(f"unknown layer(s) {sorted(unknown)}; valid layers: "
                                f"{', '.join(exposed)}")
    return tuple(k for k in exposed if k in layers)


def _layer_name(path: tuple) -> str:
    parts = [p for p in path if p != "__call__"]
    return "/".join(parts)


def _sown(intermediates) -> dict:
    """``{layer name: last value}`` of a linen ``intermediates`` collection."""
    flat = traverse_util.flatten_dict(dict(intermediates or {}))
    return {_layer_name(path): value[-1] for path, value in flat.items()}


class _LayersReady(Exception):
    """Raised inside a linen forward pass once every requested layer has been computed."""

    def __init__(self, found: dict):
        super().__init__("requested layers computed")
        self.found = found


def from_linen(module, params, layers: Sequence[str], *, name: str | None = None,
               preprocess: Callable = _identity, image_size: int = 224,
               class_names: Sequence[str] | None = None,
               apply_kwargs: dict | None = None, pre_activations: dict | None = None,
               input_channels: int | None = None) -> Model:
    """Adapt a ``flax.linen`` module: expose the named submodule outputs or sown values.

    A layer name is a submodule path joined by ``/`` (its ``__call__`` output, e.g.
    ``"conv1"`` or ``"block/conv"``) or the name of a value the module stores with
    ``self.sow("intermediates", name, x)``. ``params`` are the module's variables, any
    collections (``params``, ``batch_stats``, ...); ``apply_kwargs`` go to every
    ``module.apply`` call, e.g. ``{"train": False}`` for a network with BatchNorm or Dropout.
    ``pre_activations`` maps a rectified layer to the one holding its values before the
    rectifier (``{"relu1": "conv1"}``), which objectives on it then optimize by default.
    ``input_channels`` is 3 (RGB) or 1 (grey); None: found by trying the module on both.
    """
    apply_kwargs = dict(apply_kwargs or {})
    pre_activations = dict(pre_activations or {})
    exposed = _with_pre_activations(layers, pre_activations)
    hint = "a submodule path or a value sown into 'intermediates'"

    def apply(p, x, layers=None):
        wanted = _requested(layers, exposed)
        found: dict = {}

        def stop_when_ready(next_fun, args, kwargs, context):
            # Before and after every submodule call, look at what has been computed so far
            # (submodule outputs, and values sown in between); once every requested layer is
            # there, leave the forward pass: nothing after it is traced.
            def check():
                found.update(_sown(getattr(context.module.scope.root, "_variables", {})
                                   .get("intermediates")))
                if all(k in found for k in wanted):
                    raise _LayersReady(found)

            check()
            y = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and "/".join(context.module.path) in wanted:
                found["/".join(context.module.path)] = y
            check()
            return y

        try:
            with nn.intercept_methods(stop_when_ready):
                _, state = module.apply(p, x, mutable=["intermediates"], **apply_kwargs)
            found.update(_sown(state.get("intermediates")))
        except _LayersReady:
            pass
        return _pick(found, wanted, hint)

    return Model(name=name or type(module).__name__, apply=apply, params=params,
                 layers=tuple(layers), preprocess=preprocess, image_size=image_size,
                 class_names=class_names, pre_activations=pre_activations,
                 input_channels=input_channels or _input_channels(
                     apply, params, exposed, preprocess, image_size, _LINEN_HINT))


def from_nnx(module, layers: Sequence[str], *, name: str | None = None,
             preprocess: Callable = _identity, image_size: int = 224,
             class_names: Sequence[str] | None = None,
             pre_activations: dict | None = None, input_channels: int | None = None) -> Model:
    """Adapt a ``flax.nnx`` module: expose values it stores with
    ``self.sow(nnx.Intermediate, name, x)`` and the outputs of submodules (by attribute path
    joined with ``/``, e.g. ``"conv1"``). Its ``nnx.Param`` variables become ``Model.params``;
    its other state (``nnx.BatchNorm``'s running statistics) is used as it is: call
    ``module.eval()`` first, so that BatchNorm uses its running averages and Dropout is off.
    ``pre_activations`` and ``input_channels`` as for ``from_linen``.

    Example:
        >>> from flax import nnx
        >>> class Net(nnx.Module):
        ...     def __init__(self, rngs):
        ...         self.conv1 = nnx.Conv(3, 4, (3, 3), rngs=rngs)
        ...     def __call__(self, x):
        ...         x = nnx.relu(self.conv1(x))
        ...         self.sow(nnx.Intermediate, "relu1", x)
        ...         return x.mean((1, 2))
        >>> model = from_nnx(Net(nnx.Rngs(0)), layers=["conv1", "relu1"], image_size=16)
        >>> model.layer_shapes(16)
        {'conv1': (16, 16, 4), 'relu1': (16, 16, 4)}
    """
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    pre_activations = dict(pre_activations or {})
    exposed = _with_pre_activations(layers, pre_activations)

    def apply(p, x, layers=None):
        wanted = _requested(layers, exposed)
        net = nnx.merge(graphdef, p, rest)
        _, captured = nnx.capture(net, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
        found = {}
        for path, variable in nnx.to_flat_state(captured):
            value = variable.get_value() if hasattr(variable, "get_value") else variable.value
            found[_layer_name(tuple(str(k) for k in path))] = value[-1]
        return _pick(found, wanted, "a submodule attribute or a value sown as nnx.Intermediate")

    return Model(name=name or type(module).__name__, apply=apply, params=params,
                 layers=tuple(layers), preprocess=preprocess, image_size=image_size,
                 class_names=class_names, pre_activations=pre_activations,
                 input_channels=input_channels or _input_channels(
                     apply, params, exposed, preprocess, image_size, _NNX_HINT))

