"""What featviz refuses to trust: a program store that someone else could have written (its
entries are pickles) and photos it cannot or must not decode (decompression bombs, truncated
or foreign files)."""
import io
import os
import pickle
import warnings

import jax
import numpy as np
import pytest
from PIL import Image

from featviz import cache, programs
from featviz.errors import ImageReadError
from featviz.image import load_image
from featviz.photos import iter_images, warn_once

KEY = "0" * 64


class _Payload:
    """A pickle that makes the folder ``marker`` when it is unpickled: code run by a load."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A cache directory of this test's own (0700), the once-per-process warning re-armed."""
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    monkeypatch.setattr(cache, "cache_dir", lambda: str(root))
    monkeypatch.setattr(programs, "_warned_untrusted", False)
    return root


def _plant(store, payload: bytes):
    path = programs._path(KEY)
    assert path.parent.parent == store
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.write_bytes(payload)
    path.chmod(0o600)
    return path


def test_the_payload_runs_code_when_unpickled(tmp_path):
    pickle.loads(pickle.dumps(_Payload(tmp_path / "ran")))
    assert (tmp_path / "ran").is_dir()  # so a load that unpickles it would leave the marker


@pytest.mark.parametrize("where", ["cache", "programs", "file"])
def test_a_store_others_can_write_is_not_unpickled(store, tmp_path, where):
    marker = tmp_path / "marker"
    path = _plant(store, pickle.dumps(_Payload(marker)))
    {"cache": store, "programs": path.parent, "file": path}[where].chmod(
        0o666 if where == "file" else 0o777)
    with pytest.warns(RuntimeWarning) as warned:
        assert programs.load(KEY) is None
    assert not marker.exists() and path.exists()  # not run, and left where it was
    [message] = [str(w.message) for w in warned]
    assert "\n" not in message and "writable by group or others" in message
    bad = {"cache": store, "programs": path.parent, "file": path}[where]
    assert f"{bad} is writable" in message and "compiling instead" in message


def test_a_store_someone_else_owns_is_not_unpickled(store, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    _plant(store, pickle.dumps(_Payload(marker)))
    monkeypatch.setattr(programs.os, "getuid", lambda: os.stat(store).st_uid + 1)
    with pytest.warns(RuntimeWarning, match=f"{store} is owned by uid"):
        assert programs.load(KEY) is None
    assert not marker.exists()


def test_the_warning_comes_once_per_process(store):
    _plant(store, b"whatever")
    store.chmod(0o777)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert programs.load(KEY) is None and programs.load(KEY) is None
        programs.save(KEY, object())
        assert programs._own_folder("shapes") is None
    assert len(warned) == 1 and warned[0].category is RuntimeWarning
    assert not (store / "shapes").exists()  # nothing made in a folder others could write


def test_a_damaged_entry_in_a_trusted_store_is_removed(store):
    path = _plant(store, b"not a program")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a store of one's own raises no warning
        assert programs.load(KEY) is None
    assert not path.exists()


def test_save_makes_private_folders_and_loads_back(tmp_path, monkeypatch):
    root = tmp_path / "new" / "cache"  # missing: save makes it
    monkeypatch.setattr(cache, "cache_dir", lambda: str(root))
    compiled = jax.jit(lambda x: x * 2 + 1).lower(np.float32(1)).compile()
    programs.save(KEY, compiled)
    path = programs._path(KEY)
    modes = [p.stat().st_mode & 0o777 for p in (root, path.parent, path)]
    assert modes == [0o700, 0o700, 0o600]
    assert float(programs.load(KEY)(np.float32(3))) == 7.0


def test_nothing_is_saved_into_a_store_others_can_write(store):
    (store / "programs").mkdir(mode=0o700)
    (store / "programs").chmod(0o777)
    compiled = jax.jit(lambda x: x - 1).lower(np.float32(1)).compile()
    with pytest.warns(RuntimeWarning, match="writable by group or others"):
        programs.save(KEY, compiled)
    assert not any((store / "programs").iterdir())


def _png(path, side: int, seed: int = 0):
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("limit", [3000, 100])  # 64 x 64 = 4096: past the limit, past twice it
def test_an_image_beyond_the_pixel_limit_is_refused_in_one_line(tmp_path, monkeypatch, limit):
    bomb = _png(tmp_path / "bomb.png", 64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        with pytest.raises(ImageReadError) as refused:
            load_image(bomb, size=32)
    message = str(refused.value)
    assert "\n" not in message and str(bomb) in message and "4,096 pixels" in message
    assert f"limit of {limit:,}" in message and "resize it first" in message
    assert not warned  # Pillow's DecompressionBombWarning became the refusal


def test_a_truncated_or_foreign_file_is_refused_in_one_line(tmp_path):
    whole = _png(tmp_path / "whole.png", 64).read_bytes()
    (tmp_path / "half.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "notes.png").write_text("not an image")
    for name, says in (("half.png", "truncated"), ("notes.png", "not a readable image")):
        with pytest.raises(ImageReadError) as refused:
            load_image(tmp_path / name)
        assert "\n" not in str(refused.value) and says in str(refused.value)
        assert str(refused.value).count(name) == 1


def test_a_folder_skips_a_bomb_with_one_warning(tmp_path, monkeypatch):
    _png(tmp_path / "a_good.png", 32)
    _png(tmp_path / "b_bomb.png", 64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    on_error = warn_once()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        for _ in range(2):  # a folder read twice warns of each file once
            names = [os.path.basename(p) for p, _ in iter_images(tmp_path, 16, on_error)]
            assert names == ["a_good.png"]
    assert len(warned) == 1 and "b_bomb.png" in str(warned[0].message)
    assert "skipped:" in str(warned[0].message) and "\n" not in str(warned[0].message)
    with pytest.warns(UserWarning, match="b_bomb.png has 4,096 pixels"):  # no on_error
        assert len(list(iter_images(tmp_path, 16))) == 1


def test_command_line_refuses_a_bomb_in_one_line(tmp_path, monkeypatch, capsys):
    from featviz.cli import main
    bomb = _png(tmp_path / "bomb.png", 64)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert main(["activations", str(bomb), "--layer", "conv2", "--model", "tiny",
                 "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featviz: error:"), err
    assert "bomb.png has 4,096 pixels" in err[0] and not (tmp_path / "a.png").exists()


def test_bytes_of_a_real_png_still_load(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 4), (255, 0, 0)).save(buffer, "PNG")
    (tmp_path / "red.png").write_bytes(buffer.getvalue())
    image = load_image(tmp_path / "red.png")
    assert image.shape == (4, 8, 3) and float(image[..., 0].min()) == 1.0
