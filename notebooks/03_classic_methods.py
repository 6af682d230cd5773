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
# # The classic views on real photos
#
# Activation maps, top dataset patches, deconvnet and guided-backprop projections, saliency
# and Grad-CAM, on photos that ship with matplotlib (Grace Hopper) and scikit-image (a cat,
# a cup of coffee, an astronaut), so nothing is downloaded. `FEATVIZ_FAST=1` (default) uses
# fewer channels and patches; `FEATVIZ_FAST=0` the full settings.

# %%
import os

import matplotlib.cbook
import matplotlib.pyplot as plt
import numpy as np
from skimage import data

import featviz
from featviz import attribution as attr
from featviz.activations import activation_grid, layer_maps
from featviz.image import load_image, to_uint8
from featviz.photos import sample_photos, square_resize
from featviz.top_patches import patch_grid, top_patches

FEATVIZ_FAST = os.environ.get("FEATVIZ_FAST", "1") == "1"
N_CHANNELS, K = (8, 4) if FEATVIZ_FAST else (16, 9)
model = featviz.load_model()
SIZE = model.image_size


def show(picture, title, width=10):
    plt.figure(figsize=(width, width * picture.shape[0] / picture.shape[1]))
    plt.imshow(picture)
    plt.title(title)
    plt.axis("off")
    plt.show()


hopper = load_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), SIZE)
photos = {"grace_hopper": hopper,
          **{name: square_resize(getattr(data, name)() / 255.0, SIZE)
             for name in ("chelsea", "coffee", "astronaut")}}
images = np.stack(list(photos.values()))
for name, k in zip(photos, attr.predict(model, images)):
    print(f"{name:<13} predicted class {k:>4}: {model.class_names[k]}")

# %% [markdown]
# ## Activation maps
#
# The first channels of `blocks_3` on Grace Hopper's portrait, one shared colour scale (so
# strengths compare across channels).

# %%
channels = list(range(N_CHANNELS))
maps = layer_maps(model, hopper, "blocks_3", channels)
show(activation_grid(maps, channels, columns=8), "blocks_3 activation maps")

# %% [markdown]
# ## Top dataset patches
#
# For a few channels of `blocks_8`, the receptive-field patches of the units with the highest
# activation over scikit-image's 15 sample photos (Zeiler & Fergus's view of a channel).

# %%
found = top_patches(model, sample_photos(), "blocks_8", [0, 1, 2], k=K)
print(f"receptive field {found.field.size} px, stride {found.field.stride}, "
      f"{found.n_images} images")
fig, axes = plt.subplots(1, 3, figsize=(12, 4.5))
for ax, (c, examples) in zip(axes, found.examples.items()):
    ax.imshow(patch_grid(examples, tile=64))
    ax.set_title(f"blocks_8 channel {c}")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Deconvnet and guided backprop
#
# The strongest unit of a `blocks_8` channel on each photo, projected back to pixels. Grey is
# zero gradient. Deconvnet draws much the same blob wherever the unit sits: this network has
# no max pooling, so deconvnet has no input-dependent switches. Guided backprop also masks by
# the forward pass's rectifiers, so its projection changes with the photo.

# %%
channel = 1
rows = []
for im in images:
    projections = [attr.gradient_image(attr.project(model, im, "blocks_8", channel, method=m))
                   for m in attr.PROJECTIONS]
    rows.append(np.concatenate([to_uint8(im)] + projections, axis=1))
show(np.concatenate(rows, axis=0), f"photo | deconvnet | guided backprop, blocks_8:{channel}", 8)

# %% [markdown]
# ## Saliency and Grad-CAM
#
# Which pixels the top predicted class depends on: vanilla gradient saliency, and Grad-CAM on
# the last spatial layer overlaid on the photo.

# %%
sal = attr.saliency(model, images)
cams = attr.gradcam(model, images)
fig, axes = plt.subplots(2, len(images), figsize=(3 * len(images), 6))
for i, name in enumerate(photos):
    axes[0, i].imshow(attr.colorize(sal[i]))
    axes[0, i].set_title(f"saliency: {name}")
    axes[1, i].imshow(attr.overlay(images[i], cams[i]))
    axes[1, i].set_title("Grad-CAM")
for ax in axes.flat:
    ax.axis("off")
plt.show()
assert sal.shape == cams.shape == images.shape[:3]
