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
# # Quickstart: what do the channels of a pretrained network respond to?
#
# featviz ships EfficientNet-Lite0 trained on ImageNet. We render a few channels of one layer
# by gradient ascent on the input image, then a whole atlas of a layer.
#
# `FEATVIZ_FAST=1` (the default, used by the tests) picks reduced settings: few steps, small
# images, few channels. Run with `FEATVIZ_FAST=0` for the full settings.

# %%
import os
import tempfile

import matplotlib.pyplot as plt

import featviz
from featviz import objectives as obj
from featviz.atlas import render_atlas
from featviz.image import load_image, make_grid

FEATVIZ_FAST = os.environ.get("FEATVIZ_FAST", "1") == "1"
STEPS, SIZE, N_ATLAS = (32, 64, 8) if FEATVIZ_FAST else (512, 128, 32)

# %% [markdown]
# The model and its layers, with the shape of each layer's activations for a 224 px image.

# %%
model = featviz.load_model()
for name, shape in model.layer_shapes(224).items():
    print(f"{name:<10} {shape}")

# %% [markdown]
# ## A few channels
#
# One `Renderer` compiles one program for a batch of channels; the channel index is data, so
# other channels reuse it. Each image gets its own random key derived from its channel index.

# %%
channels = [0, 1, 2, 3]
renderer = featviz.Renderer(model, size=SIZE, steps=STEPS)
result = renderer([obj.channel("blocks_8", c) for c in channels],
                  featviz.channel_keys(seed=0, indices=channels))
print("final mean activation per channel:", result.final.round(2))

plt.figure(figsize=(10, 3))
plt.imshow(make_grid(result.images, columns=4, labels=[f"blocks_8:{c}" for c in channels]))
plt.axis("off")
plt.show()

# %% [markdown]
# The objective under random transforms, step by step: it should climb.

# %%
plt.figure(figsize=(6, 3))
for c, trace in zip(channels, result.trace):
    plt.plot(trace, label=f"channel {c}")
plt.xlabel("step")
plt.ylabel("mean activation")
plt.legend()
plt.show()
assert (result.trace[:, -1] > result.trace[:, 0]).all()

# %% [markdown]
# ## An atlas
#
# `render_atlas` renders the channels in chunks, writing each channel's PNG as soon as its
# chunk finishes (an interrupted run resumes), then tiles them into one labeled PNG.

# %%
out = os.path.join(tempfile.mkdtemp(), "atlas.png")
atlas = render_atlas(model, "blocks_5", range(N_ATLAS), out, steps=STEPS, size=SIZE,
                     progress=False)
plt.figure(figsize=(10, 10 * (N_ATLAS // 8) / 8 + 1))
plt.imshow(load_image(out))
plt.axis("off")
plt.show()
print(f"{len(atlas.records)} channels in {atlas.seconds:.1f} s")
