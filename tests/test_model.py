"""The embedded EfficientNet-Lite0 against the reference implementation and a real photo."""
import json
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import featviz
from featviz.cli import main
from featviz.models.base import UnknownLayerError
from featviz.models.layers import depthwise_conv

FIXTURE = Path(__file__).parent / "fixtures" / "reference_logits.npz"
# The logits' tolerance is the README's figure. Measured (XLA:CPU, float32): 1.4e-5 (224 px)
# and 1.1e-5 (128 px) with the CPU's shifted depthwise convs, 1.1e-5 and 1.7e-5 with
# FEATVIZ_CONV_KERNELS=native; the blocks within 4.3e-5.
LOGITS_ATOL = 2e-5


@pytest.mark.parametrize("size", [224, 128])
def test_logits_match_reference(lite0, size):
    ref = np.load(FIXTURE)
    images = ref[f"pixels_{size}"].astype(np.float32) / 255
    acts = jax.jit(lite0.activations)(images)
    np.testing.assert_allclose(acts["logits"], ref[f"logits_{size}"], atol=LOGITS_ATOL,
                               rtol=0)
    for block in (8, 15):
        np.testing.assert_allclose(acts[f"blocks_{block}"], ref[f"blocks_{block}_{size}"],
                                   atol=1e-3, rtol=0)


def test_layers_and_shapes(lite0):
    shapes = lite0.layer_shapes(224)
    assert list(shapes)[:2] == ["stem", "blocks_0"] and len(shapes) == 19
    assert shapes["head"] == (7, 7, 1280)
    assert shapes["blocks_8"] == (14, 14, 112)
    assert shapes["logits"] == (1000,)


def test_predict_grace_hopper(grace_hopper, capsys):
    assert main(["predict", grace_hopper, "--json", "--top", "3"]) == 0
    report = json.loads(capsys.readouterr().out)
    top = report[0]["top"]
    assert report[0]["image"] == grace_hopper
    assert top[0]["class"] == 652 and top[0]["name"] == "military uniform"
    assert top[0]["probability"] > top[1]["probability"] > 0


# Strides 1 and 2 (and 3: the generic input gradient) with kernels 3 and 5, odd and even heights
# and widths (the input is size x size + 1). The oracle is XLA's own grouped convolution with its
# own "SAME" padding and autodiff's gradients, independent of featviz's shifted multiplies, its
# ``_same_pads`` and its hand-written input gradient. Measured (XLA:CPU, float32): output and
# input gradient within 3e-6, kernel gradient (a sum over every position) within 8e-6.
@pytest.mark.parametrize("stride,kernel,size", [(1, 3, 9), (2, 3, 9), (2, 5, 10), (2, 5, 9),
                                                (2, 3, 8), (1, 5, 7), (3, 3, 10)])
def test_depthwise_conv_and_its_gradient_match_grouped_conv(stride, kernel, size):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, size, size + 1, 4)).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 4)).astype(np.float32)

    def grouped(x, w):
        return jax.lax.conv_general_dilated(x, w[:, :, None, :], (stride, stride), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            feature_group_count=4)

    cotangent = rng.normal(size=grouped(x, w).shape).astype(np.float32)

    def loss(conv):  # a random weighted sum: its gradient is the VJP of that cotangent
        return lambda x, w: (conv(x, w) * cotangent).sum()

    def ours(x, w):
        return depthwise_conv(x, w, stride)
    np.testing.assert_allclose(ours(x, w), grouped(x, w), rtol=0, atol=1e-5)
    (gx_ours, gw_ours), (gx_ref, gw_ref) = (jax.grad(loss(conv), (0, 1))(x, w)
                                            for conv in (ours, grouped))
    np.testing.assert_allclose(gx_ours, gx_ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(gw_ours, gw_ref, rtol=0, atol=2e-5)


def test_a_grey_network_renders_grey_images_and_reads_rgb_photos(tmp_path):
    import flax.linen as nn
    import jax.numpy as jnp

    import featviz
    from featviz import attribution, objectives as obj
    from featviz.atlas import render_atlas

    class Grey(nn.Module):  # MNIST-like: 28 x 28, one input channel
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
            self.sow("intermediates", "relu1", x)
            return nn.Dense(10, name="fc")(x.mean((1, 2)))

    net = Grey()
    model = featviz.from_linen(net, net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1))),
                               ["relu1", "fc"], image_size=28,
                               pre_activations={"relu1": "conv1"})
    assert model.input_channels == 1
    out = featviz.render(model, [obj.channel("relu1", c) for c in range(2)], size=28, steps=16)
    assert out.images.shape == (2, 28, 28, 1) and (out.trace[:, -1] > out.trace[:, 0]).all()
    render_atlas(model, "relu1", [0, 1], tmp_path / "atlas.png", steps=2, size=28,
                 progress=False)
    assert Image.open(tmp_path / "atlas_channels" / "relu1_0.png").mode == "L"
    photo = np.random.default_rng(0).uniform(size=(1, 28, 28, 3)).astype(np.float32)
    assert attribution.gradcam(model, photo).shape == (1, 28, 28)


class _OneConv(nn.Module):
    """conv1 then a relu: the smallest module an adapter can be asked about."""

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))


def test_adapting_a_module_says_what_is_wrong():
    module = _OneConv()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    with pytest.raises(UnknownLayerError, match=r"never produced layer\(s\) \['conv9'\]"):
        featviz.from_linen(module, variables, ["conv1", "conv9"], image_size=16)
    with pytest.raises(UnknownLayerError, match="conv7"):
        featviz.from_linen(module, variables, ["conv1"], image_size=16,
                           pre_activations={"conv1": "conv7"})
    with pytest.raises(ValueError, match=r"ScopeCollectionNotFound.*\{'params': \.\.\.\}"):
        featviz.from_linen(module, variables["params"], ["conv1"], image_size=16)


def test_a_model_prints_in_one_line(lite0):
    text = repr(lite0)
    assert len(text) < 1000 and "efficientnet-lite0" in text and "\n" not in text


def test_a_replaced_model_compiles_its_own_forward_pass():
    """``dataclasses.replace`` gives a model fresh memos: after the original has run, a copy
    with another preprocess uses it, not the original's compiled forward pass."""
    import dataclasses

    module = _OneConv()
    variables = module.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    model = featviz.from_linen(module, variables, ["conv1"], image_size=8)
    images = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    before = model.activations(images)["conv1"]
    assert model.layer_shape("conv1") == (8, 8, 4)

    def zero(x):
        return x * 0

    replaced = dataclasses.replace(model, preprocess=zero)
    fresh = featviz.from_linen(module, variables, ["conv1"], image_size=8, preprocess=zero)
    after = replaced.activations(images)["conv1"]
    assert not np.array_equal(after, before)
    np.testing.assert_array_equal(after, fresh.activations(images)["conv1"])
    np.testing.assert_array_equal(model.activations(images)["conv1"], before)
