"""Layers shared by the zoo's architectures: convolutions with batch norm folded in, in two
equivalent forms each, picked per platform when a network is traced.

The depthwise convolution and the stem convolution each come in two forms (equal within float
rounding, TF-"SAME" padding in both), picked per platform when the network is traced
(``conv_kernels``, table ``PLATFORM_KERNELS``):

* ``shifted``: the depthwise conv as k*k shifted multiplies with a hand-written input gradient
  (``depthwise_conv``), the stem as one matmul over its k*k shifted windows (``patch_conv``).
  Measured far faster than XLA's own convolutions on XLA:CPU, the CPU default.
* ``native``: XLA's convolution, ``feature_group_count=C`` for the depthwise conv
  (``native_depthwise_conv``, ``native_conv``; cuDNN on GPUs). The GPU and TPU default.

The environment variable ``FEATVIZ_CONV_KERNELS=native`` or ``=shifted`` overrides the table
for both convolutions on every platform (unset or empty: the table). It is read when a program
is traced, so set it before the first call (a program already traced keeps its choice);
``benchmarks/bench_depthwise.py`` times both forms, alone and in the whole network.

``Conv`` is the module architectures use: a convolution (or, with ``depthwise=True``, one per
channel) plus a bias, the form a convolution followed by inference-mode batch norm folds into
(``fold_bn``).

Example:
    >>> import numpy as np
    >>> x = np.ones((1, 5, 5, 2), np.float32)
    >>> depthwise_conv(x, np.ones((3, 3, 2), np.float32), 2)[0, :, :, 0]
    Array([[4., 6., 4.],
           [6., 9., 6.],
           [4., 6., 4.]], dtype=float32)
    >>> [f.__name__ for f in conv_kernels("cpu")]
    ['depthwise_conv', 'patch_conv']
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def fold_bn(weight, bias, mean, var, eps: float):
    """Inference-mode batch norm as a per-channel ``(scale, shift)``: ``bn(y) = y*scale + shift``.
    A convolution followed by it is the convolution with its output channels scaled by
    ``scale`` plus the bias ``shift``."""
    scale = weight / np.sqrt(var + eps)
    return scale, bias - mean * scale


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


def weight(module: nn.Module, name: str, init: Callable, shape: tuple):
    """``module``'s parameter ``name``, read directly when it exists (flax's ``self.param``
    traces the initializer at every call, only to check the shape: 0.3 s per trace of
    EfficientNet-Lite0 on the CPU), else initialized with ``init``."""
    if not module.has_variable("params", name):
        return module.param(name, init, shape)
    value = module.get_variable("params", name)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"weight {module.name}.{name} has shape {tuple(value.shape)}, where "
                         f"this network needs {tuple(shape)}: the weights are of another model")
    return value


class Dense(nn.Module):
    """``x @ kernel + bias`` over the last axis (a 1x1 convolution): flax's ``nn.Dense``, its
    parameters named and shaped alike, read without tracing their initializer."""

    features: int

    @nn.compact
    def __call__(self, x):
        kernel = weight(self, "kernel", nn.initializers.lecun_normal(),
                        (x.shape[-1], self.features))
        return x @ kernel + weight(self, "bias", nn.initializers.zeros, (self.features,))


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
        kernel = weight(self, "kernel", nn.initializers.lecun_normal(), shape)
        bias = weight(self, "bias", nn.initializers.zeros, (self.features,))
        depthwise, stem = conv_kernels(_platform(x))
        conv = depthwise if self.depthwise else stem
        return conv(x, kernel, self.stride) + bias
