"""Models from where their users keep them, for ``load_model`` (and ``--model``) beyond the
zoo's names:

- ``keras:NAME``: ``keras.applications.NAME`` with its ImageNet weights (``imagenet_application``):
  the file in Keras's cache (``$KERAS_HOME/models``, default ``~/.keras/models``), else the one
  Keras downloads there now.
- ``mine.keras``, ``mine.h5``: a whole model saved with Keras's ``model.save(...)``, adapted by
  ``from_keras``.
- ``package.module:function`` or ``path/to/file.py:function``: a function, called with no
  arguments, that returns a featviz ``Model``, a Keras model, a linen module with its variables,
  ``(module, variables)`` or ``(module, variables, layers)``, or an nnx module, alone or as
  ``(module, layers)`` (``as_model``).

A Keras model's image size and preprocessing are those ``from_keras`` infers (its input's size
where fixed, else 224; the preprocessing of the ``keras.applications`` network its name is,
else none); a Flax module's those of ``from_linen``/``from_nnx`` (224, none), its layers, where
not named, every submodule output and sown value that is an (h, w, C) map or a vector. To set
them, the factory returns the adapted model itself, e.g. ``featviz.from_keras(net,
image_size=64, preprocess="tf")`` or ``featviz.from_linen(net, variables, ["conv1"],
image_size=32)``.

Example:
    >>> source_kind("mine.keras"), source_kind("pkg.nets:build"), source_kind("nets.py:build")
    ('keras file', 'factory', 'factory')
    >>> load_source("featviz.models.tiny:load_tiny").layers
    ('conv1', 'conv2', 'conv3', 'head', 'logits')
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import io
import os
import re
import sys
import tempfile
import types
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import linen as nn

from ..errors import KerasWeightsError, ModelSourceError, UnknownModelError
from .base import Model
from .flax_adapters import _layer_name, _sown, from_linen, from_nnx
from .keras import APPLICATIONS, Application, from_keras, keras_application
from .keras_compat import _import_keras

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_FACTORY = re.compile(r"(?P<target>.+):(?P<attr>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
_MODULE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def source_kind(name: str) -> str | None:
    """``"keras file"`` (a name ending in .keras, .h5, .hdf5), ``"factory"``
    (``module:function``, ``file.py:function``), or None."""
    if name.lower().endswith(KERAS_SUFFIXES):
        return "keras file"
    found = _FACTORY.fullmatch(name)
    if found and (found["target"].endswith(".py") or _MODULE.fullmatch(found["target"])):
        return "factory"
    return None


def load_source(name: str, weights: str | None = None, zoo: Sequence[str] = ()) -> Model:
    """The model a Keras file or a factory gives (``source_kind``); ``UnknownModelError``
    naming every form of model, ``zoo``'s names among them, for anything else."""
    kind = source_kind(name)
    if kind is None:
        hint = f" ({name} names no function: give {name}:FUNCTION)" if name.endswith(".py") else ""
        raise UnknownModelError(
            f"unknown model {name!r}{hint}; give a zoo model ({', '.join(zoo)}), keras:NAME "
            "(a keras.applications network), a .keras or .h5 file saved by Keras, or a factory "
            "that returns the model: package.module:function or path/to/file.py:function")
    if weights is not None:
        raise ModelSourceError(f"weights=FILE goes with a zoo model or keras:NAME; {name} brings "
                               "its own weights (a factory loads any file it needs itself)")
    return _keras_file(Path(name)) if kind == "keras file" else _factory(name)


def _first_line(err: BaseException, limit: int = 160) -> str:
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


# --- Keras: a saved model, or keras.applications with Keras's own download ------------------

def _keras_file(path: Path) -> Model:
    """A whole model saved by Keras (``model.save``), adapted by ``from_keras``."""
    if not path.is_file():
        raise ModelSourceError(f"no Keras model file at {path}; give the path of a model saved "
                               f"with model.save('{path.name}')")
    keras = _import_keras()
    if not _keras_format(path):
        raise ModelSourceError(f"{path} is not a Keras model file (neither a .keras archive nor "
                               f"an HDF5 file); give a model saved with model.save"
                               f"('{path.stem}.keras')")
    try:
        net = keras.saving.load_model(path, compile=False)
    except Exception as err:  # noqa: BLE001 - whatever Keras raises for a file it cannot read
        raise ModelSourceError(
            f"cannot load {path} as a Keras model ({_first_line(err)}); give a whole model "
            f"saved with model.save('{path.stem}.keras'), or a factory (module:function) that "
            "loads it (custom layers, a weights-only file)") from None
    return from_keras(net)


def _keras_format(path: Path) -> bool:
    """Whether ``path`` holds what Keras saves: a zip archive (.keras) or an HDF5 file."""
    import h5py  # Keras's own dependency

    return zipfile.is_zipfile(path) or h5py.is_hdf5(path)


