"""Activation atlas (Carter et al., Distill 2019): a layer's activations on photos, laid out in
2-D by UMAP and binned into a grid, each cell's mean activation rendered as one icon.

Activations are read at the inner positions (away from the map's edges) of random crops,
flips and scales of photos drawn from an explicit seed. The samples, the layout and each chunk
of icons are saved atomically in ``<out stem>_atlas/``, keyed by their settings, so that a
rerun reuses what was done.

Example:
    >>> layout = np.array([[0.1, 0.1], [0.15, 0.2], [0.9, 0.9], [0.2, 0.05]])
    >>> {cell: members.tolist() for cell, members in grid_cells(layout, 2, 2).items()}
    {(0, 0): [0, 1, 3]}
    >>> acts = {"conv": np.ones((2, 2, 3), np.float32)}
    >>> round(float(cosine_direction("conv", [1.0, 0.0, 0.0])(acts, None)), 3)  # 1 x cos
    0.577
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from .. import __version__, rates, rectifier_rules
from ..activations import layer_fn
from ..attribution import score_layer
from ..channels import check_size
from ..config import RenderConfig, range_error
from ..engine import Renderer, channel_keys
from ..errors import ClassifierError, ConfigError, DatasetError, MissingExtraError
from ..image import load_image, save_npz, save_png, to_uint8, write_text_atomic
from ..memory import auto_chunk_size
from ..models.base import Model, per_model
from ..objectives import Objective
from ..photos import PhotoSource, prefetch

DEFAULT_SAMPLES = 30_000  # activations sampled (Distill: ~100k often suffice)
DEFAULT_CONFIG = RenderConfig(steps=256, size=80)  # an icon's render (Lucid: 512 steps, 80 px)
UMAP_SETTINGS: dict[str, Any] = {"n_neighbors": 50, "min_dist": 0.05, "metric": "cosine"}
COSINE_FLOOR = 0.1  # Lucid's floor under the cosine, so that the objective keeps its sign
DEFAULT_POWER = 2  # the cosine's in an icon's objective (at 1, 1 of 109 blocks_8 icons: 0.498)
LABELLED_CLASSES = 5  # a crop's top predicted classes its activations are attributed to
CROP_SCALES = (0.4, 1.0)  # a crop's side, as a share of the photo's shorter side
BATCH = 16  # crops per forward pass


@dataclass
class ActivationAtlas:
    """An atlas: ``image`` (grid * size px square, uint8 RGB, empty cells white), one record
    per non-empty cell (``cells``), each phase's seconds (``timing``) and what was ``reused``
    from an earlier run (``samples``, ``layout``: bools; ``cells``: icons)."""

    layer: str
    grid: int
    samples: int
    min_count: int
    image: np.ndarray
    cells: list[dict]
    timing: dict = field(default_factory=dict)
    reused: dict = field(default_factory=dict)


def min_count_for(samples: int) -> int:
    """The fewest activations a cell needs to be rendered: Lucid's 10 per 100k, at least 3.

    >>> min_count_for(100_000), min_count_for(30_000)
    (10, 3)
    """
    return max(3, round(10 * samples / 100_000))


def cosine_direction(layer: str, vector, power: int = 1, cosine_to=None) -> Objective:
    """Lucid's cosine-weighted direction objective, ``(h . v) * max(cos(h, u), 0.1) ** power``,
    on ``h``, the layer's spatially averaged activation (what an icon's cosine is measured
    on; a mean of per-position values gave about the same cosines on 16 blocks_8 cells), and
    ``u = cosine_to`` or ``v``: for ``u = v``, ``(h . v)^(n+1) / (|h| |v|)^n`` above the floor."""
    vector = np.asarray(vector, np.float32)
    towards = vector if cosine_to is None else np.asarray(cosine_to, np.float32)
    return Objective(_cosine_direction_value, (vector, towards),
                     ("cosine_direction", layer, int(power)), {layer})


def _cosine_direction_value(params, acts, image, static):
    (vector, towards), (_, layer, power) = params, static
    h = acts[layer].mean(axis=tuple(range(acts[layer].ndim - 1)))
    cosine = h @ towards / (jnp.sqrt((h * h).sum() * (towards * towards).sum()) + 1e-6)
    return (h @ vector) * jnp.maximum(cosine, COSINE_FLOOR) ** power


def whitening(acts) -> np.ndarray:
    """Lucid's whitening ``S = (A^T A / N)^-1`` of activations ``A`` (N, C), ridged by 1e-4 of
    its mean diagonal so that a dead channel does not make it singular.

    >>> whitening(np.eye(2) * 2).round(2).tolist()   # A^T A / N = 2 I
    [[0.5, 0.0], [0.0, 0.5]]
    """
    acts = np.asarray(acts, np.float64)
    gram = acts.T @ acts / len(acts)
    return np.linalg.inv(gram + 1e-4 * np.trace(gram) / len(gram) * np.eye(len(gram)))


def grid_cells(layout, grid: int, min_count: int) -> dict[tuple[int, int], np.ndarray]:
    """(row, col) -> the indices of the points of ``layout`` ((N, 2) in [0, 1]^2; x is the
    column, y the row) in that cell of a ``grid`` x ``grid`` binning, for the cells holding
    ``min_count`` points or more, in row-major order."""
    bins = np.minimum((np.asarray(layout) * grid).astype(np.int64), grid - 1)
    flat = bins[:, 1] * grid + bins[:, 0]
    order = np.argsort(flat, kind="stable")
    cells, starts = np.unique(flat[order], return_index=True)
    return {(int(c) // grid, int(c) % grid): members
            for c, members in zip(cells, np.split(order, starts[1:])) if len(members) >= min_count}


# --- sampling -------------------------------------------------------------------------------

def _random_crops(image, size: int, count: int, rng: np.random.Generator):
    """``count`` random square crops (scale in ``CROP_SCALES``, flipped at random) of an
    (H, W, 3) image in [0, 1], each resized to ``size``."""
    picture, (h, w) = Image.fromarray(to_uint8(image)), image.shape[:2]
    for _ in range(count):
        side = max(1, round(min(h, w) * rng.uniform(*CROP_SCALES)))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = picture.resize((size, size), Image.Resampling.BILINEAR,
                              box=(left, top, left + side, top + side))
        pixels = np.asarray(crop, np.float32) / 255.0
        yield pixels[:, ::-1] if rng.random() < 0.5 else pixels


def _crop_batches(photos: PhotoSource, per_photo: int, size: int, seed: int):
    """Batches of ``BATCH`` crops (the last padded with black) and how many are real; photo
    ``k``'s crops are drawn from ``numpy.random.default_rng([seed, k])``."""
    batch = []
    for k, (_, image) in enumerate(prefetch(photos())):
        batch.extend(_random_crops(image, size, per_photo, np.random.default_rng([seed, k])))
        while len(batch) >= BATCH:
            yield np.stack(batch[:BATCH]), BATCH
            batch = batch[BATCH:]
    if batch:
        yield np.stack(batch + [np.zeros_like(batch[0])] * (BATCH - len(batch))), len(batch)


