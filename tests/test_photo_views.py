"""Feature accentuation, caricature and feature inversion: the views that start from a photo."""
import json

import jax
import numpy as np
import pytest
from skimage import data

import featviz
from featviz import param
from featviz.cli import main, photo_views
from featviz.errors import ConfigError, ImageValueError
from featviz.photos import square_resize
from featviz.views import accentuation, caricature
from featviz.views.accentuation import accentuate, default_penalty_layer
from featviz.views.caricature import cosine_similarity
from featviz.views.photo_param import photo_coefficients, photo_parameterization


@pytest.fixture(scope="module")
def cat():
    return square_resize(data.chelsea().astype(np.float32) / 255.0, 64)


def test_the_photo_parameterization_starts_at_the_photo(cat):
    rng = np.random.default_rng(1)
    for photo in (cat, rng.uniform(size=(32, 32, 1)).astype(np.float32)):
        p = photo_parameterization(photo)
        start = np.asarray(p.to_image(p.init(jax.random.key(0))))
        assert start.shape == photo.shape
        assert np.abs(start - photo).max() < 1.01e-3  # the clip to (1e-3, 1 - 1e-3)
        # the very basis param.image optimizes: its image of these coefficients is the photo
        same = param.image(photo.shape[0], channels=photo.shape[-1]).to_image(
            photo_coefficients(photo))
        assert np.abs(np.asarray(same) - start).max() < 1e-6
    nudged = photo_parameterization(cat, perturbation=0.01)
    a, b = (np.asarray(nudged.to_image(nudged.init(featviz.channel_keys(s, [0])[0])))
            for s in (0, 1))
    assert 0 < np.abs(a - b).max() < 0.2 and np.abs(a - cat).max() < 0.2
    with pytest.raises(ImageValueError, match="square"):
        photo_coefficients(cat[:40])


def test_accentuation_raises_each_channel_and_stays_near_the_photo(lite0, cat, compilations):
    channels = [0, 1, 2, 3]
    kept = accentuate(lite0, cat, "blocks_8", channels, steps=16, size=64)
    assert compilations.count("run_segment") == 1  # every channel in one program
    assert kept.penalty_layer == "blocks_3" == default_penalty_layer(lite0, "blocks_8")
    assert (kept.after > kept.before + 1.0).all(), (kept.before, kept.after)
    free = accentuate(lite0, cat, "blocks_8", channels, steps=16, size=64, penalty=0.0)
    assert (free.after > kept.after).all()
    assert (kept.distance < 0.8 * free.distance).all(), (kept.distance, free.distance)
    assert (kept.pixel_rmse < free.pixel_rmse).all()
    # the distances are those of the images returned
    acts = lite0.activations(np.concatenate([cat[None], kept.images]), layers=["blocks_3"])
    np.testing.assert_allclose(
        accentuation.relative_distance(acts["blocks_3"][1:], acts["blocks_3"][0]),
        kept.distance, rtol=1e-4)
    assert np.array_equal(kept.photo, cat)


def test_a_batch_is_its_channels_rendered_alone_and_a_seed_its_images(tiny_model):
    photo = np.random.default_rng(0).uniform(size=(32, 32, 3)).astype(np.float32)
    settings = dict(steps=8, size=32, lr=0.05)
    batch = accentuate(tiny_model, photo, "relu2", [3, 5, 7], **settings)
    assert batch.penalty_layer == "relu1"
    alone = accentuate(tiny_model, photo, "relu2", [5], **settings)
    np.testing.assert_allclose(alone.images[0], batch.images[1], atol=2e-3)
    again = accentuate(tiny_model, photo, "relu2", [3, 5, 7], **settings)
    assert np.array_equal(again.images, batch.images)
    other = accentuate(tiny_model, photo, "relu2", [3, 5, 7], seed=1, **settings)
    assert np.abs(other.images - batch.images).max() > 1e-2


def test_caricatures_echo_the_photo_more_than_a_random_start(lite0, cat, compilations):
    layers = ["blocks_3", "blocks_8"]
    made = caricature.caricature(lite0, cat, layers, steps=24, size=64)
    assert compilations.count("run_segment") == 1  # two layers' objectives, one program
    assert made.images.shape == (1, 2, 64, 64, 3)
    noise = param.image(64)
    start = np.asarray(noise.to_image(noise.init(featviz.channel_keys(0, [0])[0])))
    photo_acts = lite0.activations(cat[None], layers=layers)
    start_acts = lite0.activations(start[None], layers=layers)
    for i, layer in enumerate(layers):
        at_start = cosine_similarity(start_acts[layer], photo_acts[layer][0])[0]
        assert made.similarity[0, i] > at_start + 0.2, (layer, made.similarity, at_start)