def keras_cache_path(url: str) -> Path:
    """Where Keras keeps the file it downloads from ``url``: ``models/`` in ``$KERAS_HOME``
    (default ``~/.keras``), or in ``/tmp/.keras`` where that is not writable, as Keras does."""
    if "KERAS_HOME" in os.environ:
        home = os.environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home) / "models" / url.rsplit("/", 1)[1]


class _Progress(io.StringIO):
    """Keras's download messages, for ``out`` (stderr: they are not a command's output). The
    first ("Downloading data from URL") is held back until more follows (the progress bar, once
    the server answers), so that a download that cannot start prints one line: the error."""

    def __init__(self, out):
        super().__init__()
        self.out, self.started = out, False

    def write(self, text: str) -> int:
        if not self.started and not self.getvalue():
            return super().write(text)
        if not self.started:
            self.out.write(self.getvalue())
            self.started = True
        return self.out.write(text)

    def flush(self) -> None:
        self.out.flush()


def _imagenet_weights(name: str, app: Application) -> Path:
    """The ImageNet weights file of ``keras.applications.<name>``: Keras's cached copy (with or
    without the classifier), else the one Keras downloads to its cache now; where the download
    fails, an error naming its URL and the path Keras keeps it at."""
    keras = _import_keras()  # first: Keras makes its home folder when it is imported
    cached = [path for url in (app.top_url, app.notop_url)
              if (path := keras_cache_path(url)).is_file()]
    if cached:
        return cached[0]
    target = keras_cache_path(app.top_url)
    try:
        with contextlib.redirect_stdout(_Progress(sys.stderr)):
            return Path(keras.utils.get_file(target.name, app.top_url, cache_subdir="models",
                                             cache_dir=str(target.parent.parent)))
    except Exception as err:  # noqa: BLE001 - Keras raises a bare Exception for a failed fetch
        reason = _first_line(err).split(" -- ")[-1]  # Keras's "URL fetch failure on URL: ..."
        raise KerasWeightsError(
            f"keras:{name} needs its ImageNet weights and downloading them failed ({reason}): "
            f"fetch {app.top_url} and save it as {target}, or give weights=FILE") from None


def imagenet_application(name: str, weights: str | None = None) -> Model:
    """``keras_application(name, weights)``; without ``weights``, with the ImageNet weights
    file from Keras's cache, downloaded there by Keras first if it is not there yet."""
    if weights is None and name in APPLICATIONS:
        weights = str(_imagenet_weights(name, APPLICATIONS[name]))
    return keras_application(name, weights)


# --- factories: package.module:function, path/to/file.py:function ---------------------------

def _syntax_error(err: SyntaxError) -> ModelSourceError:
    return ModelSourceError(f"{err.filename}, line {err.lineno}: {err.msg} (a syntax error); "
                            "fix the file and run again")


def _imported(name: str, attr: str) -> types.ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        missing = err.name or name
        if name == missing or name.startswith(missing + "."):
            raise ModelSourceError(
                f"cannot import {name} (no module {missing!r} on the Python path); put the "
                f"folder that holds it on PYTHONPATH, or give path/to/file.py:{attr}") from None
        raise ModelSourceError(f"{name} imports {missing!r}, which is not installed: install "
                               "it and run again") from None
    except SyntaxError as err:
        raise _syntax_error(err) from None


