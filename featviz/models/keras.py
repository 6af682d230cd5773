"""Keras 3 networks on the JAX backend as featviz models.

``from_keras(model)`` adapts a functional or Sequential Keras model: any layer's output by
name, its non-trainable state (BatchNorm statistics) used in inference mode
(``training=False``), a pure JAX function of ``(params, images)`` that ``jit``, ``grad`` and
``vmap`` accept. ``keras_application(name, weights)`` builds one of ``keras.applications``
(``"VGG16"``, ``"ResNet50"``, ...) from its weights file, with its own preprocessing: that
catalogue lives in ``featviz.models.keras_applications``, and what featviz needs of Keras's
internals in ``featviz.models.keras_compat``; their public names are importable from here too.

Keras is optional (``pip install "featviz[keras]"``) and must run on its JAX backend, which
``featviz.models.keras_compat`` explains.

Example:
    >>> import os; _ = os.environ.setdefault("KERAS_BACKEND", "jax")
    >>> import keras
    >>> net = keras.Sequential([keras.Input((None, None, 3)),
    ...                         keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
    ...                         keras.layers.BatchNormalization(name="bn"),
    ...                         keras.layers.GlobalAveragePooling2D(name="pool"),
    ...                         keras.layers.Dense(2, name="out")], name="net")
    >>> model = from_keras(net, image_size=16)
    >>> model.layer_shapes(16)
    {'conv': (14, 14, 4), 'bn': (14, 14, 4), 'out': (2,)}
    >>> sorted(model.params)[:3]
    ['net/bn/beta', 'net/bn/gamma', 'net/bn/moving_mean']
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..errors import (  # noqa: F401
    KerasModelError,
    KerasUnavailableError,
    KerasWeightsError,
    UnknownApplicationError,
)
from .base import ApplyFn, Model, UnknownLayerError, UnknownModelError, _identity, _requested  # noqa: F401
from .keras_applications import (  # noqa: F401
    APPLICATIONS,
    PREPROCESS,
    Application,
    application_mode,
    keras_application,
)
from .keras_compat import _import_keras, numpy_initializers
from .torch_weights import WeightsFileError  # noqa: F401

# layer types whose outputs are the image, or the previous layer's map unchanged (padded,
# cropped, or passed through in inference mode): not offered by default
_PASS_THROUGH = {"InputLayer", "ZeroPadding2D", "Cropping2D", "Rescaling", "Normalization",
                 "Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout",
                 "AlphaDropout", "Flatten", "Reshape", "Permute"}
LOGITS = "logits"


def _output(layer):
    """The layer's one output tensor, or None (never called, called twice, several outputs)."""
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return None
    return out if hasattr(out, "shape") else None


def _logits_source(keras, output_layers: list):
    """When the model's one output is a softmax over classes: (layer, None) for an
    ``Activation`` layer (its input is the logits), (layer, (kernel, bias)) for a plain
    ``Dense`` layer (logits: input @ kernel + bias); else None."""
    if len(output_layers) != 1:
        return None
    layer = output_layers[0]
    if getattr(layer, "activation", None) is not keras.activations.softmax:
        return None
    if isinstance(layer, keras.layers.Activation):
        return layer, None
    if (type(layer) is keras.layers.Dense and not layer.lora_enabled
            and layer.quantization_mode is None and len(layer.input.shape) == 2):
        weights = {v.name: v for v in layer.weights}
        return layer, (weights["kernel"], weights.get("bias"))
    return None


def _rectifier(keras, layer) -> bool:
    """Whether ``layer`` ends in a ReLU (capped or not): a ``ReLU`` layer, an ``Activation``
    of relu/relu6, or a layer with ``activation=relu``/``relu6`` built in."""
    if type(layer).__name__ == "ReLU":
        return True
    rectifiers = (keras.activations.relu, keras.activations.relu6)
    return any(getattr(layer, "activation", None) is f for f in rectifiers)


def _linear_twin(layer) -> tuple:
    """A copy of a convolution without its activation, and the original's variables in the
    order the copy's ``stateless_call`` takes them."""
    twin = type(layer).from_config({**layer.get_config(), "activation": "linear",
                                    "trainable": True})
    with numpy_initializers():
        twin.build(layer.input.shape)
    mine = {v.name: v for v in layer.weights}
    return twin, [mine[v.name] for v in twin.trainable_variables]


