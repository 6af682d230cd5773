"""The classic views: rectifier rules, attribution localization, top-k patches, and their CLI."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from skimage import data

import featviz
from featviz import attribution as attr, rectifier_rules
from featviz.activations import activation_grid, layer_fn, layer_maps
from featviz.cli import main
from featviz.image import load_image
from featviz.photos import iter_images
from featviz.top_patches import ReceptiveField, receptive_field, top_patches

W1 = np.array([[1.0, -2.0], [3.0, 1.0], [-1.0, -1.0], [2.0, 2.0]], np.float32)
W2 = np.array([[1.0, -1.0, 2.0, 1.0], [-2.0, 1.0, 1.0, -1.0]], np.float32)
X = np.array([2.0, 1.0], np.float32)  # pre-activations W1 @ X = [0, 7, -3, 6]: all the cases


def _resized(photo, size):
    return np.asarray(Image.fromarray(photo).resize((size, size), Image.BILINEAR), np.float32) / 255


@pytest.mark.parametrize("act", ["relu", "relu6"])
@pytest.mark.parametrize("rule", [None, "guided", "deconvnet", "linear"])
def test_rectifier_rules_match_hand_computation(act, rule):
    def f(x):
        return jnp.array([1.0, 0.5]) @ (W2 @ getattr(jax.nn, act)(W1 @ x))
    z = W1 @ X
    g = W2.T @ np.array([1.0, 0.5])  # gradient arriving at the rectifier: [0, -0.5, 2.5, 0.5]
    hi = np.inf if act == "relu" else 6.0
    inside = (z > 0) & (z < hi)
    keep = {None: inside, "guided": inside & (g > 0), "deconvnet": g > 0, "linear": True}[rule]
    expected = W1.T @ np.where(keep, g, 0)
    got = jax.jit(jax.grad(lambda x: rectifier_rules.evaluate(f, x, rule=rule)))(X)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_interpreter_without_rule_is_plain_gradient(lite0):
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    def f(p, im):
        return lite0.apply(p, lite0.preprocess(im))["blocks_8"][..., 3].mean()
    plain = jax.jit(jax.grad(f, 1))(lite0.params, x)
    ours = jax.jit(jax.grad(lambda p, im: rectifier_rules.evaluate(f, p, im), 1))(lite0.params, x)
    np.testing.assert_allclose(ours, plain, rtol=1e-5, atol=1e-7)


def test_projections_differ_and_stay_finite(lite0):
    image = _resized(data.chelsea(), 64)
    deconv = attr.project(lite0, image, "blocks_3", 2, method="deconvnet")
    guided = attr.project(lite0, image, "blocks_3", 2, method="guided")
    assert deconv.shape == guided.shape == (64, 64, 3)
    assert np.isfinite(deconv).all() and np.abs(guided).max() > 0
    assert not np.allclose(deconv, guided)


def test_deconvnet_projection_of_a_unit_does_not_depend_on_the_image(lite0):
    """Without max-pooling switches (EfficientNet has none) the deconvnet rule discards every
    forward mask, so one unit projects to the same picture from any image; guided backprop
    keeps the masks and shows each image's own structure."""
    photos = np.stack([_resized(data.chelsea(), 64), _resized(data.coffee(), 64)])
    weights = attr.unit_weights((8, 8, 40), [2], [4], [4])  # blocks_3 at 64 px
    weights = np.repeat(weights, 2, axis=0)
    deconv, guided = (np.asarray(attr.projection_fn(lite0, "blocks_3", rule)(
        photos, lite0.params, weights)) for rule in ("deconvnet", "guided"))
    np.testing.assert_allclose(deconv[0], deconv[1], rtol=1e-4, atol=1e-6)
    assert np.abs(deconv[0]).max() > 0 and not np.allclose(guided[0], guided[1], atol=1e-6)


@pytest.fixture(scope="module")
def cat_in_corner(lite0):
    """A 224 px grey image with the cat photo in its bottom-right quadrant, and the photo's
    class."""
    photo = _resized(data.chelsea(), 112)
    image = np.full((224, 224, 3), 0.5, np.float32)
    image[112:, 112:] = photo
    return image, int(attr.predict(lite0, _resized(data.chelsea(), 224)[None])[0])


def _quadrant_share(heat):
    heat = np.asarray(heat, np.float64)
    return heat[112:, 112:].sum() / heat.sum()


def test_gradcam_and_saliency_find_the_photo(lite0, cat_in_corner):
    image, k = cat_in_corner
    heat = attr.gradcam(lite0, image[None], "head", class_idx=k)[0]
    assert heat.shape == (224, 224) and _quadrant_share(heat) > 0.5
    assert _quadrant_share(attr.saliency(lite0, image[None], k)[0]) > 0.5


