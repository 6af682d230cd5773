"""The activation atlas on the tiny seeded network: its layout is the seed's, its cells count
every activation they hold, its PNG is the grid of icons its JSON describes, and a rerun
reuses what was saved."""
import json

import numpy as np
import pytest
from PIL import Image

import featviz
from featviz import cli
from featviz.errors import DatasetError
from featviz.image import save_png
from featviz.views.activation_atlas import (
    activation_atlas,
    image_cosines,
    sample_activations,
    umap_layout,
)

GRID, SAMPLES, TILE = 5, 1200, 32
SETTINGS = dict(grid=GRID, samples=SAMPLES, steps=8, size=TILE, progress=False)


@pytest.fixture(scope="module")
def tiny():
    return featviz.load_model("tiny")


@pytest.fixture(scope="module")
def first(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("atlas") / "atlas.png"
    return out, activation_atlas(tiny, "conv3", out=out, **SETTINGS)


def _saved(out, name):
    """The arrays of the one ``<name>_*.npz`` the atlas saved beside ``out``."""
    (path,) = (out.parent / f"{out.stem}_atlas").glob(f"{name}_*.npz")
    return dict(np.load(path))


def test_cells_count_every_activation_of_the_cells_kept(first):
    out, atlas = first
    doc = json.loads(out.with_suffix(".json").read_text())
    layout = _saved(out, "layout")["layout"]
    assert layout.shape == (SAMPLES, 2) and layout.min() == 0 and layout.max() == 1
    bins = np.minimum(np.floor(layout * GRID).astype(int), GRID - 1)
    per_cell = np.bincount(bins[:, 1] * GRID + bins[:, 0], minlength=GRID * GRID)
    kept = per_cell >= doc["min_count"]
    assert sum(cell["count"] for cell in doc["cells"]) == per_cell[kept].sum()
    assert sorted(cell["row"] * GRID + cell["col"] for cell in doc["cells"]) == \
        np.flatnonzero(kept).tolist()
    assert doc["cells"] == atlas.cells


def test_png_tiles_the_icons_at_their_cells_and_leaves_the_rest_white(first):
    out, atlas = first
    png = np.asarray(Image.open(out).convert("RGB"))
    assert png.shape == (GRID * TILE, GRID * TILE, 3)
    filled = {(cell["row"], cell["col"]) for cell in atlas.cells}
    assert 0 < len(filled) < GRID * GRID
    for row in range(GRID):
        for col in range(GRID):
            tile = png[row * TILE:(row + 1) * TILE, col * TILE:(col + 1) * TILE]
            assert (tile == 255).all() == ((row, col) not in filled), (row, col)


def test_json_cosines_are_those_of_the_png_tiles(first, tiny):
    out, atlas = first
    png = np.asarray(Image.open(out).convert("RGB"))
    acts, layout = _saved(out, "samples")["acts"], _saved(out, "layout")["layout"]
    bins = np.minimum(np.floor(layout * GRID).astype(int), GRID - 1)
    tiles, means = [], []
    for cell in atlas.cells:
        r, c = cell["row"], cell["col"]
        tiles.append(png[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE])
        means.append(acts[(bins[:, 1] == r) & (bins[:, 0] == c)].mean(axis=0))
    measured = image_cosines(tiny, "conv3", np.stack(tiles), np.stack(means))
    np.testing.assert_allclose(measured, [cell["cosine"] for cell in atlas.cells], atol=2e-3)
    assert all(len(cell["classes"]) == 5 for cell in atlas.cells)


def test_the_same_seed_gives_the_same_atlas(first, tiny, tmp_path):
    again = activation_atlas(tiny, "conv3", out=tmp_path / "again.png", **SETTINGS)
    assert again.cells == first[1].cells
    assert np.array_equal(again.image, first[1].image)


def test_the_layout_is_the_seed_s(first):
    acts = _saved(first[0], "samples")["acts"][:400]
    layout = umap_layout(acts, seed=3)
    assert np.array_equal(layout, umap_layout(acts, seed=3))
    assert not np.allclose(layout, umap_layout(acts, seed=4), atol=1e-3)


def test_a_rerun_reuses_every_phase_and_redoes_a_missing_icon(first, tiny):
    out, atlas = first
    folder = out.parent / f"{out.stem}_atlas"
    (icons,) = folder.glob("icons_*")
    lost = icons / "r{row:03d}_c{col:03d}.png".format(**atlas.cells[0])
    lost.unlink()
    saved = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    again = activation_atlas(tiny, "conv3", out=out, **SETTINGS)
    assert again.reused == {"samples": True, "layout": True, "cells": len(atlas.cells) - 1}
    assert lost.exists()
    unchanged = [p for p, stamp in saved.items() if p.stat().st_mtime_ns == stamp]
    assert sorted(unchanged) == sorted(p for p in saved if p.name != "icons.json")
    # the icon redone alone is the same picture up to rounding (another batch shape)
    assert [dict(c, cosine=None) for c in again.cells] == \
        [dict(c, cosine=None) for c in atlas.cells]
    np.testing.assert_allclose([c["cosine"] for c in again.cells],
                               [c["cosine"] for c in atlas.cells], atol=1e-2)


def test_the_command_resumes_the_same_atlas(first, capsys):
    out, atlas = first
    code = cli.main(["activation-atlas", "--model", "tiny", "--layer", "conv3", "--grid",
                     str(GRID), "--samples", str(SAMPLES), "--steps", "8", "--size", str(TILE),
                     "--quiet", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"wrote {out} ({len(atlas.cells)} cells" in printed
    assert f"reused: samples, layout, {len(atlas.cells)} icons" in printed


@pytest.mark.parametrize("options, message", [
    (["--layer", "logits"], "layer 'logits' has no spatial map"),
    (["--layer", "conv3", "--grid", "1"], "--grid must be from 2 to 200, not 1"),
    (["--layer", "conv3", "--grid", "201"], "--grid must be from 2 to 200, not 201"),
    (["--layer", "conv3", "--images", "{empty}"], "no .jpg, .jpeg, .png or other image files"),
])
def test_the_command_refuses_in_one_line(options, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    options = [o.format(empty=tmp_path / "empty") for o in options]
    code = cli.main(["activation-atlas", "--model", "tiny", *options, "--steps", "4",
                     "--out", str(tmp_path / "atlas.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("featviz: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "atlas.png").exists()


def test_a_folder_without_a_readable_photo_is_refused(tiny, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    with pytest.warns(UserWarning, match="skipped"), \
            pytest.raises(DatasetError, match="no readable photo"):
        activation_atlas(tiny, "conv3", tmp_path, out=tmp_path / "atlas.png", **SETTINGS)


def test_each_activation_is_labelled_with_its_own_crop_s_classes(tiny, tmp_path):
    """Two constant photos: every crop of one is that photo, so photo 0's rows (its crops come
    first) must be activations of its map, labelled with its own top classes."""
    save_png(np.zeros((40, 40, 3)), tmp_path / "a_black.png")
    save_png(np.ones((40, 40, 3)), tmp_path / "b_white.png")
    data = sample_activations(tiny, "conv3", tmp_path, samples=144)  # 2 photos x 2 crops x 36
    black = np.zeros((1, 32, 32, 3), np.float32)
    own = np.asarray(tiny.activations(black, layers=["conv3"])["conv3"])[0, 1:7, 1:7]
    logits = np.asarray(tiny.activations(black, layers=["logits"])["logits"])[0]
    rows = data["acts"][:72]
    distance = np.abs(rows[:, None] - own.reshape(1, -1, own.shape[-1])).max(-1).min(1)
    assert distance.max() < 1e-4
    assert (np.sort(data["classes"][:72], axis=1) == np.sort(np.argsort(-logits)[:5])).all()
    assert not (np.sort(data["classes"][72:], axis=1) == np.sort(np.argsort(-logits)[:5])).all()