@per_model
def _sampling_fn(model: Model, layer: str):
    """jit((params, images) -> (activations of layer, each image's top ``LABELLED_CLASSES``
    classes, each position's attribution to them: the activation dotted with the gradient of
    the class's logit with respect to it)); for a model without logits, the activations."""
    try:
        logits = score_layer(model)
    except ClassifierError:
        return jax.jit(lambda params, images: (model.activations(images, params, [layer])[layer],))
    n_labels = min(LABELLED_CLASSES, model.layer_shape(logits)[0])

    def outputs(params, images):
        acts = model.activations(images, params, [layer, logits])
        return acts[layer], acts[logits]

    def run(params, images):
        def scores(delta):
            acts, out = rectifier_rules.evaluate(outputs, params, images, perturb={0: delta})
            return out, acts
        zeros = jnp.zeros(jax.eval_shape(outputs, params, images)[0].shape)
        out, pull, acts = jax.vjp(scores, zeros, has_aux=True)
        top = jax.lax.top_k(out, n_labels)[1]
        grads = jax.lax.map(lambda k: pull(jax.nn.one_hot(top[:, k], out.shape[-1]))[0],
                            jnp.arange(n_labels))
        return acts, top, jnp.moveaxis((grads * acts[None]).sum(-1), 0, -1)
    return jax.jit(run)