def test_inversion_and_batches_of_photos(tiny_model, cat):
    photos = [cat[:40, :56], data.astronaut()]  # of other sizes and types: cropped, resized
    layers = ["conv1", "relu1"]
    settings = dict(steps=32, size=32, lr=0.1)
    inverted = caricature.caricature(tiny_model, photos, layers, invert=True, **settings)
    assert inverted.images.shape == (2, 2, 32, 32, 3) and inverted.photos.shape[0] == 2
    again = caricature.caricature(tiny_model, photos, layers, invert=True, **settings)
    assert np.array_equal(again.images, inverted.images)
    # each image is nearer its own photo than the other photo, at its layer
    for i, layer in enumerate(layers):
        acts = tiny_model.activations(inverted.images[:, i], layers=[layer])[layer]
        targets = tiny_model.activations(inverted.photos, layers=[layer])[layer]
        for p in (0, 1):
            own, other = (accentuation.relative_distance(acts[p:p + 1], targets[q])[0]
                          for q in (p, 1 - p))
            assert own < 0.85 * other, (layer, p, own, other)


def test_settings_the_views_cannot_use_are_refused(tiny_model):
    photo = np.full((32, 32, 3), 0.5, np.float32)
    with pytest.raises(ConfigError, match="Fourier"):
        accentuate(tiny_model, photo, "relu2", [0], size=32, param="maco")
    with pytest.raises(ConfigError, match="diverse"):
        caricature.caricature(tiny_model, photo, "relu2", size=32, diverse=2)
    with pytest.raises(ConfigError, match="keep the size"):
        caricature.caricature(tiny_model, photo, "relu2", size=32,
                              transforms=featviz.transforms.standard_transforms())
    with pytest.raises(ConfigError, match="power"):
        caricature.caricature(tiny_model, photo, "relu2", size=32, power=-1.0)


def test_the_command_line_defaults_are_the_library_s():
    assert photo_views.ACCENTUATION_STEPS == accentuation.DEFAULT_CONFIG.steps
    assert photo_views.ACCENTUATION_LR == accentuation.DEFAULT_CONFIG.lr
    assert photo_views.DEFAULT_PENALTY == accentuation.DEFAULT_PENALTY
    assert photo_views.CARICATURE_STEPS == caricature.DEFAULT_CONFIG.steps
    assert photo_views.DEFAULT_POWER == caricature.DEFAULT_POWER


def test_the_commands_write_their_images_and_numbers(tmp_path):
    photo = tmp_path / "photo.png"
    featviz.image.save_png(np.random.default_rng(3).uniform(size=(40, 50, 3)), photo)
    quick = ["--model", "tiny", "--size", "32", "--steps", "4"]
    assert main(["accentuate", str(photo), "--layer", "conv3", "--channels", "0-2",
                 *quick, "--out", str(tmp_path / "acc")]) == 0
    record = json.loads((tmp_path / "acc" / "results.json").read_text())
    assert sorted(record["channels"]) == ["0", "1", "2"]
    assert {"before", "after", "distance", "pixel_rmse"} <= set(record["channels"]["1"])
    assert (tmp_path / "acc" / "photo.png").is_file()
    assert all((tmp_path / "acc" / f"conv3_{c}.png").is_file() for c in range(3))
    out = tmp_path / "c.png"
    assert main(["caricature", str(photo), "--layer", "conv2", "--layer", "conv3", *quick,
                 "--out", str(out)]) == 0
    assert set(json.loads(out.with_suffix(".json").read_text())["cosine_similarity"]) == \
        {"conv2", "conv3"}
    assert featviz.image.load_image(out).shape[1] > 3 * 32  # the photo and two layers


def test_the_commands_refuse_bad_input_in_one_line(tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    photo = tmp_path / "photo.png"
    featviz.image.save_png(np.zeros((32, 32, 3)), photo)
    cases = [
        (["accentuate", str(broken), "--layer", "conv3", "--out", str(tmp_path / "a")],
         "not a readable image"),
        (["caricature", str(tmp_path / "missing.png"), "--layer", "conv3", "--out",
          str(tmp_path / "c.png")], "no such file"),
        (["caricature", str(photo), "--layer", "nope", "--out", str(tmp_path / "c.png")],
         "unknown layer 'nope'"),
        (["accentuate", str(photo), "--layer", "conv3", "--penalty-layer", "nope", "--out",
          str(tmp_path / "a")], "unknown layer 'nope'"),
        (["accentuate", str(photo), "--layer", "conv3", "--channels", "99", "--out",
          str(tmp_path / "a")], "channel 99 is out of range"),
        (["accentuate", str(photo), "--layer", "conv3", "--penalty", "-1", "--out",
          str(tmp_path / "a")], "--penalty must be"),
        (["caricature", str(photo), "--layer", "conv3", "--out", str(tmp_path / "c.jpg")],
         "must name a .png"),
    ]
    for argv, message in cases:
        assert main([*argv, "--model", "tiny", "--size", "32"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