def _pre_activations(keras, model, outputs: dict) -> tuple[dict, dict]:
    """Each rectified layer's pre-activation: ``({layer: pre name}, {pre name: (source
    tensor, linear twin, its variables)})``. A ``ReLU``/``Activation`` layer's is its input
    layer's output; a convolution with the rectifier built in gets ``<name>_pre``, computed
    from its input by the twin (the second dict)."""
    convolutions = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
                    keras.layers.SeparableConv2D, keras.layers.Conv2DTranspose)
    names, derived = {}, {}
    producers = {id(t): n for n, t in outputs.items()}
    for layer in model.layers:
        if layer.name not in outputs or not _rectifier(keras, layer):
            continue
        try:
            source = layer.input
        except (AttributeError, ValueError):
            continue
        if isinstance(layer, (keras.layers.ReLU, keras.layers.Activation)):
            if id(source) in producers:
                names[layer.name] = producers[id(source)]
        elif type(layer) in convolutions and layer.quantization_mode is None:
            derived[f"{layer.name}_pre"] = (source, *_linear_twin(layer))
            names[layer.name] = f"{layer.name}_pre"
    return names, derived


def _variable_keys(variables) -> dict[int, str]:
    """``id(variable) -> a unique name`` (its Keras path, numbered where paths repeat)."""
    keys, seen = {}, set()
    for i, v in enumerate(variables):
        key = v.path if v.path not in seen else f"{v.path}#{i}"
        seen.add(key)
        keys[id(v)] = key
    return keys


def _preprocessing(model_name: str, preprocess, channels: int) -> Callable:
    """The network's preprocessing: ``preprocess`` itself if callable, else its mode's
    (``"auto"``: the mode of the ``keras.applications`` network named ``model_name``)."""
    if callable(preprocess):
        return preprocess
    mode = (application_mode(model_name) or "none") if preprocess == "auto" else preprocess
    if mode not in PREPROCESS:
        raise ValueError(f"unknown preprocess mode {preprocess!r}; use a callable, 'auto' "
                         f"or one of {', '.join(PREPROCESS)}")
    if channels == 1 and mode in ("caffe", "torch"):
        raise ValueError(f"preprocess mode {mode!r} normalizes three RGB channels; this network "
                         "takes grey images: use 'tf', 'raw', 'none' or a callable")
    return PREPROCESS[mode]


def _fixed_size(image_input) -> tuple[int, int] | None:
    """(height, width) when the input's size is fixed, else None."""
    height, width = image_input.shape[1:3]
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def _resized(prepare: Callable, size: tuple[int, int]) -> Callable:
    """``prepare`` for a network with a fixed input size: images of another size are first
    resized to it (bilinear), as whatever featviz shows the network (a render's padded
    canvas, a photo) may differ."""
    def fit(x):
        if tuple(x.shape[1:3]) != size:
            x = jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), "bilinear")
        return prepare(x)
    return fit


def _image_input(keras, model) -> list:
    """The model's one image input, ``[tensor]``, (N, H, W, 3) or grey (N, H, W, 1); else an
    error saying what featviz adapts."""
    if not isinstance(model, keras.Model):
        raise KerasModelError(f"from_keras adapts a Keras model (functional or Sequential), "
                              f"not a {type(model).__name__}: pass keras.Model(inputs, outputs) "
                              "or a keras.Sequential([keras.Input(...), ...])")
    try:
        inputs = list(model.inputs)
    except AttributeError:
        raise KerasModelError(
            f"Keras model {model.name!r} has no symbolic inputs: adapt a functional model "
            "(keras.Model(inputs, outputs)) or a Sequential model that starts with "
            "keras.Input((None, None, 3))") from None
    if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] not in (1, 3, None):
        raise KerasModelError(f"Keras model {model.name!r} takes {[tuple(t.shape) for t in inputs]}"
                              "; featviz feeds it one batch of RGB images, (N, H, W, 3), or of "
                              "grey ones, (N, H, W, 1)")
    return inputs


def _channels_last_input(keras, model) -> list:
    """``_image_input``, for a Keras that lays images out channels last."""
    inputs = _image_input(keras, model)
    if keras.config.image_data_format() != "channels_last":
        raise KerasModelError("featviz needs channels_last images: "
                              "keras.config.set_image_data_format('channels_last')")
    return inputs


class _Outputs(NamedTuple):
    """What a Keras model's graph offers: every layer's output tensor by name (with the
    softmax's input as ``logits_name``), the names of the model's output layers, and the
    logits' source (``_logits_source``; None, with ``logits_name``: no softmax at the end)."""
    tensors: dict
    model_outputs: set
    logits: tuple | None
    logits_name: str | None