def sample_activations(model: Model, layer: str, photos=None, samples: int = DEFAULT_SAMPLES,
                       seed: int = 0, progress: bool = False) -> dict[str, np.ndarray]:
    """``samples`` activations of ``layer`` (fewer if the photos run out) at inner positions
    of random crops of ``photos`` (None: scikit-image's; else a folder, streamed) at the
    model's input size: ``acts`` (N, C) and, with logits, ``classes`` and ``attribution`` (N,
    LABELLED_CLASSES): the crop's top classes and the activation's attribution to each."""
    from tqdm import tqdm
    h, w = model.layer_shape(model.spatial_layer(layer))[:2]
    border = max(1, round(min(h, w) / 8))
    inner = np.array([(y, x) for y in range(border, h - border) for x in range(border, w - border)])
    if not len(inner):
        raise ConfigError(f"layer {layer!r} has a {h}x{w} map: too small to sample away from "
                          "its edges")
    fn = _sampling_fn(model, layer)
    photos = PhotoSource(photos)
    per_photo = math.ceil(samples / (len(photos) * len(inner)))
    per_crop = min(len(inner), math.ceil(samples / (len(photos) * per_photo)))
    rng, parts, taken = np.random.default_rng([seed, len(photos)]), [], 0
    with tqdm(total=samples, desc=f"{layer} sampling", unit="act", disable=not progress,
              leave=False) as bar:
        for images, n in _crop_batches(photos, per_photo, model.image_size, seed):
            out = [np.asarray(a)[:n] for a in fn(model.params, images)]
            picked = np.array([rng.permutation(len(inner))[:per_crop] for _ in range(n)])
            ys, xs, crop = inner[picked, 0], inner[picked, 1], np.arange(n)[:, None]
            part = {"acts": out[0][crop, ys, xs].reshape(-1, out[0].shape[-1])}
            if len(out) > 1:
                part["classes"] = np.repeat(out[1], per_crop, axis=0)
                part["attribution"] = out[2][crop, ys, xs].reshape(-1, out[2].shape[-1])
            parts.append(part)
            bar.update(min(len(part["acts"]), samples - taken))
            taken += len(part["acts"])
            if taken >= samples:
                break
    if not parts:
        raise DatasetError("no readable photo to sample activations from; give a folder of "
                           ".jpg/.png images")
    return {k: np.concatenate([p[k] for p in parts])[:samples] for k in parts[0]}


def umap_layout(acts, seed: int = 0, progress: bool = False) -> np.ndarray:
    """The activations laid out in 2-D by UMAP (Distill's ``UMAP_SETTINGS``; ``random_state=
    seed``: the same seed, the same layout), normalized to [0, 1]^2."""
    from tqdm import tqdm
    try:
        import umap
    except ImportError:
        raise MissingExtraError("the activation atlas lays activations out with umap-learn, which "
                           "is not installed: pip install 'featviz[atlas]'") from None
    settings = dict(UMAP_SETTINGS, n_neighbors=min(UMAP_SETTINGS["n_neighbors"], len(acts) - 1))
    with warnings.catch_warnings(), tqdm(total=1, desc="layout (UMAP)", leave=False,
                                         disable=not progress, bar_format="{desc}: {elapsed}"):
        warnings.simplefilter("ignore", UserWarning)  # "n_jobs overridden by random_state"
        xy = np.asarray(umap.UMAP(**settings, random_state=seed).fit_transform(acts), np.float64)
    low, high = xy.min(axis=0), xy.max(axis=0)
    return (xy - low) / np.where(high > low, high - low, 1.0)


# --- icons ----------------------------------------------------------------------------------

