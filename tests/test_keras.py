"""Keras 3 models (JAX backend) through ``from_keras`` and ``keras_application``: seeded random
weights (nothing is downloaded), compared with Keras's own outputs, rendered, and every
classic view."""
import itertools
import os
import sys

import jax
import numpy as np
import pytest

import featviz
from featviz import attribution as attr, objectives as obj
from featviz.activations import layer_maps
from featviz.models import keras as fk
from featviz.photos import sample_photos
from featviz.top_patches import top_patches

keras = fk._import_keras()
# Keras's own numpy conversion in model.predict, with numpy 2
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

VGG_LAYERS = ["block1_conv2", "block2_pool", "block3_conv3", "block5_pool",
              "global_average_pooling2d"]
RESNET_LAYERS = ["conv1_relu", "conv2_block1_out", "conv3_block2_add", "conv5_block3_out",
                 "predictions"]


def _images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def vgg():
    """Keras VGG16 without its classifier, pooled (a 1-D output for the class-score views)."""
    with fk.numpy_initializers(np.random.default_rng(0)):  # seeded, without compiling
        net = keras.applications.VGG16(weights=None, include_top=False, pooling="avg")
    return net, featviz.from_keras(net)


@pytest.fixture(scope="module")
def resnet():
    """Keras ResNet50 with its softmax classifier at 64 px, its BatchNorm moving statistics set
    to values that are not the identity, as after training."""
    rng = np.random.default_rng(0)
    with fk.numpy_initializers(rng):
        net = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    for v in net.non_trainable_variables:
        low = 0.5 if v.path.endswith("moving_variance") else -0.2
        v.assign(rng.uniform(low, low + 1.0, v.shape).astype(np.float32))
    return net, featviz.from_keras(net)


def _keras_outputs(net, names, images, preprocess_input):
    sub = keras.Model(net.inputs, [net.get_layer(n).output for n in names])
    return dict(zip(names, sub.predict(preprocess_input(images * 255.0), verbose=0)))


def _assert_close(ours, theirs):
    for name, ref in theirs.items():
        scale = np.abs(ref).max()
        np.testing.assert_allclose(np.asarray(ours[name]), ref, rtol=0, atol=1e-4 * scale,
                                   err_msg=name)


def test_vgg16_layers_and_keras_activations(vgg):
    net, model = vgg
    assert model.layers[:3] == ("block1_conv1", "block1_conv2", "block1_pool")
    assert model.layers[-1] == "global_average_pooling2d" and len(model.layers) == 19
    assert model.preprocess is fk.PREPROCESS["caffe"] and model.class_names is None
    assert all(isinstance(a, jax.Array) for a in jax.tree.leaves(model.params))
    images = _images(2, 32)
    ours = model.activations(images, layers=VGG_LAYERS)
    _assert_close(ours, _keras_outputs(net, VGG_LAYERS, images,
                                       keras.applications.vgg16.preprocess_input))
    # a pure function of (params, images): jit of vmap agrees with the batch
    one = jax.jit(jax.vmap(lambda im: model.apply(model.params, model.preprocess(im[None]),
                                                  ["block1_conv2"])["block1_conv2"][0]))
    np.testing.assert_allclose(one(images), ours["block1_conv2"], rtol=1e-5, atol=1e-5)


def test_resnet50_uses_batchnorm_statistics_and_exposes_logits(resnet):
    net, model = resnet
    assert "conv1_pad" not in model.layers and "conv1_bn" in model.layers
    assert model.layers[-2:] == ("predictions", "logits") and attr.score_layer(model) == "logits"
    assert model.image_size == 64 and model.class_names[652] == "military uniform"
    images = _images(2, 64)
    ours = model.activations(images, layers=RESNET_LAYERS + ["logits"])
    theirs = _keras_outputs(net, RESNET_LAYERS, images,
                            keras.applications.resnet50.preprocess_input)
    _assert_close(ours, theirs)
    np.testing.assert_allclose(jax.nn.softmax(ours["logits"]), theirs["predictions"], atol=1e-5)