def _outputs(keras, model) -> _Outputs:
    """The model's layer outputs by name, and its logits when it ends in a softmax."""
    outputs = {layer.name: out for layer in model.layers if (out := _output(layer)) is not None}
    output_layers = [layer for layer in model.layers
                     if any(outputs.get(layer.name) is t for t in model.outputs)]
    logits = _logits_source(keras, output_layers if len(model.outputs) == 1 else [])
    logits_name = None
    if logits is not None:
        logits_name = LOGITS if LOGITS not in outputs else f"{logits[0].name}_{LOGITS}"
        outputs[logits_name] = logits[0].input
    return _Outputs(outputs, {layer.name for layer in output_layers}, logits, logits_name)


def _exposed(keras, model, layers: Sequence[str] | None, graph: _Outputs) -> tuple:
    """The layers the featviz model exposes: ``layers``, each checked, or (None) those
    ``from_keras`` offers by default, the logits last."""
    if layers is not None:
        exposed = tuple(layers)
        unknown = [n for n in exposed if n not in graph.tensors]
        if unknown:
            raise UnknownLayerError(f"unknown layer(s) {unknown} of Keras model {model.name!r}; "
                                    f"valid layers: {', '.join(graph.tensors)}")
        return exposed

    def offered(layer):
        out = graph.tensors.get(layer.name)
        if out is None:
            return False
        if layer.name in graph.model_outputs:
            return len(out.shape) in (2, 4)
        if len(out.shape) == 4:
            return type(layer).__name__ not in _PASS_THROUGH
        return len(out.shape) == 2 and isinstance(layer, keras.layers.Dense)
    names = [layer.name for layer in model.layers if offered(layer)]
    return tuple(names + ([graph.logits_name] if graph.logits_name else []))


def _forward(keras, inputs: list, graph: _Outputs, keys: dict, readable: tuple,
             derived: dict) -> ApplyFn:
    """``Model.apply``: the Keras layers from the input to the requested ones, run statelessly
    on ``params`` (``keys``: variable -> its key there) in inference mode, then the logits and
    the pre-activations that are computed outside the Keras graph."""
    outputs, logits, logits_name = graph.tensors, graph.logits, graph.logits_name
    submodels: dict[tuple, tuple] = {}
    lock = threading.Lock()

    def submodel(wanted: tuple):
        """A functional model from the input to the wanted layers' outputs (each distinct
        tensor once), built once per set of layers: it computes nothing past them."""
        with lock:
            if wanted not in submodels:
                tensors, index = [], {}
                for layer in wanted:
                    tensor = outputs[layer]
                    if id(tensor) not in index:
                        index[id(tensor)] = len(tensors)
                        tensors.append(tensor)
                sub = keras.Model(inputs, tensors)
                submodels[wanted] = (sub, [index[id(outputs[layer])] for layer in wanted],
                                     [keys[id(v)] for v in sub.trainable_variables],
                                     [keys[id(v)] for v in sub.non_trainable_variables])
            return submodels[wanted]

    def apply(p, x, layers=None):
        wanted = _requested(layers, readable)
        sub, positions, trainable, non_trainable = submodel(wanted)
        out, _ = sub.stateless_call([p[k] for k in trainable], [p[k] for k in non_trainable],
                                    x, training=False)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        found = {layer: out[i] for layer, i in zip(wanted, positions)}
        if logits is not None and logits_name in found and logits[1] is not None:  # a softmax
            kernel, bias = logits[1]  # Dense: its input times its kernel, plus bias
            z = found[logits_name] @ p[keys[id(kernel)]]
            found[logits_name] = z if bias is None else z + p[keys[id(bias)]]
        for name in set(found) & set(derived):  # a conv's output before its rectifier
            _, twin, variables = derived[name]
            found[name], _ = twin.stateless_call([p[keys[id(v)]] for v in variables], [],
                                                 found[name])
        return found

    return apply


def _input_preparation(model, image_input, preprocess, image_size: int | None,
                       channels: int) -> tuple[Callable, int]:
    """The model's preprocessing (resizing first for a fixed input size) and image size."""
    prepare = _preprocessing(model.name, preprocess, channels)
    fixed = _fixed_size(image_input)
    if fixed:
        if image_size not in (None, fixed[0]):
            raise KerasModelError(f"Keras model {model.name!r} takes {fixed[0]} x {fixed[1]} "
                                  f"images, so its image_size is {fixed[0]}, not {image_size}: "
                                  "leave image_size out (featviz resizes what it shows it)")
        prepare = _resized(prepare, fixed)
    if image_size is None:
        image_size = image_input.shape[1] if isinstance(image_input.shape[1], int) else 224
    return prepare, image_size


