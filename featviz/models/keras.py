"""Keras 3 networks on the JAX backend as featviz models.

``from_keras(model)`` adapts a functional or Sequential Keras model: any layer's output by
name, its non-trainable state (BatchNorm statistics) used in inference mode
(``training=False``), a pure JAX function of ``(params, images)`` that ``jit``, ``grad`` and
``vmap`` accept. ``keras_application(name, weights)`` builds one of ``keras.applications``
(``"VGG16"``, ``"ResNet50"``, ...) from its weights file, with its own preprocessing.

Keras is optional: ``pip install "featviz[keras]"``. It must run on JAX: featviz sets
``KERAS_BACKEND=jax`` when keras has not been imported yet and the variable is unset;
otherwise set ``KERAS_BACKEND=jax`` before keras is first imported.

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

import contextlib
import importlib.util
import os
import re
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .base import Model, UnknownLayerError, UnknownModelError, _identity, _requested
from .torch_weights import WeightsFileError


class KerasUnavailableError(ImportError):
    """Keras is not installed, or runs on a backend other than JAX."""


class KerasModelError(ValueError):
    """A Keras model that featviz cannot adapt (no named layer outputs, not one image input)."""


class KerasWeightsError(WeightsFileError):
    """A Keras application's weights file is missing or does not fit the network."""


class UnknownApplicationError(UnknownModelError):
    """A name that is not one of the ``keras.applications`` networks featviz knows."""


# --- preprocessing: featviz images are RGB in [0, 1] ------------------------------------------

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _caffe(x):
    """``mode="caffe"`` (VGG, ResNet v1): 0-255, RGB to BGR, ImageNet mean subtracted."""
    return x[..., ::-1] * 255.0 - jnp.asarray(_CAFFE_MEAN_BGR, x.dtype)


def _tf(x):
    """``mode="tf"`` (Inception, Xception, MobileNet v1/v2, ResNet v2, NASNet): [-1, 1]."""
    return x * 2.0 - 1.0


def _torch(x):
    """``mode="torch"`` (DenseNet): ImageNet mean and standard deviation on [0, 1]."""
    return (x - jnp.asarray(_TORCH_MEAN, x.dtype)) / jnp.asarray(_TORCH_STD, x.dtype)


def _raw(x):
    """0-255 (EfficientNet, EfficientNetV2, ConvNeXt, MobileNetV3: their rescaling is a layer)."""
    return x * 255.0


PREPROCESS = {"caffe": _caffe, "tf": _tf, "torch": _torch, "raw": _raw, "none": _identity}


# --- the keras.applications networks ----------------------------------------------------------

_TF_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Application:
    """How featviz builds one of ``keras.applications``: its preprocessing mode (a key of
    ``PREPROCESS``), default input size, the weights files Keras downloads (with and without
    the classifier) and the name of the classifier's last layer with weights."""
    mode: str
    size: int
    top_url: str
    notop_url: str
    top_layer: str = "predictions"


def _tf_kernels(folder: str, stem: str, mode: str, size: int = 224) -> Application:
    base = f"{_TF_BASE}{folder}/{stem}_weights_tf_dim_ordering_tf_kernels"
    return Application(mode, size, base + ".h5", base + "_notop.h5")


def _pair(mode: str, size: int, url: str, notop_suffix: str, top_layer="predictions"):
    return Application(mode, size, url + ".h5", url + notop_suffix + ".h5", top_layer)


