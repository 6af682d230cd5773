"""``tiny``: a small convolutional network with seeded random weights (not pretrained).

A seeded random network for smoke tests and for trying the tools quickly. It is registered in
the zoo like the real networks, so every command accepts ``--model tiny``; it needs no weights
file and loads in a fraction of a second. Its filters mean nothing: use a pretrained model to
see what a network learned.

Example:
    >>> model = load_tiny()
    >>> model.layers
    ('conv1', 'conv2', 'conv3', 'head', 'logits')
    >>> model.layer_shapes(32)["conv3"]
    (8, 8, 32)
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .base import Model
from .flax_adapters import from_linen
from .torch_weights import WeightsFileError

TINY_LAYERS = ("conv1", "conv2", "conv3", "head", "logits")


class TinyCNN(nn.Module):
    """conv-relu x3 (two of them stride 2), a 1x1 relu6 head, global pool, 10 logits."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), name="conv1_conv")(x))
        self.sow("intermediates", "conv1", x)
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="conv2_conv")(x))
        self.sow("intermediates", "conv2", x)
        x = nn.relu(nn.Conv(32, (3, 3), strides=2, name="conv3_conv")(x))
        self.sow("intermediates", "conv3", x)
        x = nn.relu6(nn.Dense(64, name="head_conv")(x))
        self.sow("intermediates", "head", x)
        logits = nn.Dense(10, name="fc")(x.mean(axis=(-3, -2)))
        self.sow("intermediates", "logits", logits)
        return logits


def _seeded(shape: jax.ShapeDtypeStruct, rng: np.random.Generator) -> np.ndarray:
    """He-normal kernels (std sqrt(2 / fan-in)) and small random biases."""
    if len(shape.shape) == 1:
        return rng.normal(0.0, 0.1, shape.shape).astype(shape.dtype)
    fan_in = int(np.prod(shape.shape[:-1]))
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape.shape).astype(shape.dtype)


def load_tiny(weights: str | None = None) -> Model:
    """The tiny network, its weights drawn from ``numpy.random.default_rng(0)`` in the order of
    ``TinyCNN().init``'s parameter tree (drawing them with ``jax.random`` would cost seconds of
    XLA:CPU compilation in every process that loads the model)."""
    if weights is not None:
        raise WeightsFileError("the tiny model has no weights file (its weights are seeded "
                               "random); leave out weights=FILE")
    net = TinyCNN()
    shapes = jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jax.device_put(_seeded(s, rng)), shapes)
    return from_linen(net, params, TINY_LAYERS, name="tiny",
                      preprocess=lambda x: x * 2 - 1, image_size=32,
                      pre_activations={name: f"{name}_conv" for name in TINY_LAYERS[:-1]},
                      input_channels=3)