def test_cam_is_gradcam_for_pooled_dense_head(lite0):
    """After global average pooling and one Dense layer, Grad-CAM weights are the class's
    Dense weights / (h * w): both maps agree up to that scale."""
    images = np.stack([_resized(data.coffee(), 64), _resized(data.astronaut(), 64)])
    g = attr.gradcam(lite0, images, class_idx=[967, 834])
    c = attr.cam(lite0, images, class_idx=[967, 834])
    np.testing.assert_allclose(g * 4, c, rtol=1e-3, atol=1e-4 * c.max())  # head is 2 x 2


def test_cam_finds_the_dense_classifier_or_says_there_is_none(lite0, tiny_model):
    images = np.stack([_resized(data.coffee(), 64)])
    found = attr.cam(lite0, images, class_idx=967)
    given = attr.cam(lite0, images, class_idx=967,
                     fc_kernel=lite0.params["params"]["fc"]["kernel"])
    np.testing.assert_allclose(found, given, rtol=1e-4, atol=1e-6 * given.max())
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(  # the test CNN: mean over positions, then Dense "fc"
        attr.cam(tiny_model, x, class_idx=[1, 2]),
        attr.cam(tiny_model, x, class_idx=[1, 2],
                 fc_kernel=tiny_model.params["params"]["fc"]["kernel"]), rtol=1e-4, atol=1e-6)

    class FlattenHead(nn.Module):  # Dense over the flattened map: not a pooled classifier
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3), strides=4, name="conv")(x))
            self.sow("intermediates", "relu", x)
            return nn.Dense(3, name="fc")(x.reshape(x.shape[0], -1))
    net = FlattenHead()
    flat = featviz.from_linen(net, net.init(jax.random.key(0), x), ["relu", "fc"],
                              image_size=32)
    with pytest.raises(attr.ClassifierError, match="no global-average-pool and Dense"):
        attr.cam(flat, x, class_idx=0)


def test_saliency_variants_shapes_and_class_check(lite0):
    images = np.stack([_resized(data.coffee(), 64)])
    for heat in (attr.saliency(lite0, images), attr.grad_x_input(lite0, images),
                 attr.smoothgrad(lite0, images, jax.random.key(0), n=2)):
        assert heat.shape == (1, 64, 64) and (heat >= 0).all() and heat.max() > 0
    with pytest.raises(attr.ClassIndexError, match="0-999"):
        attr.saliency(lite0, images, class_idx=1000)
    assert attr.overlay(images[0], np.ones((2, 2))).shape == (64, 64, 3)


def test_layer_maps_and_grid(lite0):
    image = _resized(data.rocket(), 64)
    maps = layer_maps(lite0, image, "blocks_3", [1, 4])
    full = np.asarray(lite0.activations(image[None])["blocks_3"])[0]
    np.testing.assert_allclose(maps, np.moveaxis(full[..., [1, 4]], -1, 0), rtol=1e-4, atol=1e-4)
    for shared in (True, False):
        grid = activation_grid(maps, [1, 4], shared_scale=shared)
        assert grid.dtype == np.uint8 and grid.shape[1] > 2 * 96


