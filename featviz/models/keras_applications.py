"""The ``keras.applications`` networks featviz knows, in one table (``APPLICATIONS``), and
``keras_application(name, weights)``, which builds one from its weights file with its own
preprocessing (``PREPROCESS``); nothing is downloaded.

Example:
    >>> app = APPLICATIONS["ResNet50V2"]
    >>> app.mode, app.size, app.keras_name
    ('tf', 224, 'resnet50v2')
    >>> application_mode("mobilenetv2_1.00_224"), application_mode("my_net")
    ('tf', None)
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp

from ..errors import KerasWeightsError, UnknownApplicationError
from .base import Model, _identity
from .keras_compat import _import_keras, numpy_initializers

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
    the classifier), the name Keras gives the network it builds (``model.name``: a regular
    expression, matched whole, where it varies with the arguments, as MobileNet's
    ``mobilenet_1.00_224``) and the name of the classifier's last layer with weights."""
    mode: str
    size: int
    top_url: str
    notop_url: str
    keras_name: str
    top_layer: str = "predictions"


def _tf_kernels(folder: str, stem: str, mode: str, size: int = 224) -> Application:
    """A network whose files are ``<stem>_weights_tf_dim_ordering_tf_kernels[_notop].h5``;
    Keras names the network ``stem``."""
    base = f"{_TF_BASE}{folder}/{stem}_weights_tf_dim_ordering_tf_kernels"
    return Application(mode, size, base + ".h5", base + "_notop.h5", stem)


def _pair(mode: str, size: int, url: str, notop_suffix: str, keras_name: str,
          top_layer="predictions"):
    return Application(mode, size, url + ".h5", url + notop_suffix + ".h5", keras_name,
                       top_layer)


APPLICATIONS: dict[str, Application] = {
    "VGG16": _tf_kernels("vgg16", "vgg16", "caffe"),
    "VGG19": _tf_kernels("vgg19", "vgg19", "caffe"),
    **{f"ResNet{d}": _tf_kernels("resnet", f"resnet{d}", "caffe") for d in (50, 101, 152)},
    **{f"ResNet{d}V2": _tf_kernels("resnet", f"resnet{d}v2", "tf") for d in (50, 101, 152)},
    "InceptionV3": _tf_kernels("inception_v3", "inception_v3", "tf", 299),
    "InceptionResNetV2": _tf_kernels("inception_resnet_v2", "inception_resnet_v2", "tf", 299),
    "Xception": _tf_kernels("xception", "xception", "tf", 299),
    "MobileNet": _pair("tf", 224, f"{_TF_BASE}mobilenet/mobilenet_1_0_224_tf", "_no_top",
                       r"mobilenet_.+", "conv_preds"),
    "MobileNetV2": _pair("tf", 224, f"{_TF_BASE}mobilenet_v2/mobilenet_v2_weights_tf_dim_"
                                    "ordering_tf_kernels_1.0_224", "_no_top", r"mobilenetv2_.+"),
    **{f"MobileNetV3{v}": _pair("raw", 224, f"{_TF_BASE}mobilenet_v3/weights_mobilenet_v3_"
                                            f"{v.lower()}_224_1.0_float", "_no_top_v2",
                                f"MobileNetV3{v}", "logits")
       for v in ("Small", "Large")},
    **{f"DenseNet{d}": _tf_kernels("densenet", f"densenet{d}", "torch") for d in (121, 169, 201)},
    "NASNetMobile": _pair("tf", 224, f"{_TF_BASE}nasnet/NASNet-mobile", "-no-top",
                          "nasnet_mobile"),
    "NASNetLarge": _pair("tf", 331, f"{_TF_BASE}nasnet/NASNet-large", "-no-top", "nasnet_large"),
    **{f"EfficientNetB{i}": _pair("raw", size, f"https://storage.googleapis.com/"
                                               f"keras-applications/efficientnetb{i}", "_notop",
                                  f"efficientnetb{i}")
       for i, size in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
    **{f"EfficientNetV2{v}": _pair("raw", size, f"{_TF_BASE}efficientnet_v2/efficientnetv2-"
                                                f"{v.lower()}", "_notop",
                                   f"efficientnetv2-{v.lower()}")
       for v, size in (("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300), ("S", 384),
                       ("M", 480), ("L", 480))},
    **{f"ConvNeXt{v}": _pair("raw", 224, f"{_TF_BASE}convnext/convnext_{v.lower()}", "_notop",
                             f"convnext_{v.lower()}", f"convnext_{v.lower()}_head_dense")
       for v in ("Tiny", "Small", "Base", "Large", "XLarge")},
}


def application_mode(model_name: str) -> str | None:
    """The preprocessing mode of a ``keras.applications`` network, from the name Keras gives
    it (``"vgg16"``, ``"mobilenetv2_1.00_224"``, ...: ``Application.keras_name``); None for
    other names.

    Example:
        >>> (application_mode("resnet50"), application_mode("convnext_tiny"),
        ...  application_mode("mine"))
        ('caffe', 'raw', None)
    """
    return next((app.mode for app in APPLICATIONS.values()
                 if re.fullmatch(app.keras_name, model_name)), None)


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


def _weights_file(name: str, app: Application, weights: str | Path | None) -> str | Path:
    """``weights``, or the file Keras keeps for ``name`` when it is None; an error saying where
    to get the file when there is none."""
    if weights is None:
        cached = [p for p in (_keras_cache(app.top_url), _keras_cache(app.notop_url))
                  if p.is_file()]
        if not cached:
            raise KerasWeightsError(
                f"{name} needs its ImageNet weights file, and nothing is downloaded: get "
                f"{app.top_url} (or run keras.applications.{name}(weights='imagenet') on a "
                f"machine with internet, which saves it in ~/.keras/models/), then pass its "
                f"path as weights=PATH")
        weights = cached[0]
    if not Path(weights).is_file():
        raise KerasWeightsError(f"no weights file at {weights}; give a .h5 or .keras file of "
                                f"keras.applications.{name}")
    return weights


def keras_application(name: str, weights: str | Path | None = None,
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
    from .keras import from_keras  # the adapter reads this table for its "auto" preprocessing

    keras = _import_keras()
    if name not in APPLICATIONS:
        raise UnknownApplicationError(f"unknown Keras application {name!r}; supported: "
                                      f"{', '.join(APPLICATIONS)}")
    app = APPLICATIONS[name]
    weights = _weights_file(name, app, weights)
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