def _class_names(class_names, model, graph: _Outputs, exposed: tuple):
    """``class_names`` as given, or for ``"auto"`` ImageNet's names when the last exposed
    layer without a spatial map has 1000 scores (else None)."""
    if not isinstance(class_names, str):
        return class_names
    if class_names != "auto":
        raise ValueError(f"class_names must be a sequence of names, None or 'auto', not "
                         f"{class_names!r}")
    shapes = {n: tuple(graph.tensors[n].shape) for n in exposed}
    if graph.logits_name in shapes:  # as many scores as the softmax has classes
        shapes[graph.logits_name] = tuple(model.outputs[0].shape)
    flat = [shape for shape in shapes.values() if len(shape) == 2]
    if flat and flat[-1][-1] == 1000:
        from .imagenet import class_names as imagenet_names
        return imagenet_names()
    return None


def from_keras(model, layers: Sequence[str] | None = None, *, name: str | None = None,
               preprocess: str | Callable = "auto", image_size: int | None = None,
               class_names: Sequence[str] | str | None = "auto") -> Model:
    """Adapt a Keras 3 model (functional or Sequential, JAX backend) to a featviz ``Model``.

    Args:
        model: the Keras model.
        layers: the Keras layer names to expose (their outputs); None: every layer with an
            (H, W, C) map that computes something (not the input, padding, cropping, dropout
            or the network's own rescaling layers), every ``Dense`` layer, and the model's
            outputs. When the model ends in a softmax (``Dense(activation="softmax")`` or an
            ``Activation`` layer), its pre-softmax scores are exposed too, last, as
            ``"logits"``: the class scores that Grad-CAM and saliency differentiate.
        name: the model's name (default: Keras's).
        preprocess: a callable from featviz's images (RGB in [0, 1], NHWC) to the network's
            input, a mode (``"caffe"``, ``"tf"``, ``"torch"``, ``"raw"`` for 0-255,
            ``"none"``), or ``"auto"``: the mode of the ``keras.applications`` network the
            model's name is (with that network's defaults), else ``"none"``.
        image_size: the size the network was trained for (default: its input's, else 224).
            A network with a fixed input height and width (a ``Flatten`` head) is shown every
            image at that size, resized (bilinear) as the first step of its preprocessing; a
            network with one input channel is a grey one (``input_channels=1``).
        class_names: ``"auto"`` gives ImageNet's names to a model with a 1000-way output.

    The weights are copied when the model is adapted (training the Keras model later does not
    change the featviz model) and used with ``training=False``: BatchNorm uses its moving
    statistics, Dropout is off. ``params`` is ``{variable path: array}``, trainable and
    non-trainable variables alike; gradients are taken with respect to images only.

    Rectified layers know their pre-activation (``Model.pre_activations``), which objectives
    on them optimize by default: a ``ReLU``/``Activation("relu")`` layer's input layer, or for
    a convolution (``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D``, ``Conv2DTranspose``)
    with ``activation="relu"`` built in, ``<name>_pre`` (its convolution plus bias, computed
    from its input).
    """
    keras = _import_keras()
    inputs = _channels_last_input(keras, model)
    graph = _outputs(keras, model)
    exposed = _exposed(keras, model, layers, graph)
    pre_names, derived = _pre_activations(keras, model, graph.tensors)
    pre_names = {k: v for k, v in pre_names.items() if k in exposed}
    graph.tensors.update({name: source for name, (source, *_) in derived.items()})
    readable = exposed + tuple(v for v in pre_names.values() if v not in exposed)

    variables = list(model.variables)
    keys = _variable_keys(variables)
    params = {keys[id(v)]: jnp.array(v.value, copy=True) for v in variables}
    apply = _forward(keras, inputs, graph, keys, readable, derived)
    channels = 1 if inputs[0].shape[-1] == 1 else 3
    prepare, image_size = _input_preparation(model, inputs[0], preprocess, image_size, channels)
    return Model(name=name or model.name, apply=apply, params=params, layers=exposed,
                 preprocess=prepare, image_size=image_size,
                 class_names=_class_names(class_names, model, graph, exposed),
                 pre_activations=pre_names, input_channels=channels)
