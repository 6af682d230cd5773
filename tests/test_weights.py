"""The weights reader: real file, both PyTorch formats, and refusal of tampered pickles."""
import collections
import io
import os
import pickle
import sys
import zipfile

import numpy as np
import pytest

from featviz.models.efficientnet_lite import default_weights_path
from featviz.models.torch_weights import (
    _STORAGE_DTYPES,
    LEGACY_MAGIC,
    WeightsFileError,
    read_state_dict,
)


@pytest.fixture(scope="module")
def state():
    return read_state_dict(default_weights_path())


def test_reads_embedded_weights(state):
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert np.isfinite(state["_fc.weight"]).all()


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/featviz-pwned",))


def _legacy_file(tmp_path, payload):
    buf = io.BytesIO()
    for obj in (LEGACY_MAGIC, 1001, {"little_endian": True}):
        pickle.dump(obj, buf, protocol=2)
    pickle.dump(payload, buf, protocol=2)
    pickle.dump([], buf, protocol=2)
    path = tmp_path / "w.pth"
    path.write_bytes(buf.getvalue())
    return path


def test_refuses_code_in_legacy_pickle(tmp_path):
    if os.path.exists("/tmp/featviz-pwned"):
        os.remove("/tmp/featviz-pwned")
    path = _legacy_file(tmp_path, {"w": _Evil()})
    with pytest.raises(WeightsFileError, match="posix.system|os.system"):
        read_state_dict(path)
    assert not os.path.exists("/tmp/featviz-pwned")


def test_refuses_code_in_zip_pickle(tmp_path):
    path = tmp_path / "w.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _Evil()}, protocol=2))
    with pytest.raises(WeightsFileError, match="never needs"):
        read_state_dict(path)
    assert not os.path.exists("/tmp/featviz-pwned")


def _torch_zip_pickle(monkeypatch, tensor_args, storage_type="FloatStorage"):
    """Pickle {"w": tensor} the way torch.save does, using stand-ins for torch's names."""
    import types

    torch_mod, utils_mod = types.ModuleType("torch"), types.ModuleType("torch._utils")
    storage_cls = type(storage_type, (), {"__module__": "torch"})
    storage = object()

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    setattr(torch_mod, storage_type, storage_cls)
    utils_mod._rebuild_tensor_v2 = _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch_mod)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_mod)

    class Tensor:
        def __reduce__(self):
            return _rebuild_tensor_v2, (storage,) + tensor_args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", storage_cls, "0", "cpu", 6) if obj is storage else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(collections.OrderedDict(w=Tensor()))
    return buf.getvalue()


def test_reads_zip_format_with_strides(tmp_path, monkeypatch):
    # a (3, 2) tensor viewing a 6-element storage transposed (strides 1, 3)
    payload = _torch_zip_pickle(monkeypatch, (0, (3, 2), (1, 3), False, collections.OrderedDict()))
    data = np.arange(6, dtype="<f4")
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/data/0", data.tobytes())
    np.testing.assert_array_equal(read_state_dict(path)["w"], data.reshape(2, 3).T)


def test_refuses_tensor_outside_its_storage(tmp_path, monkeypatch):
    payload = _torch_zip_pickle(monkeypatch, (4, (3, 2), (1, 3), False, collections.OrderedDict()))
    path = tmp_path / "z.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/data/0", np.arange(6, dtype="<f4").tobytes())
    with pytest.raises(WeightsFileError, match="past its storage"):
        read_state_dict(path)


def _zip_file(path, payload, storage_bytes):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/data/0", storage_bytes)
    return path


def test_negative_offset_is_refused_from_the_command_line(tmp_path, monkeypatch, capsys):
    """A crafted file whose tensor starts before its storage (offset -900) once read 900 floats
    from outside the file; it is refused with one line and exit status 2."""
    from featviz.cli import main
    payload = _torch_zip_pickle(monkeypatch, (-900, (900,), (1,), False, collections.OrderedDict()))
    path = _zip_file(tmp_path / "evil.pth", payload, np.zeros(6, "<f4").tobytes())
    assert main(["predict", "--weights", str(path), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "negative" in err


@pytest.mark.parametrize("seed", range(4))
def test_tampered_views_never_read_outside_the_file(tmp_path, monkeypatch, seed):
    """Random storage types, offsets, sizes, strides and storage lengths: every tensor read is
    either refused or equal to numpy's view of the file's own bytes."""
    rng = np.random.default_rng(seed)
    read = 0
    for i in range(60):
        storage_type, dtype = list(_STORAGE_DTYPES.items())[rng.integers(len(_STORAGE_DTYPES))]
        ndim = int(rng.integers(1, 4))
        size = tuple(int(v) for v in rng.integers(-2, 9, ndim))
        stride = tuple(int(v) for v in rng.integers(-3, 12, ndim))
        offset = int(rng.integers(-100, 80))
        raw = rng.bytes(int(rng.integers(0, 300)))  # may be shorter than the tensor, or ragged
        payload = _torch_zip_pickle(monkeypatch, (offset, size, stride, False,
                                                  collections.OrderedDict()), storage_type)
        path = _zip_file(tmp_path / f"t{i}.pt", payload, raw)
        try:
            w = read_state_dict(path)["w"]
        except WeightsFileError:
            continue
        data = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        assert offset >= 0 and min(size + stride) >= 0, (offset, size, stride)
        if 0 in size:
            assert w.shape == size
            read += 1
            continue
        assert last < data.size, (offset, size, stride, data.size)
        expected = np.lib.stride_tricks.as_strided(data[offset:], size,
                                                   [data.itemsize * s for s in stride])
        assert w.shape == size and w.tobytes() == np.ascontiguousarray(expected).tobytes()
        read += 1
    assert read >= 2  # the valid views among them were read, not all refused


def test_truncated_and_garbage_files(tmp_path):
    real = open(default_weights_path(), "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real[: len(real) // 2])
    with pytest.raises(WeightsFileError, match="truncated"):
        read_state_dict(cut)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"hello world" * 10)
    with pytest.raises(WeightsFileError):
        read_state_dict(junk)
    with pytest.raises(WeightsFileError, match="cannot read"):
        read_state_dict(tmp_path / "missing.pth")
