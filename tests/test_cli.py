"""The featviz command end to end: outputs, resumption, bad input.

One test renders with the real network (EfficientNet-Lite0) and the weights-file tests read its
file; the tests of files, resuming and mistakes use the zoo's ``tiny`` model (seeded random
weights): it loads in half a second and has 5 layers, its deepest render program compiles in
about half the time of Lite0's."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from featviz.channels import parse_channels
from featviz.cli import OPTION_RANGES, build_parser, main
from featviz.config import REAL_OPTIONS
from featviz.engine import Renderer
from featviz.errors import ChannelRangeError
from featviz.models.efficientnet_lite import default_weights_path

FAST = ["--steps", "8", "--size", "64", "--quiet"]
TINY = ["--model", "tiny"]


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featviz: error:"), err
    return err[0]


def test_parse_channels():
    assert parse_channels("0-3,7,2", 10) == [0, 1, 2, 3, 7]
    assert parse_channels(None, 3) == [0, 1, 2]
    for bad in ("3-1", "x", "0-12"):
        with pytest.raises(ChannelRangeError):
            parse_channels(bad, 10)


def test_layers_lists_shapes(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "blocks_8" in out and "(7, 7, 1280)" in out and "logits" in out


def test_models_lists_the_registry(capsys):
    from featviz.models import REGISTRY
    assert main(["models"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[0] for row in rows[:-2]] == list(REGISTRY)
    assert rows[-2].startswith("keras:NAME") and "VGG16" in rows[-2]
    assert "mine.keras" in rows[-1] and "path/to/file.py:build" in rows[-1]
    assert rows[1].split()[1:3] == ["240", "24"]  # Lite1: native size, layer count


def test_atlas_default_layer_comes_from_the_registry(tmp_path, capsys):
    out = tmp_path / "atlas.png"
    assert main(["atlas", "--channels", "0", "--steps", "1", "--size", "32", "--quiet",
                 "--out", str(out)] + TINY) == 0
    assert "(1 channel of conv3)" in capsys.readouterr().out


def test_layers_default_to_the_models_input_size(capsys):
    assert main(["layers"] + TINY) == 0
    out = capsys.readouterr().out
    assert "at 32 px" in out and "(8, 8, 32)" in out


def test_tiny_model_is_in_the_zoo(tmp_path, capsys):
    assert main(["layers", "--size", "32"] + TINY) == 0
    out = capsys.readouterr().out
    assert "conv3" in out and "(8, 8, 32)" in out and "logits" in out
    assert main(["layers", "--weights", str(default_weights_path())] + TINY) == 2
    assert "tiny model has no weights file" in _error_line(capsys)


def test_render_writes_pngs_and_results(tmp_path, capsys):
    assert main(["render", "--layer", "blocks_4", "--channels", "0-1,5",
                 "--out", str(tmp_path)] + FAST) == 0
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == ["blocks_4_0.png", "blocks_4_1.png", "blocks_4_5.png"]
    assert Image.open(tmp_path / "blocks_4_5.png").size == (64, 64)
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["channels"]) == {"0", "1", "5"} and results["seconds"] > 0
    assert all(np.isfinite(r["objective"]) for r in results["channels"].values())
    assert results["settings"]["optimized_layer"] == "blocks_4"  # not rectified: as it is
    assert all("objective_post" not in r for r in results["channels"].values())


@pytest.mark.parametrize("activation", ["pre", "post"])
def test_rectified_layer_records_both_values(tmp_path, activation):
    assert main(["render", "--layer", "conv2", "--channels", "0-1", "--steps", "4", "--size",
                 "32", "--quiet", "--activation", activation, "--out", str(tmp_path)] + TINY) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    expected = "conv2_conv" if activation == "pre" else "conv2"
    assert results["settings"]["optimized_layer"] == expected
    channels = results["channels"].values()
    if activation == "pre":  # after the ReLU: the positive part's mean, at least the mean
        assert all(r["objective_post"] >= r["objective"] - 1e-5 for r in channels)
    else:
        assert all("objective_post" not in r for r in channels)


def test_outputs_follow_the_umask(tmp_path):
    umask = os.umask(0o027)
    try:
        assert main(["atlas", "--layer", "conv2", "--channels", "0-1", "--out",
                     str(tmp_path / "atlas.png")] + TINY + FAST) == 0
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.rglob("*") if p.is_file()}
    assert len(modes) >= 5 and set(modes.values()) == {0o640}, modes


def test_atlas_is_resumable_and_never_half_written(tmp_path, monkeypatch, capsys):
    out = tmp_path / "atlas.png"
    args = (["atlas", "--layer", "conv2", "--channels", "0-5", "--chunk", "3", "--out", str(out)]
            + TINY + FAST)
    real_call = Renderer._render_stacked
    calls = []

    def interrupted_on_second_chunk(self, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_call(self, *args)

    monkeypatch.setattr(Renderer, "_render_stacked", interrupted_on_second_chunk)
    assert main(args) == 130
    assert not out.exists() and not list(tmp_path.rglob("*.tmp"))
    done = json.loads((tmp_path / "atlas_channels" / "results.json").read_text())
    assert sorted(done["channels"]) == ["0", "1", "2"]

    calls.clear()
    monkeypatch.setattr(
        Renderer, "_render_stacked",
        lambda self, *args: (calls.append(1), real_call(self, *args))[1])
    assert main(args) == 0
    assert len(calls) == 1  # only the missing chunk was rendered
    atlas = np.asarray(Image.open(out))
    assert atlas.shape[0] > 2 * 64 and atlas.std() > 10  # a grid of images, not a blank
    summary = json.loads(out.with_suffix(".json").read_text())
    assert sorted(summary["objective"], key=int) == [str(c) for c in range(6)]


def test_atlas_of_every_layer_resumes_after_a_kill(tmp_path):
    """``atlas --layer all`` in its own process, killed once the first layer's atlas is out;
    the rerun renders only what is missing and ends with one atlas per layer. Every later
    layer costs a compile and 64 steps, so the kill lands before the last one is done."""
    from featviz.models import load_model

    tiny = load_model("tiny")
    out = tmp_path / "net.png"
    argv = [sys.executable, "-m", "featviz", "atlas", "--model", "tiny", "--layer", "all",
            "--channels", "0-1", "--steps", "64", "--size", "32", "--quiet", "--out", str(out)]
    first = tmp_path / f"net_{tiny.layers[0]}.png"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.kill()
    assert proc.wait() != 0 and first.exists(), proc.stderr.read().decode()[-2000:]
    assert not list(tmp_path.rglob("*.tmp"))
    done = {p: p.stat().st_mtime_ns for p in tmp_path.glob("net_*_channels/*.png")}
    assert 0 < len(done) < 2 * len(tiny.layers)

    finished = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished layers were not redone
    for layer in tiny.layers:
        assert Image.open(tmp_path / f"net_{layer}_channels" / f"{layer}_0.png").size == (32, 32)
        assert Image.open(tmp_path / f"net_{layer}.png").size[0] >= 64
        summary = json.loads((tmp_path / f"net_{layer}.json").read_text())
        assert summary["layer"] == layer and np.isfinite(summary["objective"]["0"])


MINIMAL_ARGS = {  # each command's required arguments (never read: the options are checked first)
    "models": [], "layers": [], "predict": ["photo.png"],
    "render": ["--layer", "conv1", "--out", "o"],
    "atlas": ["--out", "a.png"], "activations": ["photo.png", "--layer", "conv1", "--out", "o.png"],
    "top-patches": ["--layer", "conv1", "--channels", "0", "--out", "o"],
    "project": ["photo.png", "--layer", "conv1", "--channel", "0", "--out", "o.png"],
    "saliency": ["photo.png", "--out", "o.png"], "gradcam": ["photo.png", "--out", "o.png"],
    "gallery": ["--out", "o"], "unit": ["--layer", "conv1", "--channel", "0", "--out", "o.png"],
    "activation-atlas": ["--layer", "conv1", "--out", "a.png"],
    "accentuate": ["photo.png", "--layer", "conv1", "--out", "o"],
    "caricature": ["photo.png", "--layer", "conv1", "--out", "c.png"],
}


def _numeric_options():
    """(command, flag, dest) for every option of every command that takes a number."""
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert set(commands) == set(MINIMAL_ARGS)
    return [(name, action.option_strings[0], action.dest)
            for name, sub in commands.items() for action in sub._actions
            if action.type in (int, float)]


def _invalid_values(dest):
    lowest, highest = OPTION_RANGES[dest]
    if dest in REAL_OPTIONS:
        return (["0"] if dest == "lr" else []) + [str(lowest - 0.5), "nan", "inf",
                                                  str(highest * 2)]
    return [str(lowest - 1), str(lowest - 10**6)] + ([str(highest + 1)] if highest else [])


def test_every_numeric_option_has_a_range():
    assert {dest for _, _, dest in _numeric_options()} <= set(OPTION_RANGES)


@pytest.mark.parametrize("command,flag,dest", _numeric_options())
def test_out_of_range_values_are_one_line_errors(command, flag, dest, tmp_path, capsys,
                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    for value in _invalid_values(dest):
        argv = [command] + MINIMAL_ARGS[command] + [flag, value] + TINY
        assert main(argv) == 2, argv
        assert flag in _error_line(capsys)
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_rerun_with_other_settings_says_what_changed(tmp_path, capsys):
    argv = ["render", "--layer", "conv2", "--channels", "0-1", "--size", "32", "--quiet",
            "--out", str(tmp_path)] + TINY
    assert main(argv + ["--steps", "4"]) == 0
    capsys.readouterr()
    assert main(argv[:4] + ["0"] + argv[5:] + ["--steps", "5"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featviz: warning: ")
    assert "2 channels of conv2 rendered with other settings (steps 4 -> 5)" in err[0]
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["channels"]) == ["0"] and results["settings"]["steps"] == 5
    assert main(argv + ["--steps", "5"]) == 0  # channel 0 is there: only channel 1 renders
    assert "wrote 1 image (1 already there) and results.json" in capsys.readouterr().out


def test_lr_ramp_is_used_and_recorded(tmp_path):
    runs = {}
    for ramp in ("1,1", "1.6,0.5"):
        out = tmp_path / ramp
        assert main(["render", "--layer", "conv2", "--channels", "0", "--steps", "4", "--size",
                     "32", "--quiet", "--lr-ramp", ramp, "--out", str(out)] + TINY) == 0
        runs[ramp] = json.loads((out / "results.json").read_text())
        assert runs[ramp]["settings"]["lr_ramp"] == [float(r) for r in ramp.split(",")]
    assert (runs["1,1"]["channels"]["0"]["objective"]
            != runs["1.6,0.5"]["channels"]["0"]["objective"])


@pytest.mark.parametrize("value", ["1", "1,0", "1,-2", "fast,slow", "1,nan", "1,2,3", "1e38,1"])
def test_malformed_lr_ramp_is_a_one_line_error(value, tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["render", "--layer", "conv1", "--out", str(out), "--lr-ramp", value] + TINY
    assert main(argv) == 2
    assert f"--lr-ramp {value}" in _error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["render", "--layer", "nope", "--channels", "0"], "valid layers: conv1, conv2"),
    (["render", "--layer", "conv9", "--channels", "0"], "unknown layer 'conv9'"),
    (["render", "--layer", "conv2", "--channels", "0-500"], "channels 0-15"),
    (["render", "--layer", "conv2", "--channels", "5-2"], "bad channel range"),
    (["render", "--layer", "conv2", "--channels", "a,b"], "bad channel list"),
    (["render", "--layer", "conv2", "--channels", "-1"], "bad channel list"),
    (["render", "--layer", "blocks_8", "--channels", "0", "--size", "16",
      "--model", "efficientnet-lite0"], "too small"),
    (["render", "--layer", "conv3", "--channels", "0", "--steps", "0"], "--steps must be"),
    (["atlas", "--layer", "all", "--channels", "0-10"], "channels 0-7"),
] + [(["render", "--layer", "conv2", "--channels", "0", "--devices", devices], "--devices")
     for devices in ("0", "999", "foo")])
def test_render_bad_input(tmp_path, capsys, argv, expected):
    model = [] if "--model" in argv else TINY
    out = tmp_path / ("e1.png" if argv[0] == "atlas" else "e1")
    assert main(argv + model + ["--out", str(out), "--quiet"]) == 2
    assert expected in _error_line(capsys)
    assert not list(tmp_path.iterdir())  # nothing made, not even the output folder


def test_predict_bad_files(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert main(["predict", str(text)] + TINY) == 2
    assert "not a readable image" in _error_line(capsys)
    assert main(["predict", str(tmp_path / "missing.jpg")] + TINY) == 2
    assert "no such file" in _error_line(capsys)


def test_tampered_weights_file(tmp_path, capsys):
    data = bytearray(open(default_weights_path(), "rb").read())
    data[200:400] = b"\x00" * 200
    bad = tmp_path / "bad.pth"
    bad.write_bytes(bytes(data))
    assert main(["layers", "--weights", str(bad)]) == 2
    _error_line(capsys)
    assert main(["layers", "--weights", str(tmp_path / "none.pth")]) == 2
    assert "no weights file" in _error_line(capsys)


def test_other_copy_of_weights(tmp_path, capsys):
    copy = tmp_path / "copy.pth"
    copy.write_bytes(open(default_weights_path(), "rb").read())
    assert main(["layers", "--weights", str(copy)]) == 0


def test_auto_chunk_size_fits_free_accelerator_memory(lite0, monkeypatch, compilations):
    """The accelerator branch, exercised on the CPU: a device that reports 1 GiB free gets a
    chunk sized from the traced network (nothing is compiled to size it), whose compiled
    program then fits in that memory, and chunks are balanced."""
    import types

    from featviz import memory, objectives as obj
    from featviz.engine import channel_keys

    renderer = Renderer(lite0, size=64, steps=2)
    gpu = types.SimpleNamespace(platform="gpu", device_kind="simulated GPU")
    monkeypatch.setattr(Renderer, "devices", property(lambda self: [gpu]))
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 2 ** 30)
    chunk = memory.auto_chunk_size(renderer.settings, renderer.devices, "blocks_8", 4096)
    assert "run_segment" not in compilations  # no probe program
    objs = [obj.channel("blocks_8", 0)] * chunk
    need = memory.program_bytes(renderer.compiled(objs, channel_keys(0, [0] * chunk)))
    assert 0.2 * 2 ** 30 < need <= memory.MEMORY_SHARE * 2 ** 30
    assert memory.chunk_sizes(1280, 1000) == 640 and memory.chunk_sizes(1280, 1280) == 1280
    assert memory.chunk_sizes(10, 8, n_devices=4) == 8 and memory.chunk_sizes(9, 4, 4) == 4


def test_unit_sheet(tmp_path, capsys):
    out = tmp_path / "sheet.png"
    assert main(["unit", "--layer", "conv2", "--channel", "3", "--k", "4", "--steps", "4",
                 "--size", "32", "--out", str(out)] + TINY) == 0
    sheet = Image.open(out)
    assert sheet.size[0] > 3 * sheet.size[1] / 2  # four parts side by side
    other = tmp_path / "other.png"
    assert main(["unit", "--layer", "conv2", "--channel", "3", "--k", "4", "--steps", "4",
                 "--size", "32", "--param", "pixels", "--lr", "0.1", "--lr-ramp", "1,1",
                 "--out", str(other)] + TINY) == 0
    assert Image.open(other).size == sheet.size
    assert not np.array_equal(np.asarray(Image.open(other)), np.asarray(sheet))
    capsys.readouterr()  # the dataset search's progress bars
    assert main(["unit", "--layer", "conv2", "--channel", "16", "--out", str(out)] + TINY) == 2
    assert "channels 0-15" in _error_line(capsys)
    assert main(["unit", "--layer", "logits", "--channel", "0", "--out", str(out)] + TINY) == 2
    assert "no spatial map" in _error_line(capsys)


def test_unit_sheet_streams_a_folder_with_a_bad_file_and_a_subfolder(tmp_path, capsys):
    """The only photos lie in a subfolder (two formats): the sheet is written all the same,
    and the file that is not an image is warned of once."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "more" / name)
    (folder / "broken.jpg").write_text("not an image")
    out = tmp_path / "sheet.png"
    assert main(["unit", "--layer", "conv2", "--channel", "3", "--k", "2", "--steps", "2",
                 "--size", "32", "--images", str(folder), "--out", str(out)] + TINY) == 0
    sheet = Image.open(out)
    assert sheet.size[0] > 3 * sheet.size[1] / 2  # four parts side by side
    err = capsys.readouterr().err
    assert err.count("skipped:") == 1 and "broken.jpg" in err, err


