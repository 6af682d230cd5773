"""``tiny``: a small convolutional network with seeded random weights (not pretrained).

It is registered in the zoo like the real networks, so every command accepts
``--model tiny``; it compiles in well under a second, which makes it the model for smoke tests
and for trying the tools quickly. Its filters mean nothing: use a pretrained model to see
what a network learned.

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

from .base import Model, from_linen
from .torch_weights import WeightsFileError


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


def load_tiny(weights: str | None = None) -> Model:
    """The tiny network, its weights drawn from ``jax.random.key(0)``."""
    if weights is not None:
        raise WeightsFileError("the tiny model has no weights file (its weights are seeded "
                               "random); drop --weights")
    net = TinyCNN()
    params = net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return from_linen(net, params, ["conv1", "conv2", "conv3", "head", "logits"], name="tiny",
                      preprocess=lambda x: x * 2 - 1, image_size=32)