def _from_file(path: Path, attr: str) -> types.ModuleType:
    """The Python file at ``path``, run as a module of its own (named after its path)."""
    if not path.is_file():
        raise ModelSourceError(f"no Python file at {path}; give path/to/file.py:{attr}")
    try:
        code = compile(path.read_bytes(), str(path), "exec")
    except SyntaxError as err:
        raise _syntax_error(err) from None
    stem = re.sub(r"\W", "_", path.stem)
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module = types.ModuleType(f"featviz_source_{stem}_{digest}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # as for an import: dataclasses look their module up
    try:
        exec(code, module.__dict__)
    except BaseException as err:
        del sys.modules[module.__name__]
        if isinstance(err, ModuleNotFoundError):
            raise ModelSourceError(f"{path} imports {err.name!r}, which cannot be found: "
                                   "install it, or put its folder on PYTHONPATH") from None
        raise
    return module


def _required(function: Callable) -> list[str]:
    """The names of the arguments ``function`` cannot be called without."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # no signature to read: called as it is
        return []
    return [p.name for p in parameters if p.default is p.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _function(module: types.ModuleType, target: str, attr: str) -> Callable:
    value = module
    for part in attr.split("."):
        if not hasattr(value, part):
            defined = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__]
            raise ModelSourceError(
                f"{target} has no {attr!r}" + (f" (it defines {', '.join(defined)})" if defined
                                               else "")
                + f"; give {target}:FUNCTION, the function that returns the model")
        value = getattr(value, part)
    if not callable(value):
        raise ModelSourceError(f"{target}:{attr} is a {type(value).__name__}, not a function; "
                               "name the function that returns the model")
    if needed := _required(value):
        raise ModelSourceError(f"{target}:{attr} needs arguments ({', '.join(needed)}) and is "
                               "called with none: give them defaults, or name a function that "
                               "takes none")
    return value


def _factory(spec: str) -> Model:
    """The model that the function ``spec`` (``module:function``, ``file.py:function``) makes."""
    target, _, attr = spec.rpartition(":")
    module = _from_file(Path(target), attr) if target.endswith(".py") else _imported(target, attr)
    return as_model(_function(module, target, attr)(), spec)


# --- what a factory returns, as a featviz model ----------------------------------------------

def _traced(run: Callable, source: str) -> dict:
    """``run``'s output shapes on one 224 x 224 image, RGB or else grey (nothing is computed)."""
    refusals = []
    for channels in (3, 1):
        try:
            return jax.eval_shape(run, jax.ShapeDtypeStruct((1, 224, 224, channels), jnp.float32))
        except Exception as err:  # noqa: BLE001 - whatever the module raises
            refusals.append(err)
    refusal = refusals[0]
    raise ModelSourceError(
        f"{source} returned a module that fails on a 224 x 224 image ({type(refusal).__name__}: "
        f"{_first_line(refusal)}); return the adapted model instead, e.g. "
        "featviz.from_linen(module, variables, layers, apply_kwargs={'train': False})")


def _spatial_or_vector(shapes: dict) -> list[str]:
    return [name for name, shape in shapes.items() if name and len(shape.shape) in (2, 4)]


def _linen_layers(module: nn.Module, variables, source: str) -> list[str]:
    """A linen module's submodule outputs, in the order they are computed, then the values it
    sows, each an (h, w, C) map or a vector."""
    def run(x):
        order: dict[str, jax.ShapeDtypeStruct] = {}

        def record(next_fun, args, kwargs, context):
            y = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and context.module.path and hasattr(y, "shape"):
                order.setdefault("/".join(context.module.path), y)
            return y

        with nn.intercept_methods(record):
            _, state = module.apply(variables, x, mutable=["intermediates"])
        return {**order, **_sown(state.get("intermediates"))}
    return _spatial_or_vector(_traced(run, source))


def _nnx_layers(module, source: str) -> list[str]:
    """An nnx module's submodule outputs and sown values (as nnx orders them, by name), each an
    (h, w, C) map or a vector."""
    from flax import nnx

    graphdef, state = nnx.split(module)

    def run(x):
        net = nnx.merge(graphdef, state)
        _, captured = nnx.capture(net, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
        return {_layer_name(tuple(str(k) for k in path)):
                (v.get_value() if hasattr(v, "get_value") else v.value)[-1]
                for path, v in nnx.to_flat_state(captured)}
    return _spatial_or_vector(_traced(run, source))


def _names(layers, source: str) -> list[str]:
    if isinstance(layers, (list, tuple)) and layers and all(isinstance(n, str) for n in layers):
        return list(layers)
    raise ModelSourceError(f"{source} returned layers {str(layers)[:60]!r}; give them as a list "
                           "of names, e.g. ['conv1', 'conv2']")


def as_model(value, source: str = "the factory") -> Model:
    """``value`` as a featviz model: a ``Model`` as it is, a Keras model through
    ``from_keras``, ``(linen module, variables[, layers])`` through ``from_linen``, an nnx
    module or ``(nnx module, layers)`` through ``from_nnx``; layers not named are found by
    tracing the module. Anything else: ``ModelSourceError`` naming ``source``."""
    if isinstance(value, Model):
        return value
    keras, nnx = sys.modules.get("keras"), sys.modules.get("flax.nnx")
    if keras is not None and isinstance(value, keras.Model):
        return from_keras(value)
    parts: tuple = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    head, rest = (parts[0] if parts else None), parts[1:]
    if isinstance(head, nn.Module) and len(rest) in (1, 2):
        return from_linen(head, rest[0], _names(rest[1], source) if len(rest) == 2
                          else _linen_layers(head, rest[0], source))
    if nnx is not None and isinstance(head, nnx.Module) and len(rest) in (0, 1):
        return from_nnx(head, _names(rest[0], source) if rest else _nnx_layers(head, source))
    kinds = ", ".join(type(p).__name__ for p in parts)
    what = (f"a {type(value).__name__} of ({kinds})" if isinstance(value, (tuple, list))
            else f"a value of type {kinds}")
    raise ModelSourceError(
        f"{source} returned {what}, not a model; return a featviz Model, a Keras model, "
        "(linen module, variables) or (linen module, variables, layers), or an nnx module or "
        "(nnx module, layers)")