def test_unit_sheet_parts_narrower_than_their_titles_do_not_overlap():
    from PIL import ImageDraw, ImageFont

    from featviz.unit_sheet import _titled_row
    red, blue = (np.zeros((8, 8, 3), np.uint8) for _ in range(2))
    red[..., 0], blue[..., 2] = 255, 255
    title = "a title much wider than its part"
    sheet = _titled_row([(title, red), ("second", blue)], pad=8)
    title_width = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(
        title, font=ImageFont.load_default())
    second_part_x = np.nonzero((sheet[..., 2] == 255) & (sheet[..., 0] == 0))[1].min()
    assert second_part_x >= 8 + title_width + 8


def test_unwritable_output_is_refused_before_rendering(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for argv in (["render", "--layer", "conv2", "--channels", "0", "--out", str(blocker / "sub")],
                 ["atlas", "--layer", "conv2", "--channels", "0", "--out", str(blocker / "a.png")]):
        assert main(argv + TINY + FAST) == 2
        assert f"{blocker} is a file, not a folder" in _error_line(capsys)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_output_path_errors_name_the_users_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    photo = _photo(tmp_path)
    (tmp_path / "dir.png").mkdir()
    cases = [(["gradcam", photo, "--out", "dir.png"], "--out dir.png is a folder"),
             (["activations", photo, "--layer", "conv1", "--out", "/proc/x.png"],
              "cannot write --out /proc/x.png: /proc is not writable"),
             (["atlas", "--out", "/proc/atlas.png"], "/proc is not writable"),
             (["top-patches", "--layer", "conv1", "--channels", "0", "--out", "/proc/tp"],
              "/proc is not writable"),
             (["saliency", photo, "--out", "s.png", "--save-array", "/proc/s.npy"],
              "cannot write --save-array /proc/s.npy: /proc is not writable")]
    for argv, expected in cases:
        assert main(argv + TINY) == 2, argv
        assert expected in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "photo.png"]


