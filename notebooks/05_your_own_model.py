# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Your own Flax model
#
# `featviz.from_linen` adapts any `flax.linen` module in one call: name the layers to expose,
# either as submodule paths (`"block/conv"`) or as values the module stores with
# `self.sow("intermediates", name, x)`. The network here is randomly initialized, so its
# atlas shows what random filters respond to; put your trained parameters in its place.
# `FEATVIZ_FAST=1` (default) uses reduced settings; `FEATVIZ_FAST=0` the full ones.

# %%
import os
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

import featviz
from featviz import objectives as obj
from featviz.atlas import render_atlas
from featviz.image import load_image, make_grid

FEATVIZ_FAST = os.environ.get("FEATVIZ_FAST", "1") == "1"
STEPS, SIZE = (32, 64) if FEATVIZ_FAST else (512, 128)


class Block(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(self.features, (3, 3), strides=2, name="conv")(x))


class MyNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (5, 5), name="conv1")(x))
        self.sow("intermediates", "relu1", x)
        x = Block(32, name="block")(x)
        return nn.Dense(10, name="head")(x.mean(axis=(1, 2)))


net = MyNet()
params = net.init(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
model = featviz.from_linen(net, params, layers=["relu1", "block/conv", "head"],
                           image_size=SIZE, preprocess=lambda x: x * 2 - 1)
model.layer_shapes(SIZE)

# %% [markdown]
# ## An atlas of a sown layer
#
# `render_atlas` renders the channels in chunks (resumable: rerunning skips finished ones)
# and writes one labeled grid.

# %%
out = os.path.join(tempfile.mkdtemp(), "relu1.png")
atlas = render_atlas(model, "relu1", range(16), out, steps=STEPS, size=SIZE, progress=False)
plt.figure(figsize=(8, 8))
plt.imshow(load_image(out))
plt.axis("off")
plt.show()

# %% [markdown]
# ## A submodule's output, with the renderer directly
#
# One `Renderer` batch for all 32 channels of `block/conv`, tiled with `make_grid`.

# %%
channels = list(range(model.channels("block/conv")))
result = featviz.Renderer(model, size=SIZE, steps=STEPS)(
    [obj.channel("block/conv", c) for c in channels], featviz.channel_keys(0, channels))
plt.figure(figsize=(10, 5))
plt.imshow(make_grid(result.images, columns=8, labels=[f"conv:{c}" for c in channels]))
plt.axis("off")
plt.show()
assert result.images.shape == (32, SIZE, SIZE, 3)

# %% [markdown]
# A class output works the same way: `obj.class_logit(3, layer="head")`.

# %%
logit = featviz.render(model, [obj.class_logit(3, layer="head")], size=SIZE, steps=STEPS)
print("logit 3 of the final image:", float(logit.final[0]))