LAYERS = [("vgg", "block1_conv2"), ("resnet", "conv2_block1_out")]


@pytest.mark.parametrize("which,layer", LAYERS)
def test_render_raises_the_channel(request, which, layer):
    _, model = request.getfixturevalue(which)
    start = model.activations(np.full((1, 32, 32, 3), 0.5, np.float32), layers=[layer])[layer]
    live = int(np.argmax(np.asarray(start).mean((0, 1, 2))))
    out = featviz.Renderer(model, size=32, steps=24, transforms=[])(
        [obj.channel(layer, live)], featviz.channel_keys(0, [live]))
    assert np.isfinite(out.images).all()
    assert out.trace[0, -4:].mean() > 1.2 * out.trace[0, :4].mean()


@pytest.mark.parametrize("which,layer", LAYERS)
def test_classic_views(request, which, layer):
    _, model = request.getfixturevalue(which)
    size = 32
    image = _images(1, size, seed=1)
    maps = layer_maps(model, image[0], layer, [0, 1])
    assert maps.shape[0] == 2 and maps.ndim == 3
    live = int(np.argmax(maps.reshape(2, -1).max(1)))
    deconv = attr.project(model, image[0], layer, live, method="deconvnet")
    guided = attr.project(model, image[0], layer, live, method="guided")
    assert deconv.shape == guided.shape == (size, size, 3)
    assert np.abs(guided).max() > 0 and not np.allclose(deconv, guided)
    found = top_patches(model, itertools.islice(sample_photos(), 3), layer, [0, 1], k=2,
                        size=size, batch=3)
    assert [len(v) for v in found.examples.values()] == [2, 2]
    assert found.examples[0][0].value >= found.examples[0][1].value


@pytest.mark.parametrize("which,size", [("vgg", 32), ("resnet", 64)])
def test_saliency_and_gradcam(request, which, size):
    _, model = request.getfixturevalue(which)
    images = _images(1, size, seed=2)
    heat = attr.gradcam(model, images)
    sal = attr.saliency(model, images, class_idx=3)
    assert heat.shape == sal.shape == (1, size, size)
    assert np.isfinite(heat).all() and sal.max() > 0


def test_preprocessing_modes_match_keras():
    x = _images(2, 8)
    for mode, module in [("caffe", "vgg16"), ("tf", "mobilenet_v2"), ("torch", "densenet"),
                         ("raw", "efficientnet")]:
        theirs = getattr(keras.applications, module).preprocess_input(x * 255.0)
        np.testing.assert_allclose(fk.PREPROCESS[mode](x), theirs, rtol=1e-5, atol=1e-4,
                                   err_msg=mode)
    names = {"vgg16": "caffe", "resnet101": "caffe", "resnet50v2": "tf", "inception_v3": "tf",
             "mobilenetv2_1.00_224": "tf", "efficientnetb0": "raw", "convnext_tiny": "raw",
             "densenet121": "torch", "MobileNetV3Small": "raw", "my_net": None}
    assert {n: fk.application_mode(n) for n in names} == names