def test_write_refusals_name_the_file_asked_for(tmp_path):
    from featviz.image import save_png
    with pytest.raises(IsADirectoryError) as refused:
        save_png(np.zeros((2, 2, 3)), tmp_path)
    assert refused.value.filename == str(tmp_path) and not list(tmp_path.iterdir())


def test_help_and_option_mistakes_need_no_jax():
    code = ("import sys\nfrom featviz.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert main(['atlas', '--steps', '0', '--out', 'a.png']) == 2\n"
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "--steps must be from 1" in out.stderr


@pytest.mark.parametrize("command, shown", [
    ("render", ["gradient-ascent steps (default: 512)", "(default: 128)", "images (default: 0)"]),
    ("top-patches", ["(default: 9)", "(default: 16)"]),
    ("gallery", ["steps (default: 256)"]),
])
def test_help_shows_the_defaults(command, shown, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(s in text for s in shown) and "(default: None)" not in text


def test_maco_from_the_command_line(tmp_path):
    assert main(["render", "--layer", "conv2", "--channels", "0", "--steps", "4", "--size", "32",
                 "--param", "maco", "--quiet", "--out", str(tmp_path)] + TINY) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["param"] == "maco"


def test_unknown_model_is_one_line(tmp_path, capsys):
    assert main(["layers", "--model", "efficientnet-lite9"]) == 2
    assert "unknown model 'efficientnet-lite9'" in _error_line(capsys)


def _photo(folder) -> str:
    """A small random RGB photo saved as PNG in ``folder``; its path."""
    path = folder / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_project_needs_a_spatial_layer(tmp_path, capsys):
    out = tmp_path / "p.png"
    argv = ["project", _photo(tmp_path), "--layer", "logits", "--channel", "6", "--out", str(out)]
    assert main(argv + TINY) == 2
    assert "layer 'logits' has no spatial map" in _error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("extra, expected", [
    (["--distributed", "localhost:12345"], "needs --num-processes N and --process-id I"),
    (["--distributed", "foo"], "--distributed foo is not HOST:PORT"),
    (["--distributed", "h:99999", "--num-processes", "2", "--process-id", "0"], "not HOST:PORT"),
    (["--distributed", "h:1", "--num-processes", "2", "--process-id", "2"],
     "--process-id must be from 0 to 1 with --num-processes 2, not 2"),
    (["--distributed", "auto", "--num-processes", "2"], "--num-processes goes with --distributed"),
    (["--num-processes", "2"], "--num-processes goes with --distributed HOST:PORT"),
    (["--process-id", "0"], "--process-id goes with --distributed HOST:PORT"),
])
@pytest.mark.parametrize("command", [["render", "--layer", "conv3"],
                                     ["gallery", "--layers", "conv3"]])
def test_distributed_mistakes_are_one_line(tmp_path, capsys, command, extra, expected):
    out = tmp_path / "d"
    argv = command + ["--channels", "0", "--out", str(out)] + TINY + FAST
    assert main(argv + extra) == 2
    assert expected in _error_line(capsys)
    assert not out.exists()


def test_distributed_auto_outside_a_cluster_is_one_line(tmp_path):
    """A fresh process (JAX joins a run only before its first computation)."""
    out = tmp_path / "d"
    argv = ["render", "--layer", "conv3", "--channels", "0", "--out", str(out),
            "--distributed", "auto"] + TINY + FAST
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))}
    run = subprocess.run([sys.executable, "-m", "featviz"] + argv, capture_output=True,
                         text=True, env=env)
    assert run.returncode == 2
    assert run.stderr.startswith("featviz: error: --distributed auto: cannot join a run")
    assert len(run.stderr.splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("dtype, full, suffix", [(np.uint16, 2**16 - 1, ".png"),
                                                 (np.int32, 2**31 - 1, ".tif")])
def test_deep_integer_images_load_by_their_bit_depth(tmp_path, dtype, full, suffix):
    from featviz.image import load_image
    ramp = np.tile(np.linspace(0, full, 64), (8, 1)).astype(dtype)
    path = tmp_path / ("grey" + suffix)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode == ("I;16" if dtype == np.uint16 else "I")
    image = load_image(path)
    assert image.shape == (8, 64, 3) and abs(image.mean() - 0.5) < 0.01
    assert image[0, 0, 0] == 0 and image[0, -1, 0] == 1


def test_atlas_columns_stop_at_the_number_of_tiles():
    from featviz.image import make_grid
    tiles = np.zeros((4, 8, 8, 3))
    assert make_grid(tiles, columns=100).shape == make_grid(tiles, columns=4).shape


def test_a_broken_image_is_reported_once(tmp_path):
    from featviz.gallery import photo_source
    _photo(tmp_path)
    (tmp_path / "broken.jpg").write_text("not an image")
    with pytest.warns(UserWarning) as warned:
        photos = photo_source(tmp_path, 32)
        for _ in range(3):
            assert len(list(photos())) == 1
    assert [str(w.message).count("broken.jpg") for w in warned] == [1]


@pytest.mark.parametrize("argv, expected", [
    (["top-patches", "--images", "PHOTO", "--layer", "conv2", "--channels", "0", "--out", "o"],
     "is a file; give a folder of .jpg/.png images"),
    (["gallery", "--layers", "conv2,conv3", "--channels", "20-21", "--out", "o"],
     "layer conv2 has channels 0-15"),
    (["gallery", "--layers", "", "--out", "o"], "--layers '' names no layer"),
])
def test_image_folder_and_layer_mistakes(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    photo = _photo(tmp_path)
    assert main([photo if a == "PHOTO" else a for a in argv] + TINY) == 2
    assert expected in _error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_one_of_a_kind_is_singular(tmp_path, capsys):
    assert main(["render", "--layer", "conv2", "--channels", "0", "--steps", "1", "--size", "32",
                 "--quiet", "--out", str(tmp_path)] + TINY) == 0
    assert capsys.readouterr().out.startswith("wrote 1 image and results.json")