APPLICATIONS: dict[str, Application] = {
    "VGG16": _tf_kernels("vgg16", "vgg16", "caffe"),
    "VGG19": _tf_kernels("vgg19", "vgg19", "caffe"),
    **{f"ResNet{d}": _tf_kernels("resnet", f"resnet{d}", "caffe") for d in (50, 101, 152)},
    **{f"ResNet{d}V2": _tf_kernels("resnet", f"resnet{d}v2", "tf") for d in (50, 101, 152)},
    "InceptionV3": _tf_kernels("inception_v3", "inception_v3", "tf", 299),
    "InceptionResNetV2": _tf_kernels("inception_resnet_v2", "inception_resnet_v2", "tf", 299),
    "Xception": _tf_kernels("xception", "xception", "tf", 299),
    "MobileNet": _pair("tf", 224, f"{_TF_BASE}mobilenet/mobilenet_1_0_224_tf", "_no_top",
                       "conv_preds"),
    "MobileNetV2": _pair("tf", 224, f"{_TF_BASE}mobilenet_v2/mobilenet_v2_weights_tf_dim_"
                                    "ordering_tf_kernels_1.0_224", "_no_top"),
    **{f"MobileNetV3{v}": _pair("raw", 224, f"{_TF_BASE}mobilenet_v3/weights_mobilenet_v3_"
                                            f"{v.lower()}_224_1.0_float", "_no_top_v2", "logits")
       for v in ("Small", "Large")},
    **{f"DenseNet{d}": _tf_kernels("densenet", f"densenet{d}", "torch") for d in (121, 169, 201)},
    "NASNetMobile": _pair("tf", 224, f"{_TF_BASE}nasnet/NASNet-mobile", "-no-top"),
    "NASNetLarge": _pair("tf", 331, f"{_TF_BASE}nasnet/NASNet-large", "-no-top"),
    **{f"EfficientNetB{i}": _pair("raw", size, f"https://storage.googleapis.com/"
                                               f"keras-applications/efficientnetb{i}", "_notop")
       for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
    **{f"EfficientNetV2{v}": _pair("raw", size, f"{_TF_BASE}efficientnet_v2/efficientnetv2-"
                                                f"{v.lower()}", "_notop")
       for v, size in (("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300), ("S", 384),
                       ("M", 480), ("L", 480))},
    **{f"ConvNeXt{v}": _pair("raw", 224, f"{_TF_BASE}convnext/convnext_{v.lower()}", "_notop",
                             f"convnext_{v.lower()}_head_dense")
       for v in ("Tiny", "Small", "Base", "Large", "XLarge")},
}

# the names keras.applications gives its models (``model.name``) -> preprocessing mode
_NAME_MODES = (
    ("caffe", r"vgg1[69]|resnet(50|101|152)"),
    ("tf", r"resnet(50|101|152)v2|inception_v3|inception_resnet_v2|xception|nasnet_(mobile|large)"
           r"|mobilenet(v2)?_.+"),
    ("torch", r"densenet(121|169|201)"),
    ("raw", r"efficientnetb[0-7]|efficientnetv2-(b[0-3]|[sml])|MobileNetV3(Small|Large)"
            r"|convnext_(tiny|small|base|large|xlarge)"),
)


def application_mode(model_name: str) -> str | None:
    """The preprocessing mode of a ``keras.applications`` network, from the name Keras gives
    it (``"vgg16"``, ``"mobilenetv2_1.00_224"``, ...); None for other names.

    Example:
        >>> application_mode("resnet50"), application_mode("convnext_tiny"), application_mode("mine")
        ('caffe', 'raw', None)
    """
    return next((mode for mode, names in _NAME_MODES if re.fullmatch(names, model_name)), None)


# --- keras ------------------------------------------------------------------------------------

def _import_keras():
    """keras, on the JAX backend, or a one-line error saying what to do."""
    if "keras" not in sys.modules:
        if importlib.util.find_spec("keras") is None:
            raise KerasUnavailableError('Keras is not installed: pip install "featviz[keras]"')
        os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    if keras.backend.backend() != "jax":
        raise KerasUnavailableError(
            f"Keras runs on its {keras.backend.backend()!r} backend; featviz needs JAX: set "
            "KERAS_BACKEND=jax before keras is first imported")
    return keras


@contextlib.contextmanager
def numpy_initializers(rng: np.random.Generator | None = None):
    """While Keras builds a network in this context, its random initializers draw from
    ``rng`` (numpy; None: they give zeros) instead of ``jax.random``, which compiles one XLA
    program per weight shape: seconds for a ResNet50 on a CPU, spent on values that a weights
    file replaces at once. Constant initializers (BatchNorm's ones and zeros) are unchanged.

    Example:
        >>> keras = _import_keras()
        >>> with numpy_initializers(np.random.default_rng(0)):
        ...     layer = keras.layers.Dense(3)
        ...     layer.build((None, 2))
        >>> layer.kernel.shape
        (2, 3)
    """
    from keras.src.backend.jax import random as backend_random

    def cast(values, dtype):
        return values.astype(dtype or "float32")

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return cast(np.zeros(shape) if rng is None else rng.uniform(minval, maxval, shape), dtype)

    def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        return cast(np.zeros(shape) if rng is None else rng.normal(mean, stddev, shape), dtype)

    def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
        if rng is None:
            return cast(np.zeros(shape), dtype)
        z = rng.normal(0.0, 1.0, shape)
        while (out := np.abs(z) > 2).any():  # redrawn beyond two standard deviations, as Keras
            z[out] = rng.normal(0.0, 1.0, out.sum())
        return cast(z * stddev + mean, dtype)

    replaced = {"uniform": uniform, "normal": normal, "truncated_normal": truncated_normal}
    saved = {name: getattr(backend_random, name, None) for name in replaced}
    if None in saved.values():  # another Keras: its own initializers, slower but the same
        yield
        return
    for name, fn in replaced.items():
        setattr(backend_random, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(backend_random, name, fn)


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


def from_keras(model, layers: Sequence[str] | None = None, *, name: str | None = None,
               preprocess: str | Callable = "auto", image_size: int | None = None,
               class_names: Sequence[str] | str | None = "auto") -> Model:
    """Adapt a Keras 3 model (functional or Sequential, JAX backend) to a featviz ``Model``.

    ``layers``: the Keras layer names to expose (their outputs); None: every layer with an
    (H, W, C) map that computes something (not the input, padding, cropping, dropout or the
    network's own rescaling layers), every ``Dense`` layer, and the model's outputs. When the
    model ends in a softmax (``Dense(activation="softmax")`` or an ``Activation`` layer), its
    pre-softmax scores are exposed too, last, as ``"logits"``: the class scores that Grad-CAM
    and saliency differentiate (they read the last layer without a spatial map).

    ``preprocess``: a callable from featviz's images (RGB in [0, 1], NHWC) to the network's
    input, a mode (``"caffe"``, ``"tf"``, ``"torch"``, ``"raw"`` for 0-255, ``"none"``), or
    ``"auto"``: the mode of the ``keras.applications`` network the model's name is (with that
    network's defaults, e.g. ``include_preprocessing=True``), else ``"none"``.
    ``image_size``: the size the network was trained for (default: its input's, else 224).
    A network with a fixed input height and width (a ``Flatten`` head) is shown every image
    at that size, resized (bilinear) as the first step of its preprocessing; a network with
    one input channel is a grey one (``input_channels=1``).
    ``class_names``: ``"auto"`` gives ImageNet's names to a model with a 1000-way output.

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
    inputs = _image_input(keras, model)
    if keras.config.image_data_format() != "channels_last":
        raise KerasModelError("featviz needs channels_last images: "
                              "keras.config.set_image_data_format('channels_last')")

    outputs = {layer.name: out for layer in model.layers if (out := _output(layer)) is not None}
    output_layers = [layer for layer in model.layers
                     if any(outputs.get(layer.name) is t for t in model.outputs)]
    model_outputs = {layer.name for layer in output_layers}
    logits = _logits_source(keras, output_layers if len(model.outputs) == 1 else [])
    logits_name = None
    if logits is not None:
        logits_name = LOGITS if LOGITS not in outputs else f"{logits[0].name}_{LOGITS}"
        outputs[logits_name] = logits[0].input

    if layers is None:
        def offered(layer):
            out = outputs.get(layer.name)
            if out is None:
                return False
            if layer.name in model_outputs:
                return len(out.shape) in (2, 4)
            if len(out.shape) == 4:
                return type(layer).__name__ not in _PASS_THROUGH
            return len(out.shape) == 2 and isinstance(layer, keras.layers.Dense)
        exposed = [layer.name for layer in model.layers if offered(layer)]
        exposed += [logits_name] if logits_name else []
    else:
        exposed = list(layers)
        unknown = [n for n in exposed if n not in outputs]
        if unknown:
            raise UnknownLayerError(f"unknown layer(s) {unknown} of Keras model {model.name!r}; "
                                    f"valid layers: {', '.join(outputs)}")
    exposed = tuple(exposed)
    pre_names, derived = _pre_activations(keras, model, outputs)
    pre_names = {k: v for k, v in pre_names.items() if k in exposed}
    outputs.update({name: source for name, (source, *_) in derived.items()})
    readable = exposed + tuple(v for v in pre_names.values() if v not in exposed)

    variables = list(model.variables)
    keys = _variable_keys(variables)
    params = {keys[id(v)]: jnp.array(v.value, copy=True) for v in variables}
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
        if logits_name in found and logits[1] is not None:  # a softmax Dense: its input
            kernel, bias = logits[1]                          # times its kernel, plus bias
            z = found[logits_name] @ p[keys[id(kernel)]]
            found[logits_name] = z if bias is None else z + p[keys[id(bias)]]
        for name in set(found) & set(derived):  # a conv's output before its rectifier
            _, twin, variables = derived[name]
            found[name], _ = twin.stateless_call([p[keys[id(v)]] for v in variables], [],
                                                 found[name])
        return found

    channels = 1 if inputs[0].shape[-1] == 1 else 3
    prepare = _preprocessing(model.name, preprocess, channels)
    fixed = _fixed_size(inputs[0])
    if fixed:
        if image_size not in (None, fixed[0]):
            raise KerasModelError(f"Keras model {model.name!r} takes {fixed[0]} x {fixed[1]} "
                                  f"images, so its image_size is {fixed[0]}, not {image_size}: "
                                  "leave image_size out (featviz resizes what it shows it)")
        prepare = _resized(prepare, fixed)
    if image_size is None:
        image_size = inputs[0].shape[1] if isinstance(inputs[0].shape[1], int) else 224
    if isinstance(class_names, str):
        if class_names != "auto":
            raise ValueError(f"class_names must be a sequence of names, None or 'auto', not "
                             f"{class_names!r}")
        shapes = {n: tuple(outputs[n].shape) for n in exposed}
        if logits_name in shapes:  # as many scores as the softmax has classes
            shapes[logits_name] = tuple(model.outputs[0].shape)
        flat = [shape for shape in shapes.values() if len(shape) == 2]
        class_names = None
        if flat and flat[-1][-1] == 1000:
            from .imagenet import class_names as imagenet_names
            class_names = imagenet_names()
    return Model(name=name or model.name, apply=apply, params=params, layers=exposed,
                 preprocess=prepare, image_size=image_size, class_names=class_names,
                 pre_activations=pre_names, input_channels=channels)


# --- keras.applications from a weights file ---------------------------------------------------

def _keras_cache(url: str) -> Path:
    """Where Keras keeps a file it downloaded: ``$KERAS_HOME/models`` (default ``~/.keras``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / url.rsplit("/", 1)[1]


def _saved_layer_names(path) -> set[str] | None:
    """The layer names a Keras 2 style .h5 weights file holds (None: another format)."""
    try:
        import h5py
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            names = group.attrs.get("layer_names")
            if names is None:
                return None
            return {n.decode() if isinstance(n, bytes) else str(n) for n in names}
    except (ImportError, OSError, KeyError):
        return None


_LOAD_FAILURE = re.compile(r"A total of (\d+) objects could not be loaded\. Example error "
                           r"message for object <\w+ name=([^,>]+).*?>:\s*(.*)")


def _load_failure(err: Exception) -> str:
    """Keras's complaint about a weights file in one line: how many layers did not load and
    why the first did not (Keras's message spans lines and lists every layer)."""
    text = str(err).strip() or type(err).__name__
    found = _LOAD_FAILURE.match(text)
    if not found:
        return _first_sentence(text)
    count, layer, why = found.groups()
    return (f"its weights are not this architecture's: {count} layers could not be loaded; "
            f"the first, {layer!r}: {_first_sentence(why)}")


def _first_sentence(text: str, limit: int = 200) -> str:
    """The first line of ``text``, cut before Keras's dump of a variable's values."""
    line = text.strip().splitlines()[0].split(" Target variable:")[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def keras_application(name: str, weights: str | None = None,
                      input_size: int | None = None) -> Model:
    """``keras.applications.<name>`` (e.g. ``"VGG16"``, ``"ResNet50"``, ``"EfficientNetB0"``;
    ``APPLICATIONS`` lists them) with the weights in ``weights``, a file as Keras downloads it
    (with or without the classifier: the network is built to fit the file), as a featviz model
    with the network's own preprocessing. Without ``weights``, the file Keras keeps in
    ``~/.keras/models`` (``$KERAS_HOME``) is used if it is there; otherwise
    ``KerasWeightsError`` says where to get it. Nothing is downloaded.

    With its classifier the network ends in its 1000 ImageNet logits (``"predictions"``,
    built with ``classifier_activation=None``) and has ImageNet's class names, and its input
    size is fixed at ``input_size`` (default: the network's, 224 or more); without it, any
    size is accepted and ``input_size`` is only the model's default size.
    """
    keras = _import_keras()
    if name not in APPLICATIONS:
        raise UnknownApplicationError(f"unknown Keras application {name!r}; supported: "
                                      f"{', '.join(APPLICATIONS)}")
    app = APPLICATIONS[name]
    if weights is None:
        cached = [p for p in (_keras_cache(app.top_url), _keras_cache(app.notop_url))
                  if p.is_file()]
        if not cached:
            raise KerasWeightsError(
                f"{name} needs its ImageNet weights file, and nothing is downloaded: get "
                f"{app.top_url} (or run keras.applications.{name}(weights='imagenet') on a "
                f"machine with internet, which saves it in ~/.keras/models/), then pass it as "
                f"weights= (--weights FILE)")
        weights = cached[0]
    if not Path(weights).is_file():
        raise KerasWeightsError(f"no weights file at {weights}; give a .h5 or .keras file of "
                                f"keras.applications.{name}")
    size = input_size or app.size
    saved = _saved_layer_names(weights)
    tops = [True, False] if saved is None else [app.top_layer in saved]
    build = getattr(keras.applications, name)
    problem = None
    for include_top in tops:
        kwargs = (dict(include_top=True, input_shape=(size, size, 3), classifier_activation=None)
                  if include_top else dict(include_top=False, input_shape=(None, None, 3)))
        try:
            with numpy_initializers():  # zeros, replaced by the file's weights
                net = build(weights=None, **kwargs)
            with warnings.catch_warnings():  # a trial load's complaints: the error says it all
                warnings.simplefilter("ignore" if len(tops) > 1 else "default")
                net.load_weights(str(weights))
        except (ValueError, KeyError, OSError) as err:
            problem = _load_failure(err)
            continue
        return from_keras(net, name=f"keras:{name}", preprocess=PREPROCESS[app.mode],
                          image_size=size)
    raise KerasWeightsError(f"{weights} does not fit keras.applications.{name}"
                            f"{f' at {size} px' if input_size else ''} (give a weights file of "
                            f"{name} itself): {problem}")