def test_keras_application_from_a_downloaded_style_weights_file(vgg, tmp_path):
    """A Keras 2 style .h5 without the classifier (as Keras downloads VGG16's notop file):
    the network is built without its top and gives the same activations."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    net, model = vgg
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, net)
    loaded = fk.keras_application("VGG16", weights=str(path), input_size=32)
    assert loaded.name == "keras:VGG16" and loaded.image_size == 32
    assert loaded.layers == model.layers[:-1] and loaded.class_names is None
    images = _images(1, 32, seed=3)
    np.testing.assert_allclose(loaded.activations(images, layers=["block4_conv1"])["block4_conv1"],
                               model.activations(images, layers=["block4_conv1"])["block4_conv1"],
                               rtol=1e-5, atol=1e-5)


def test_keras_application_errors_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(fk.KerasWeightsError) as err:
        fk.keras_application("ResNet50")
    message = str(err.value)
    assert "\n" not in message and fk.APPLICATIONS["ResNet50"].top_url in message
    assert ("keras.applications.ResNet50(weights='imagenet')" in message
            and "weights=PATH" in message)
    with pytest.raises(fk.KerasWeightsError, match="no weights file"):
        fk.keras_application("VGG16", weights=str(tmp_path / "missing.h5"))
    with pytest.raises(featviz.models.UnknownModelError, match="supported: VGG16, VGG19, ResNet50"):
        fk.keras_application("VGG17")


def test_weights_urls_are_those_keras_downloads(monkeypatch):
    """The URLs in the error message are the ones Keras itself asks for (nothing is fetched:
    the download function is replaced before it runs)."""
    from keras.src.utils import file_utils

    class Asked(Exception):
        pass

    def refuse(fname=None, origin=None, **kwargs):
        raise Asked(origin)

    monkeypatch.setattr(file_utils, "get_file", refuse)
    with pytest.raises(Asked) as asked, fk.numpy_initializers():
        keras.applications.VGG19(weights="imagenet", include_top=False)
    assert str(asked.value) == fk.APPLICATIONS["VGG19"].notop_url


def test_missing_keras_and_wrong_backend_are_one_line_errors(monkeypatch):
    import importlib.util

    monkeypatch.delitem(sys.modules, "keras")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(fk.KerasUnavailableError, match=r'pip install "featviz\[keras\]"'):
        fk._import_keras()
    monkeypatch.undo()
    monkeypatch.setattr(keras.backend, "backend", lambda: "torch")
    with pytest.raises(fk.KerasUnavailableError, match="set KERAS_BACKEND=jax before"):
        fk._import_keras()
    assert os.environ["KERAS_BACKEND"] == "jax"


def test_unknown_layer_and_subclassed_model_errors(vgg):
    net, _ = vgg
    with pytest.raises(featviz.models.UnknownLayerError, match="valid layers: input_layer"):
        featviz.from_keras(net, layers=["block9_conv1"])
    with pytest.raises(fk.KerasModelError, match="functional"):
        featviz.from_keras(keras.layers.Conv2D(3, 3))


def test_command_line_renders_a_keras_application(vgg, tmp_path, capsys, monkeypatch):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from featviz.cli import main
    path = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, vgg[0])
    out = tmp_path / "renders"
    assert main(["render", "--model", "keras:VGG16", "--weights", str(path), "--layer",
                 "block2_conv1", "--channels", "0-1", "--steps", "4", "--size", "32", "--quiet",
                 "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["block2_conv1_0.png", "block2_conv1_1.png"]


@pytest.mark.parametrize("which, layer, pre", [
    ("vgg", "block3_conv2", "block3_conv2_pre"),          # relu built into the convolution
    ("resnet", "conv2_block1_1_relu", "conv2_block1_1_bn"),  # a ReLU layer after BatchNorm
])
def test_rectified_layers_know_their_pre_activation(request, which, layer, pre):
    model = request.getfixturevalue(which)[1]
    assert model.pre_activation(layer) == pre
    acts = model.activations(_images(2, 32, seed=5), layers=[layer, pre])
    np.testing.assert_allclose(np.maximum(np.asarray(acts[pre]), 0), acts[layer], atol=1e-5)
    assert (np.asarray(acts[pre]) < 0).any()  # what the rectifier hid from the gradient


def _flatten_head():
    """A small network with a fixed input size and a Flatten -> Dense softmax head."""
    with fk.numpy_initializers(np.random.default_rng(0)):
        return keras.Sequential([keras.Input((32, 32, 3)),
                                 keras.layers.Conv2D(8, 3, activation="relu"),
                                 keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                                 keras.layers.Dense(10, activation="softmax")], name="fixed")


def test_a_fixed_input_size_renders_and_explains_past_the_flatten():
    model = featviz.from_keras(_flatten_head())
    assert model.image_size == 32 and model.layer_shape("logits", 48) == (10,)
    out = featviz.render(model, [obj.class_logit(1)], size=32, steps=8)
    assert np.isfinite(out.images).all() and out.trace[0, -1] > out.trace[0, 0]
    images = _images(1, 48)
    heat, sal = attr.gradcam(model, images), attr.saliency(model, images, class_idx=1)
    assert heat.shape == sal.shape == (1, 48, 48) and sal.max() > 0
    shrunk = jax.image.resize(images, (1, 32, 32, 3), "bilinear")
    np.testing.assert_allclose(model.activations(images)["logits"],
                               model.activations(shrunk)["logits"], rtol=1e-5, atol=1e-6)
    with pytest.raises(fk.KerasModelError, match="takes 32 x 32 images"):
        featviz.from_keras(_flatten_head(), image_size=64)


def test_a_grey_network_is_adapted_as_one():
    with fk.numpy_initializers(np.random.default_rng(0)):
        net = keras.Sequential([keras.Input((None, None, 1)),
                                keras.layers.Conv2D(4, 3, activation="relu", name="conv")])
    model = featviz.from_keras(net, image_size=32)
    assert model.input_channels == 1
    rgb = _images(1, 32)
    grey = np.asarray(model.as_input(rgb))
    np.testing.assert_allclose(model.activations(rgb)["conv"],
                               net.predict(grey, verbose=0), rtol=1e-5, atol=1e-5)
    assert featviz.render(model, [obj.channel("conv", 0)], size=32, steps=2).images.shape[-1] == 1
    with pytest.raises(ValueError, match="grey images: use 'tf'"):
        featviz.from_keras(net, preprocess="caffe")


def test_what_is_not_a_keras_model_is_refused_clearly():
    with pytest.raises(fk.KerasModelError, match="not a str: pass keras.Model"):
        featviz.from_keras("hello")


def test_every_convolution_with_a_built_in_relu_knows_its_pre_activation():
    with fk.numpy_initializers(np.random.default_rng(0)):
        net = keras.Sequential([
            keras.Input((None, None, 3)),
            keras.layers.DepthwiseConv2D(3, activation="relu", name="dw"),
            keras.layers.SeparableConv2D(4, 3, activation="relu6", name="sep"),
            keras.layers.Conv2D(4, 3, activation="relu", name="frozen", trainable=False),
            keras.layers.Conv2DTranspose(3, 3, strides=2, activation="relu", name="up")])
    model = featviz.from_keras(net, image_size=32)
    names = ["dw", "sep", "frozen", "up"]
    assert [model.pre_activation(n) for n in names] == [f"{n}_pre" for n in names]
    images = _images(2, 32, seed=6)
    acts = model.activations(images, layers=names + [f"{n}_pre" for n in names])
    for name in names:
        layer = net.get_layer(name)
        linear = keras.Model(net.inputs, layer.output)
        saved, layer.activation = layer.activation, keras.activations.linear
        try:  # Keras's own output before the rectifier
            theirs = linear.predict(images, verbose=0)
        finally:
            layer.activation = saved
        np.testing.assert_allclose(acts[f"{name}_pre"], theirs, rtol=1e-5, atol=1e-5,
                                   err_msg=name)
        assert (np.asarray(acts[f"{name}_pre"]) < 0).any()


def test_a_weights_file_of_another_network_says_so_in_one_line(tmp_path):
    with fk.numpy_initializers(np.random.default_rng(0)):
        other = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
                                  keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)])
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(fk.KerasWeightsError) as err:
        fk.keras_application("VGG16", weights=str(path), input_size=32)
    message = str(err.value)
    assert "\n" not in message and "does not fit keras.applications.VGG16 at 32 px" in message
    assert "not this architecture's" in message and "layers could not be loaded" in message
    assert "'block1_conv1': The shape of the target variable" in message
    assert message.endswith("value.shape=(3, 3, 3, 4).")  # not the variable's values
