"""The HTML of a gallery site: plain pages with relative links and inline styles, which open
from disk. The index's class search is a few lines of inline JavaScript over a JSON list
embedded in the page: no network, no server.

Example:
    >>> print(image_tag("a b.png", 64, "unit <3>"))
    <img src="a%20b.png" width="64" height="64" alt="unit &lt;3&gt;">
    >>> slug("blocks/8 a")
    'blocks_8_a'
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import quote

import numpy as np

from .config import VIEWS, RenderConfig

CSS = """body{font:15px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:76em;padding:0 1em;
color:#222}a{color:#05c}nav{margin-bottom:1em}nav a{margin-right:1em}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0 0 1em 0}
figcaption{font-size:12px;color:#555;max-width:20em}img{display:block;border:1px solid #ccc}
.pair{display:flex;gap:3px}.pixel{image-rendering:pixelated}.layer{margin:1.5em 0}
.strip{display:flex;gap:4px}section{margin:1.5em 0}ol.links li{margin:4px 0}
.value{color:#555;font-variant-numeric:tabular-nums}.missing{width:96px;height:96px;
border:1px dashed #bbb;display:flex;align-items:center;justify-content:center;font-size:11px;
color:#777;text-align:center}#class-search{font-size:16px;width:20em}
#class-results li{margin:.6em 0}#class-results a{display:inline-flex;align-items:center;
gap:4px;margin-right:10px}table{border-collapse:collapse}td,th{padding:2px 10px;
text-align:left}"""

VIEW_TEXT = {"channel": "maximizes the channel's mean activation",
             "neuron": "maximizes the centre neuron (one position of the channel)",
             "negative": "minimizes the channel's mean, what the unit responds to least (the "
                         "objective is minus the mean)"}
SHOWN_SIDE, VIEW_SIDE, TILE_SIDE = 256, 160, 112  # display sizes: main view, others, patches
THUMB_SIDE = 96  # a unit's thumbnail (layer pages, links, the index)


def slug(layer: str) -> str:
    """A layer's folder name: its name with anything but letters, digits, ``_.-`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", layer)


def preview(png: str) -> str:
    """The compact copy of the render ``png`` that a unit page shows, linked to the PNG: a
    WebP beside it.

    >>> preview("renders/diverse/conv3_0_1.png")
    'renders/diverse/conv3_0_1.webp'
    """
    return PurePosixPath(png).with_suffix(".webp").as_posix()


def image_tag(src: str, width: int, alt: str, pixel: bool = False) -> str:
    """An ``<img>`` of a relative path, square at ``width``; ``pixel``: shown without
    smoothing."""
    cls = ' class="pixel"' if pixel else ""
    return (f'<img src="{quote(src)}" width="{width}" height="{width}" '
            f'alt="{html.escape(alt)}"{cls}>')


def page(title: str, body: str, nav: Sequence[tuple[str, str]] = (), script: str = "") -> str:
    """A whole page: ``nav`` links (href, text) above the title, then ``body``."""
    links = "".join(f'<a href="{quote(href)}">{html.escape(text)}</a>' for href, text in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f'<title>{html.escape(title)}</title><link rel="icon" href="data:,">'
            f"<style>{CSS}</style></head>\n<body><nav>{links}</nav><h1>{html.escape(title)}</h1>"
            f"\n{body}\n{script}</body></html>\n")


def _section(part: str, title: str, inner: str, intro: str = "") -> str:
    intro = f"<p>{intro}</p>" if intro else ""
    return (f'<section data-part="{part}"><h2>{html.escape(title)}</h2>{intro}\n{inner}'
            "</section>\n")


@dataclass
class LayerData:
    """What the pages show of one layer: its shown channels, renders (view or "diverse" ->
    channel -> record), ``examples.json`` and ``links.json`` contents, thumbnails (channel ->
    path), the earlier shown layer the links come from, and whether an activation atlas is in
    its folder. Paths are relative to the layer's folder."""
    layer: str
    channels: list[int]
    renders: dict
    examples: dict
    links: dict
    thumbs: dict
    earlier: str | None = None
    activation_atlas: bool = False
    slug: str = field(init=False)

    def __post_init__(self):
        self.slug = slug(self.layer)


def _views(data: LayerData, c: int) -> str:
    figures = []
    for view in VIEWS:
        record = data.renders[view][c]
        side = SHOWN_SIDE if view == "channel" else VIEW_SIDE
        figures.append(f'<figure data-part="{view}">'
                       f'{image_tag(record["png"], side, f"{data.layer}:{c} {view}")}'
                       f"<figcaption><b>{view}</b>: {VIEW_TEXT[view]}; objective "
                       f"{record['objective']:.3g}</figcaption></figure>")
    return _section("views", "Feature visualization", f'<div class="grid">{"".join(figures)}</div>')


def _diverse(data: LayerData, c: int, config: RenderConfig) -> str:
    if "diverse" not in data.renders:
        return ""
    record = data.renders["diverse"][c]
    images = [record] + record.get("diverse", [])
    figures = "".join(f'<figure><a href="{quote(r["png"])}">'
                      f'{image_tag(preview(r["png"]), 128, f"diverse image {i + 1}")}</a>'
                      f"<figcaption>{r['objective']:.3g}</figcaption></figure>"
                      for i, r in enumerate(images))
    return _section("diverse", "Diverse images", f'<div class="grid">{figures}</div>',
                    f"{len(images)} images of the {config.view} objective, rendered together "
                    "and pushed apart by a diversity term (Olah et al., 2017): the different "
                    "things this unit responds to. Each links to its PNG.")


def _examples(data: LayerData, c: int, part: str) -> str:
    rows, examples = data.examples["channels"][str(c)][part], data.examples
    rules = [r for r in ("deconvnet", "guided") if rows and r in rows[0]]
    pixel = examples["receptive_field"] < TILE_SIDE
    tiles = "".join(
        f'<figure><div class="pair">{image_tag(r["patch"], TILE_SIDE, "patch", pixel)}'
        + "".join(image_tag(r[rule], TILE_SIDE, f"{rule} projection", pixel) for rule in rules)
        + f'</div><figcaption><span class="value">{r["value"]:.3g}</span> &middot; '
        f'{html.escape(r["image"])}</figcaption></figure>' for r in rows)
    projected = {"guided": "guided backprop (Springenberg et al., 2015)",
                 "deconvnet": "deconvnet (Zeiler &amp; Fergus, 2014)"}
    extra = (", then the unit projected back to pixels by "
             + " and by ".join(projected[r] for r in rules)) if rules else ""
    if part == "top":
        intro = (f"The units of this channel with the highest activation over "
                 f"{examples['images']} photos: each one's receptive field "
                 f"({examples['receptive_field']} px){extra}.")
        if rules == ["guided"]:
            intro += (" The network has no max pooling before this layer, so a deconvnet "
                      "projection would be the same pattern for every patch; it is left out.")
        return _section("top", "Top dataset examples", f'<div class="grid">{tiles}</div>', intro)
    return _section("bottom", "Bottom dataset examples", f'<div class="grid">{tiles}</div>',
                    "The units of this channel with the lowest activation, lowest first.")


def _contributions(data: LayerData, c: int, earlier: LayerData | None) -> str:
    row = data.links["channels"][str(c)]
    if earlier is None or "contributions" not in row:
        return ""
    figures = []
    for p, value in row["contributions"]:
        label = f"{earlier.layer}:{p}"
        if p in earlier.thumbs:
            thumb = image_tag(f"../{earlier.slug}/{earlier.thumbs[p]}", THUMB_SIDE, label)
            unit = f'<a href="../{earlier.slug}/{p}.html">{thumb}{html.escape(label)}</a>'
        else:
            unit = f'<div class="missing">not in this site</div>{html.escape(label)}'
        figures.append(f'<figure>{unit}<figcaption><span class="value">{value:.3g}</span>'
                       "</figcaption></figure>")
    return _section("contributions", f"Units of {earlier.layer} that contribute most",
                    f'<div class="grid">{"".join(figures)}</div>',
                    f"Activation &times; gradient of this unit's channel mean with respect to "
                    f"each channel of {html.escape(earlier.layer)}, summed over positions and "
                    f"averaged over {data.links['images']} photos.")


def _classes(data: LayerData, c: int) -> str:
    row = data.links["channels"][str(c)]
    if "classes" not in row:
        return ""
    items = "".join(f'<li>{html.escape(name)} <span class="value">{value:.3g}</span></li>'
                    for name, value in row["classes"])
    return _section("classes", "Classes it drives most", f'<ol class="links">{items}</ol>',
                    "Each class logit's gradient with respect to this channel times its "
                    f"activation, summed over positions and averaged over "
                    f"{data.links['images']} photos.")


def unit_page(data: LayerData, c: int, earlier: LayerData | None, config: RenderConfig) -> str:
    """One unit's page: its views, diverse images, dataset examples and links."""
    i = data.channels.index(c)
    nav = [("../index.html", "all layers"), ("index.html", f"{data.layer}")]
    nav += [(f"{data.channels[i - 1]}.html", "previous")] if i > 0 else []
    nav += [(f"{data.channels[i + 1]}.html", "next")] if i + 1 < len(data.channels) else []
    intro = (f"<p>Rendered by gradient ascent: {config.steps} steps at {config.size} px, "
             f"{html.escape(config.param)} parameterization, seed {config.seed}.</p>")
    body = (intro + _views(data, c) + _diverse(data, c, config) + _examples(data, c, "top")
            + _examples(data, c, "bottom") + _contributions(data, c, earlier)
            + _classes(data, c))
    return page(f"{data.layer} unit {c}", body, nav)


def layer_page(data: LayerData, n_channels: int) -> str:
    """A layer's page: its units' images, the activation atlas if there is one, and each
    unit's top nine dataset patches (Zeiler & Fergus's grid)."""
    thumbs = "".join(f'<figure><a href="{c}.html">'
                     f'{image_tag(data.thumbs[c], THUMB_SIDE, f"unit {c}")}'
                     f"</a><figcaption>unit {c}</figcaption></figure>" for c in data.channels)
    body = f"<p>{len(data.channels)} of {n_channels} channels.</p>"
    body += _section("atlas", "Units", f'<div class="grid">{thumbs}</div>')
    if data.activation_atlas:
        body += _section("activation-atlas", "Activation atlas",
                         f'<a href="activation_atlas.png">'
                         f'{image_tag("activation_atlas.png", 384, "activation atlas")}</a>')
    grids = "".join(
        f'<figure><a href="{c}.html">'
        f'{image_tag(data.examples["channels"][str(c)]["grid"], 150, f"unit {c} top patches")}'
        f"</a><figcaption>unit {c}</figcaption></figure>" for c in data.channels)
    body += _section("patch-grid", "Top nine dataset patches", f'<div class="grid">{grids}</div>',
                     f"Per unit, the receptive fields ({data.examples['receptive_field']} px) "
                     "of its nine strongest activations (Zeiler &amp; Fergus, 2014).")
    return page(f"{data.layer}", body, [("../index.html", "all layers")])


SEARCH_SCRIPT = """<script>
const index = JSON.parse(document.getElementById("class-index").textContent);
const input = document.getElementById("class-search");
const results = document.getElementById("class-results");
const status = document.getElementById("class-status");
function show() {
  const query = input.value.trim().toLowerCase();
  results.replaceChildren();
  const found = index.classes.filter(c => query && c[0].toLowerCase().includes(query));
  const wordStart = name => {  // "cat" in "tabby cat" before "cat" in "bullfrog, catesbeiana"
    const lower = name.toLowerCase();
    return !/[a-z0-9]/.test(lower[lower.indexOf(query) - 1] || " ");
  };
  const hits = found.filter(c => wordStart(c[0])).concat(found.filter(c => !wordStart(c[0])));
  status.textContent = query ? hits.length + " classes match" : "";
  for (const [name, units] of hits.slice(0, 20)) {
    const item = document.createElement("li");
    const title = document.createElement("b");
    title.textContent = name + ": ";
    item.append(title);
    for (const [u, value] of units) {
      const [label, href, thumb] = index.units[u];
      const link = document.createElement("a");
      link.href = href;
      const picture = document.createElement("img");
      picture.src = thumb; picture.width = picture.height = 32; picture.alt = label;
      link.append(picture, label + " (" + value.toPrecision(3) + ")");
      item.append(link);
    }
    results.append(item);
  }
}
input.addEventListener("input", show);
show();
</script>
"""


def class_search_index(units: Sequence[tuple[str, str, str]], scores, names: Sequence[str],
                       per_class: int = 8) -> dict:
    """The class search's data: ``units`` (label, href, thumbnail), and for each class name
    the ``per_class`` units whose ``scores`` (units, classes) are highest, as (unit index,
    score).

    >>> class_search_index([("a:0", "a/0.html", "t.png"), ("a:1", "a/1.html", "u.png")],
    ...                    [[0.5, -1.0], [0.7, 0.2]], ["cat", "dog"], per_class=1)["classes"]
    [['cat', [[1, 0.7]]], ['dog', [[1, 0.2]]]]
    """
    scores = np.asarray(scores, np.float64)
    order = np.argsort(-scores, axis=0, kind="stable")[:per_class]
    classes = [[name, [[int(u), round(float(scores[u, k]), 4)] for u in order[:, k]]]
               for k, name in enumerate(names)]
    return {"units": [list(u) for u in units], "classes": classes}


def index_page(model_name: str, layer_shapes: dict, shown: Sequence[LayerData],
               search: dict | None, config: RenderConfig, image_size: int) -> str:
    """The site's index: the model and its layers (``layer_shapes``: name -> shape at
    ``image_size``), a strip of each shown layer's units, and the class search (where
    ``search`` is given)."""
    body = (f"<p>Model <b>{html.escape(model_name)}</b>: each shown layer's units rendered by "
            f"gradient ascent ({config.steps} steps at {config.size} px), with the dataset "
            "examples that excite them and the units and classes they connect to.</p>")
    script = ""
    if search is not None:
        data = json.dumps(search, separators=(",", ":")).replace("</", "<\\/")
        body += _section("class-search", "Find the units that drive a class",
                         '<input id="class-search" type="search" placeholder="a class name, '
                         'e.g. cat" aria-label="class name"><p id="class-status"></p>'
                         f'<ul id="class-results"></ul><script type="application/json" '
                         f'id="class-index">{data}</script>')
        script = SEARCH_SCRIPT
    strips = "".join(
        f'<div class="layer"><h3><a href="{d.slug}/index.html">{html.escape(d.layer)}</a></h3>'
        f'<a class="strip" href="{d.slug}/index.html">'
        + "".join(image_tag(f"{d.slug}/{d.thumbs[c]}", 64, f"unit {c}") for c in d.channels[:8])
        + "</a></div>" for d in shown)
    body += _section("shown-layers", "Layers shown", strips)
    links = {d.layer: d.slug for d in shown}
    rows = "".join(
        f"<tr><td>{_layer_link(name, links)}</td><td>{' x '.join(map(str, shape))}</td></tr>"
        for name, shape in layer_shapes.items())
    body += _section("layers", "Every layer of the model",
                     f"<table><tr><th>layer</th><th>shape at {image_size} px</th></tr>{rows}"
                     "</table>")
    return page("featviz gallery", body, script=script)


def _layer_link(name: str, links: dict) -> str:
    text = html.escape(name)
    return f'<a href="{links[name]}/index.html">{text}</a>' if name in links else text