def test_receptive_field_matches_architecture(lite0):
    # stem: 3x3 stride 2, TF-SAME pads 0 on top; blocks_0: + 3x3 s1; blocks_1: + 3x3 s2
    assert receptive_field(lite0, "stem", 64) == ReceptiveField(3, 2, 0)
    assert receptive_field(lite0, "blocks_1", 64) == ReceptiveField(11, 4, -2)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "coins", "clock"):
        image = getattr(data, name)()
        Image.fromarray(image).convert("RGB").save(folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


def test_top_patches_are_the_true_top_units(lite0, photo_folder):
    layer, channels, size = "blocks_3", [0, 7, 30], 64
    with pytest.warns(UserWarning, match="broken.jpg"):
        result = top_patches(lite0, iter_images(photo_folder, size), layer, channels, k=4,
                             size=size, batch=4)
    assert result.n_images == 6
    fn = layer_fn(lite0, layer)
    acts = {p: np.asarray(fn(lite0.params, load_image(p, size)[None]))[0]
            for p in sorted(map(str, photo_folder.glob("*.png")))}
    for c in channels:
        examples = result.examples[c]
        values = [e.value for e in examples]
        assert len(examples) == 4 and values == sorted(values, reverse=True)
        for e in examples:
            np.testing.assert_allclose(e.value, acts[e.image][e.y, e.x, c], rtol=1e-4)
            assert e.patch.shape == (result.field.size, result.field.size, 3)
        brute = max(a[..., c].max() for a in acts.values())
        np.testing.assert_allclose(values[0], brute, rtol=1e-4)


def test_top_patches_with_k_beyond_the_units_gives_every_unit():
    """One 16 px photo has 8 x 8 units at conv2: asking for 70 gives those 64, best first."""
    photo = ("one", np.asarray(data.astronaut()[:40, :50], np.float32) / 255)
    result = top_patches(featviz.load_model("tiny"), [photo], "conv2", [3], k=70, size=16)
    values = [e.value for e in result.examples[3]]
    assert len(values) == 64 and values == sorted(values, reverse=True)


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featviz: error:"), err
    return err[0]


def test_cli_commands_write_outputs(tmp_path, photo_folder, capsys):
    photo = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(photo)
    small = [str(photo), "--size", "64"]
    runs = {"act.png": ["activations", *small, "--layer", "blocks_3", "--channels", "0-3",
                        "--per-channel-scale"],
            "proj.png": ["project", *small, "--layer", "blocks_3", "--channel", "2",
                         "--method", "guided"],
            "sal.png": ["saliency", *small, "--method", "gradxinput"],
            "cam.png": ["gradcam", *small, "--class", "281"]}
    for out, argv in runs.items():
        array = tmp_path / (out + ".npy")
        assert main(argv + ["--out", str(tmp_path / out), "--save-array", str(array)]) == 0
        assert Image.open(tmp_path / out).size[0] >= 64 and np.load(array).size > 0
    assert main(["top-patches", "--images", str(photo_folder), "--layer", "blocks_1",
                 "--channels", "0,5", "--k", "2", "--size", "64",
                 "--out", str(tmp_path / "tp")]) == 0
    assert sorted(p.name for p in (tmp_path / "tp").iterdir()) == [
        "blocks_1_0.png", "blocks_1_5.png", "results.json"]


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "empty").mkdir()
    photo = tmp_path / "cat.png"
    Image.fromarray(data.chelsea()).save(photo)
    out = ["--out", str(tmp_path / "x.png")]
    cases = [(["saliency", str(tmp_path / "missing.jpg")], "no such file"),
             (["gradcam", str(tmp_path / "notes.png")], "not a readable image"),
             (["activations", str(photo), "--layer", "block_99"], "unknown layer"),
             (["gradcam", str(photo), "--size", "64", "--class", "5000"], "class 5000"),
             (["top-patches", "--images", str(tmp_path / "empty"), "--layer", "stem",
               "--channels", "0"], "no .jpg"),
             (["project", str(photo), "--layer", "stem", "--channel", "99"], "channel 99"),
             (["gradcam", str(photo), "--method", "cam", "--layer", "blocks_8"],
              "CAM reads the layer that feeds the classifier (head)"),
             (["gradcam", str(photo), "--layer", "logits"], "no spatial map"),
             (["activations", str(photo), "--layer", "logits"], "no spatial map"),
             (["top-patches", "--layer", "logits", "--channels", "0"], "no spatial map"),
             (["saliency", str(photo), "--method", "smoothgrad", "--samples", "0"], "--samples"),
             (["activations", str(photo), "--layer", "stem", "--size", "100000"], "--size")]
    for argv, message in cases:
        assert main(argv + out) == 2, argv
        assert message in _error_line(capsys)


def test_views_keep_no_model_alive():
    """Compiled views are kept on the model itself: a model nobody holds is freed."""
    import gc
    import weakref

    import featviz
    model = featviz.load_model("tiny")
    image = np.random.default_rng(0).uniform(size=(32, 32, 3)).astype(np.float32)
    layer_maps(model, image, "conv2")
    attr.saliency(model, image[None])
    attr.gradcam(model, image[None])
    attr.project(model, image, "conv2", 0)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None


def test_views_take_photos_as_people_hold_them():
    """uint8 arrays, PIL images, one image or a batch, grey: the same answer as floats in
    [0, 1]; values beyond [0, 1] and batches where one image is meant are refused."""
    from featviz.image import ImageValueError
    tiny = featviz.load_model("tiny")
    photo = (data.chelsea()[:64, :64]).astype(np.uint8)
    floats = photo.astype(np.float32) / 255
    expected = attr.gradcam(tiny, floats[None])
    for same in (photo, Image.fromarray(photo), floats, photo[None]):
        np.testing.assert_allclose(attr.gradcam(tiny, same), expected, rtol=1e-5, atol=1e-6)
    grey = floats.mean(-1)
    np.testing.assert_allclose(attr.saliency(tiny, grey),
                               attr.saliency(tiny, np.repeat(grey[..., None], 3, -1)), rtol=1e-5)
    assert layer_maps(tiny, floats[None], "conv2").shape == layer_maps(tiny, floats, "conv2").shape
    with pytest.raises(ImageValueError, match="divide 0-255 values by 255"):
        attr.predict(tiny, floats * 255)
    with pytest.raises(ImageValueError, match="takes one image, not a batch of 2"):
        layer_maps(tiny, np.stack([floats, floats]), "conv2")


def test_a_model_without_spatial_layers_says_so():
    import keras
    dense = featviz.from_keras(keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                                                 keras.layers.Dense(4, name="d1")]))
    with pytest.raises(featviz.models.base.NoSpatialMapError, match="exposes no layer with one"):
        layer_maps(dense, np.zeros((8, 8, 3), np.float32), "d1")
    with pytest.raises(featviz.models.base.NoSpatialMapError, match="no layer with a spatial map"):
        attr.gradcam(dense, np.zeros((8, 8, 3), np.float32))
