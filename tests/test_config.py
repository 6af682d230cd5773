"""The render configuration: one value with one default per setting, every rendering command
taking every setting, and an atlas's resume record that is the configuration itself."""
import dataclasses
import json
import typing

import numpy as np
import pytest
from PIL import Image

from featviz import config as config_lib
from featviz.cli import build_parser, main
from featviz.config import RenderConfig
from featviz.errors import ConfigError, FeatvizError
from featviz.jobs import render_channels

RENDERING_COMMANDS = ("render", "atlas", "unit", "gallery")
TINY = ["--model", "tiny"]


def _other_value(field: dataclasses.Field, value):
    """A valid value of ``field`` other than ``value``, found from the field's type and the
    configuration's own tables (no list of field names)."""
    choices = config_lib._CHOICES.get(field.name)
    if choices:
        return choices[(choices.index(value) + 1) % len(choices)]
    kind = typing.get_type_hints(RenderConfig)[field.name]
    base = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
    if typing.get_origin(base) is tuple:
        return (1.0, 1.0)
    if value is None:
        return base(1)
    return value + (16 if field.name == "size" else 1) if base is int else value * 1.5


def test_every_setting_is_an_option_of_every_rendering_command():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for command in RENDERING_COMMANDS:
        dests = {a.dest for a in sub[command]._actions}
        missing = [f.name for f in dataclasses.fields(RenderConfig) if f.name not in dests]
        assert not missing, f"featviz {command} lacks {missing}"


def test_gallery_help_lists_the_render_options(capsys):
    with pytest.raises(SystemExit):
        main(["gallery", "--help"])
    text = capsys.readouterr().out
    for flag in ("--lr", "--lr-ramp", "--param", "--activation", "--precision", "--chunk",
                 "--steps", "--size", "--seed", "--redirect-steps"):
        assert flag + " " in text, flag


def test_gallery_render_options_take_effect(tmp_path):
    """A gallery rendered with options other than the defaults records them, and its images are
    what ``featviz render`` makes with the same options (and not the default images)."""
    options = ["--steps", "6", "--size", "32", "--lr", "0.08", "--lr-ramp", "1,1", "--param",
               "pixels", "--activation", "post", "--precision", "bfloat16", "--chunk", "1",
               "--seed", "2", "--redirect-steps", "2", "--quiet"]
    site = ["gallery", "--layers", "conv2", "--channels", "0-1", "--k", "2"] + TINY
    assert main(site + options + ["--out", str(tmp_path / "site")]) == 0
    assert main(site + options[:4] + ["--quiet", "--out", str(tmp_path / "plain")]) == 0
    assert main(["render", "--layer", "conv2", "--channels", "0-1"] + TINY + options
                + ["--out", str(tmp_path / "render")]) == 0
    record = json.loads((tmp_path / "site/conv2/renders/results.json").read_text())["settings"]
    assert record == json.loads((tmp_path / "render/results.json").read_text())["settings"]
    assert (record["lr"], record["lr_ramp"], record["param"], record["activation"],
            record["precision"], record["chunk"]) == (0.08, [1.0, 1.0], "pixels", "post",
                                                      "bfloat16", 1)
    png = lambda folder: np.asarray(Image.open(tmp_path / folder / "conv2_1.png"))  # noqa: E731
    np.testing.assert_array_equal(png("site/conv2/renders"), png("render"))
    assert not np.array_equal(png("site/conv2/renders"), png("plain/conv2/renders"))


def test_a_rerun_with_any_setting_changed_renders_again(tmp_path):
    from featviz import load_model

    model = load_model("tiny")
    base = RenderConfig(steps=3, size=32, chunk=2)
    out = tmp_path / "renders"
    assert render_channels(model, "conv2", [0, 1], out, base, progress=False).reused == 0
    assert render_channels(model, "conv2", [0, 1], out, base, progress=False).reused == 2
    for field in dataclasses.fields(RenderConfig):
        changed = base.replace(**{field.name: _other_value(field, getattr(base, field.name))})
        with pytest.warns(UserWarning, match="other settings"):
            again = render_channels(model, "conv2", [0, 1], out, changed, progress=False)
        assert again.reused == 0, field.name
        base = changed  # the folder now holds these