def image_cosines(model: Model, layer: str, images, directions) -> np.ndarray:
    """The cosine between each image's spatially averaged activation at ``layer`` and its
    direction; uint8 images are read as PNG pixels (divided by 255)."""
    images = np.asarray(images)
    pixels = images / np.float32(255) if images.dtype == np.uint8 else images
    acts = np.asarray(layer_fn(model, layer)(model.params, pixels))
    h, v = acts.reshape(len(acts), -1, acts.shape[-1]).mean(axis=1), np.asarray(directions)
    return (h * v).sum(-1) / (np.linalg.norm(h, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-12)


def _render_icons(model: Model, layer: str, cells: dict, config: RenderConfig,
                  folder: Path | None, progress: bool) -> tuple[dict, dict, int]:
    """Render the cells' icons (``cells``: name -> (key index, objective, mean)) in
    chunks of one batch shape; each chunk's PNGs, then its records, are written to ``folder``
    as it finishes, and a rerun reuses them. Returns (records, uint8 icons, icons reused)."""
    from tqdm import tqdm
    renderer = Renderer(model, config)
    record, done = config.record(), {}
    if folder is not None and (folder / "icons.json").exists():
        saved = json.loads((folder / "icons.json").read_text())
        done = {n: r for n, r in saved["icons"].items()
                if saved["settings"] == record and (folder / r["png"]).exists()}
    icons = {n: to_uint8(load_image(folder / r["png"])) for n, r in done.items()}
    todo = [n for n in cells if n not in done]
    chunk = config.chunk or auto_chunk_size(renderer.settings, renderer.devices, layer,
                                            max(len(todo), 1))
    with tqdm(total=len(todo) * renderer.steps, desc=f"{layer} icons", leave=False,
              disable=not progress or not todo) as bar:
        for i in range(0, len(todo), chunk):
            part, n = todo[i:i + chunk], len(todo[i:i + chunk])
            padded = part + [part[-1]] * (chunk - n)  # one batch shape: no recompile
            out = renderer([cells[c][1] for c in padded],
                           channel_keys(config.seed, [cells[c][0] for c in padded]),
                           on_segment=lambda ran, n=n: bar.update(n * ran))
            pixels = to_uint8(out.images[:n])
            cosines = image_cosines(model, layer, pixels, [cells[c][2] for c in part])
            for name, picture, cosine in zip(part, pixels, cosines):
                icons[name], done[name] = picture, {"png": f"{name}.png",
                                                    "cosine": round(float(cosine), 4)}
                if folder is not None:
                    save_png(picture, folder / f"{name}.png")
            if folder is not None:
                write_text_atomic(json.dumps({"settings": record, "icons": done}),
                                  folder / "icons.json")
    return done, icons, len(cells) - len(todo)


# --- the atlas ------------------------------------------------------------------------------

def _cached(folder: Path | None, name: str, record: dict, compute) -> tuple[dict, str, bool]:
    """``compute()``'s arrays, saved atomically as ``folder/<name>_<key>.npz`` (``key``: a
    digest of ``record``) or read back from there; returns (arrays, key, whether read)."""
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    path = None if folder is None else folder / f"{name}_{key}.npz"
    if path is not None and path.exists():
        with np.load(path) as saved:
            return {k: saved[k] for k in saved.files}, key, True
    arrays = compute()
    if path is not None:
        save_npz(arrays, path)
    return arrays, key, False


def _cell_classes(model: Model, data: dict, members) -> list[dict]:
    """A cell's top 5 classes by its activations' mean attribution (a class outside an
    activation's crop's top predictions counts as 0 for it)."""
    if "classes" not in data:
        return []
    classes, values = data["classes"][members].ravel(), data["attribution"][members].ravel()
    totals = np.bincount(classes, values) / len(members)
    present, names = np.unique(classes), model.class_names
    return [{"class": int(c), "name": names[c] if names else str(c),
             "attribution": round(float(totals[c]), 5)}
            for c in present[np.argsort(-totals[present], kind="stable")[:5]]]


def _check(model: Model, layer: str, grid: int, samples: int, config: RenderConfig) -> None:
    model.spatial_layer(layer)
    for name, value in (("grid", grid), ("sample_count", samples)):
        problem = range_error(name, value, name.replace("sample_count", "samples"))
        if problem:
            raise ConfigError(problem)
    if config.view != "channel" or config.diverse != 1:
        raise ConfigError("an activation atlas renders one icon per cell towards its mean; "
                          "leave view and diverse at their defaults")
    check_size(model, layer, config.size)


def activation_atlas(model: Model, layer: str, photos=None, *, grid: int = 20, out=None,
                     config: RenderConfig | None = None, seed: int = 0,
                     samples: int = DEFAULT_SAMPLES, min_count: int | None = None,
                     power: int = DEFAULT_POWER, progress: bool = True,
                     **settings) -> ActivationAtlas:
    """The activation atlas of ``layer``: ``samples`` activations on ``photos``
    (``sample_activations``; crops drawn from ``seed``), laid out by UMAP (``random_state=
    seed``), binned into ``grid`` x ``grid`` cells; each cell holding ``min_count`` of them
    or more (default ``min_count_for(samples)``) is rendered, all in one batch in chunks, by
    ``cosine_direction`` to ``power``: the dot product with its whitened mean (Lucid's ``S v``)
    times the cosine to its mean ``v`` itself (with the cosine to ``S v`` instead, blocks_8
    icons ended as far as cosine 0.18 from ``v``). ``config`` (default ``DEFAULT_CONFIG``;
    ``settings`` change it) sets the render; icon keys come from ``config.seed`` and the cell.

    With ``out`` (a .png path) the atlas and ``<out>.json`` are written (per cell: grid
    position, centre in layout coordinates, count, mean activation norm, the cosine at
    ``layer`` between its icon's PNG and its mean, top classes), every phase kept in
    ``<out stem>_atlas/`` for a rerun to reuse.
    """
    config = rates.resolved((config or DEFAULT_CONFIG).replace(**settings), None)[0]
    _check(model, layer, grid, samples, config)
    folder = None if out is None else Path(out).with_name(Path(out).stem + "_atlas")
    timing, began = {}, time.perf_counter()
    sampled = {"model": model.name, "layer": layer, "photos": PhotoSource(photos).key,
               "samples": samples, "seed": seed, "featviz": __version__}
    data, _, samples_reused = _cached(folder, "samples", sampled, lambda: sample_activations(
        model, layer, photos, samples, seed, progress))
    timing["sampling"], began = time.perf_counter() - began, time.perf_counter()
    layout, key, layout_reused = _cached(
        folder, "layout", {"samples": sampled, "umap": UMAP_SETTINGS},
        lambda: {"layout": umap_layout(data["acts"], seed, progress)})
    timing["layout"], began = time.perf_counter() - began, time.perf_counter()
    min_count = min_count or min_count_for(len(data["acts"]))
    icons = None if folder is None else folder / f"icons_{key}_{grid}_{min_count}_{power}"
    image, cells, reused = _rendered_cells(model, layer, data, layout["layout"], grid,
                                           min_count, config, power, icons, progress)
    timing["render"] = time.perf_counter() - began
    atlas = ActivationAtlas(layer, grid, len(data["acts"]), min_count, image, cells,
                            {phase: round(seconds, 3) for phase, seconds in timing.items()},
                            {"samples": samples_reused, "layout": layout_reused, "cells": reused})
    if out is not None:
        save_png(image, out)
        doc = {"layer": layer, "model": model.name, "grid": grid, "samples": atlas.samples,
               "min_count": min_count, "tile": config.size, "umap": UMAP_SETTINGS,
               "render": config.record(), "power": power, "seconds": atlas.timing,
               "cells": cells}
        write_text_atomic(json.dumps(doc, indent=1), Path(out).with_suffix(".json"))
    return atlas


def _rendered_cells(model: Model, layer: str, data: dict, layout, grid: int, min_count: int,
                    config: RenderConfig, power: int, folder: Path | None, progress: bool):
    """(the atlas image, the cells' records, icons reused) for a layout of ``data``."""
    acts = data["acts"]
    members = grid_cells(layout, grid, min_count)
    if not members:
        raise DatasetError(f"no cell of the {grid}x{grid} grid holds {min_count} of the "
                           f"{len(acts)} activations; use a smaller grid or more samples")
    whiten = whitening(acts)
    means = {cell: acts[m].mean(axis=0) for cell, m in members.items()}
    names = {cell: f"r{cell[0]:03d}_c{cell[1]:03d}" for cell in members}
    cells = {names[c]: (c[0] * grid + c[1], cosine_direction(
        layer, whiten @ v / (np.linalg.norm(whiten @ v) + 1e-12), power, v), v)
        for c, v in means.items()}
    records, icons, reused = _render_icons(model, layer, cells, config, folder, progress)
    size = config.size
    image = np.full((grid * size, grid * size, 3), 255, np.uint8)
    for (row, col), name in names.items():
        image[row * size:(row + 1) * size, col * size:(col + 1) * size] = icons[name]
    rows = [{"row": r, "col": c, "centre": [(c + 0.5) / grid, (r + 0.5) / grid], "count": len(m),
             "mean_activation_norm": round(float(np.linalg.norm(means[r, c])), 4),
             "cosine": records[names[r, c]]["cosine"], "classes": _cell_classes(model, data, m)}
            for (r, c), m in members.items()]
    return image, rows, reused