@pytest.mark.parametrize("settings, message", [
    ({"steps": 0}, "steps must be from 1 to 1000000, not 0"),
    ({"size": 8}, "size must be from 16 to 4096, not 8"),
    ({"seed": -1}, "seed must be from 0"),
    ({"lr": float("nan")}, "lr must be a finite number above 0"),
    ({"lr_ramp": (1, 1e9)}, "lr_ramp must be two numbers from 0.001 to 1000"),
    ({"lr_ramp": "fast"}, "lr_ramp must be two numbers FIRST,LAST"),
    ({"param": "wavelet"}, "param must be one of fourier, pixels, maco, not 'wavelet'"),
    ({"precision": "float16"}, "precision must be one of float32, bfloat16"),
    ({"chunk": 0}, "chunk must be at least 1, not 0"),
    ({"steps": 2.5}, "steps must be a whole number, not 2.5"),
])
def test_a_setting_out_of_range_is_one_line_error(settings, message):
    with pytest.raises(ConfigError, match=message) as refused:
        RenderConfig(**settings)
    assert isinstance(refused.value, FeatvizError) and "\n" not in str(refused.value)


def test_replace_refuses_a_name_that_is_not_a_setting():
    with pytest.raises(ConfigError, match="unknown render setting.*stepz"):
        RenderConfig().replace(stepz=3)


def test_library_messages_name_the_command_lines_flags(tmp_path, capsys):
    """A library message speaks of arguments (``size=``); the command line names its options."""
    code = main(["render", "--layer", "head", "--channels", "0", "--size", "16", "--quiet",
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "use --size 64 or more" in err[0] and "size=" not in err[0]


def test_negative_view_drives_the_unit_below_grey(tmp_path):
    from featviz import load_model

    model = load_model("tiny")
    config = RenderConfig(steps=24, size=32, view="negative")
    result = render_channels(model, "conv2", [1, 2], tmp_path, config, progress=False)
    images = np.stack([np.asarray(Image.open(result.image_path(c))) / 255.0 for c in (1, 2)])
    acts = np.asarray(model.activations(images.astype(np.float32), layers=["conv2"])["conv2"])
    grey = np.asarray(model.activations(np.full((1, 32, 32, 3), 0.5, np.float32),
                                        layers=["conv2"])["conv2"])
    on_negative = acts.mean((1, 2))[[0, 1], [1, 2]]
    assert (on_negative < grey.mean((1, 2))[0, [1, 2]]).all()
    # what is recorded is the objective maximized: minus the channel's mean activation (after
    # the rectifier: ``objective_post``, as the PNG is read here)
    recorded = [result.records[c]["objective_post"] for c in (1, 2)]
    np.testing.assert_allclose(recorded, -on_negative, rtol=0.05, atol=0.02)


def test_diverse_images_of_a_unit_are_written_and_differ(tmp_path, capsys):
    assert main(["render", "--layer", "conv2", "--channels", "0-2", "--steps", "8", "--size",
                 "32", "--diverse", "3", "--chunk", "6", "--quiet", "--out", str(tmp_path)]
                + TINY) == 0
    record = json.loads((tmp_path / "results.json").read_text())["channels"]
    for c in "012":
        names = [record[c]["png"]] + [d["png"] for d in record[c]["diverse"]]
        assert names == [f"conv2_{c}.png", f"conv2_{c}_1.png", f"conv2_{c}_2.png"]
        first, *others = (np.asarray(Image.open(tmp_path / n)).astype(int) for n in names)
        assert all(np.abs(first - o).max() > 10 for o in others)
    assert "wrote 9 images, 3 per channel" in capsys.readouterr().out


def test_diverse_images_on_several_devices_are_refused_in_one_line(tmp_path, capsys):
    assert main(["render", "--layer", "conv2", "--channels", "0", "--diverse", "2", "--devices",
                 "all", "--quiet", "--out", str(tmp_path)] + TINY) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "as --diverse K adds" in err[0] and "without --devices" in err[0]
