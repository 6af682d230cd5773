"""The gallery site end to end: files, resumption, bad input, the data behind a unit's page
(bottom examples, max-pool detection, contributions and classes checked against plain
gradients), and a real headless Chromium that opens the site from disk, visits every page,
follows every link, checks every image decodes, each part of a unit's page, and the class
search. The tests build it from the zoo's ``tiny`` model (seeded random weights): they are
about files, links and resuming, not about what a real network learned.

Chromium is driven over the Chrome DevTools protocol with the ``websockets`` package rather
than selenium: one small pure-Python dependency, no chromedriver whose version must match the
browser's, and direct access to console and network-error events.

``python tests/test_gallery.py [NAME ...]`` builds a two-layer gallery of EfficientNet-Lite0
at full render settings and writes screenshots of its pages (NAME: index, channel, unit; by
default all): the README's docs/gallery_index.png and docs/gallery_channel.png, and
docs/site/unit_page.png.
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import featviz
from featviz import rectifier_rules, site_data
from featviz.cli import main
from featviz.engine import Renderer
from featviz.photos import PhotoSource, iter_images, prefetch, sample_photos, square_resize
from featviz.site_pages import THUMB_SIDE, preview
from featviz.top_patches import has_max_pool, projection_rules, top_patches
from featviz.unit_links import unit_links

LAYERS, CHANNELS = ["conv2", "conv3"], list(range(16))
K, DIVERSE = 4, 3
ARGS = ["gallery", "--model", "tiny", "--layers", ",".join(LAYERS), "--channels", "0-15",
        "--steps", "8", "--size", "32", "--k", str(K), "--diverse", str(DIVERSE), "--quiet"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
UNIT_PARTS = ("channel", "neuron", "negative", "diverse", "top", "bottom", "contributions",
              "classes")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    umask = os.umask(0o022)  # a web server's usual setting
    try:
        assert main(ARGS + ["--out", str(out)]) == 0
    finally:
        os.umask(umask)
    return out


def test_every_site_file_is_readable_by_group_and_others(site):
    modes = {p.relative_to(site): p.stat().st_mode & 0o777 for p in site.rglob("*") if p.is_file()}
    assert len(modes) > 10 and set(modes.values()) == {0o644}, modes


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featviz: error:"), err
    return err[0]


def _references(page: Path) -> list[str]:
    return re.findall(r"(?:src|href)=\"([^\"#]+)\"", page.read_text())


def test_site_files_and_relative_links(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert pages == sorted(["index.html"] + [f"{layer}/{name}.html" for layer in LAYERS
                                             for name in [*map(str, CHANNELS), "index"]])
    for page in site.rglob("*.html"):
        assert not re.search(r"(src|href)=\"(https?:|//|/)", page.read_text()), page
        for ref in _references(page):
            target = page.parent / urllib.parse.unquote(ref)
            assert ref.startswith("data:") or target.is_file(), (page, ref)
    examples = json.loads((site / LAYERS[0] / "examples.json").read_text())
    assert sorted(examples["channels"], key=int) == list(map(str, CHANNELS))
    for row in examples["channels"].values():
        assert len(row["top"]) == len(row["bottom"]) == K
        assert [r["value"] for r in row["bottom"]] == sorted(r["value"] for r in row["bottom"])
        assert set(row["top"][0]) == {"value", "image", "patch", "guided"}  # no max pooling
    links = json.loads((site / LAYERS[1] / "links.json").read_text())["channels"]
    assert all(len(row["contributions"]) == len(row["classes"]) == 5 for row in links.values())
    first_layer = json.loads((site / LAYERS[0] / "links.json").read_text())["channels"]
    assert all("contributions" not in row for row in first_layer.values())


def test_pages_show_webp_pictures_and_link_the_png_renders(site):
    """Every picture shown is a WebP but a unit's three views (its PNG renders, shown
    enlarged); each diverse image's preview, as large as its PNG, links to that PNG; a
    thumbnail is as large as shown on a layer page."""
    for page in site.rglob("*.html"):
        shown = [urllib.parse.unquote(src)
                 for src in re.findall(r'<img src="([^"]+)"', page.read_text())]
        pngs = [src for src in shown if not src.endswith(".webp")]
        assert len(pngs) == (3 if page.stem.isdigit() else 0), (page, pngs)
        assert all(src.startswith("renders/") and src.endswith(".png") for src in pngs), pngs
    unit = (site / LAYERS[1] / "2.html").read_text()
    diverse = re.findall(r'<a href="([^"]+)"><img src="([^"]+)"[^>]*alt="diverse', unit)
    assert len(diverse) == DIVERSE
    for png, webp in diverse:
        assert webp == preview(png) and png.endswith(".png")
        with Image.open(site / LAYERS[1] / png) as full, Image.open(site / LAYERS[1] / webp) as im:
            assert im.format == "WEBP" and im.size == full.size
    for thumb in site.glob("*/thumbs/*"):
        with Image.open(thumb) as im:
            assert thumb.suffix == ".webp" and im.size == (THUMB_SIDE, THUMB_SIDE), thumb


def _without_search_data(page: Path) -> str:
    """A page's text without the class search's JSON (its scores' last digit may differ when
    a unit's links are measured alone)."""
    return re.sub(r'(<script type="application/json" id="class-index">).*?(</script>)', r"\1\2",
                  page.read_text(), flags=re.S)


def test_rerun_redoes_only_what_is_missing(site, tmp_path, monkeypatch):
    out = tmp_path / "site"
    shutil.copytree(site, out)
    (out / LAYERS[1] / "examples" / "top_2_0.webp").unlink()  # as if interrupted in unit 2
    (out / LAYERS[0] / "classes" / "5.npy").unlink()
    renders = out / LAYERS[0] / "renders"
    newer = [renders / f"{LAYERS[0]}_3.png", renders / "diverse" / f"{LAYERS[0]}_3_1.png"]
    for render in newer:  # newer than their thumbnail and preview: those two are made again
        os.utime(render, ns=(time.time_ns(),) * 2)
    compact = [*out.glob("*/thumbs/*.webp"), *out.glob("*/renders/**/*.webp")]
    made = {p: p.stat().st_mtime_ns for p in compact}
    searched, measured = [], []
    real_search, real_links = site_data.top_patches, site_data.unit_links
    monkeypatch.setattr(site_data, "top_patches", lambda model, images, layer, units, **kw:
                        searched.append((layer, units)) or real_search(model, images, layer,
                                                                       units, **kw))
    monkeypatch.setattr(site_data, "unit_links", lambda model, layer, units, images, **kw:
                        measured.append((layer, units)) or real_links(model, layer, units,
                                                                      images, **kw))
    monkeypatch.setattr(Renderer, "_render_stacked", lambda *a: pytest.fail("re-rendered"))
    assert main(ARGS + ["--out", str(out)]) == 0
    assert searched == [(LAYERS[1], [2])] and measured == [(LAYERS[0], [5])]
    assert (out / LAYERS[1] / "examples" / "top_2_0.webp").is_file()
    assert sorted(p for p in compact if p.stat().st_mtime_ns != made[p]) == sorted(
        [out / LAYERS[0] / "thumbs" / "3.webp", newer[1].with_suffix(".webp")])
    for page in ("index.html", f"{LAYERS[1]}/7.html", f"{LAYERS[1]}/index.html"):
        assert _without_search_data(out / page) == _without_search_data(site / page), page


def _photo_folder(folder: Path) -> Path:
    """Photos in three formats, one in a subfolder, and a file that is not an image."""
    (folder / "more").mkdir(parents=True)
    for (_, image), path in zip(sample_photos(), ["a.png", "b.webp", "more/c.bmp"]):
        Image.fromarray((square_resize(image, 48) * 255).astype(np.uint8)).save(folder / path)
    (folder / "more" / "broken.gif").write_text("not an image")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_a_folder_is_searched_recursively_in_any_format(tmp_path):
    folder = _photo_folder(tmp_path / "photos")
    photos = PhotoSource(folder, 32)
    with pytest.warns(UserWarning, match="broken.gif") as warned:
        for _ in range(2):  # a folder read twice warns of each bad file once
            names = [Path(name).relative_to(folder).as_posix() for name, _ in photos()]
            assert names == ["a.png", "b.webp", "more/c.bmp"]
    assert len(warned) == 1 and len(photos) == 4 and len(iter_images(folder)) == 4
    key = photos.key
    (folder / "more" / "c.bmp").unlink()
    assert PhotoSource(folder, 32).key != key  # other photos: another fingerprint


def test_new_photos_redo_examples_and_links_only(site, tmp_path, monkeypatch, capsys):
    out = tmp_path / "site"
    shutil.copytree(site, out)
    folder = _photo_folder(tmp_path / "photos")
    monkeypatch.setattr(Renderer, "_render_stacked", lambda *a: pytest.fail("re-rendered"))
    assert main(ARGS + ["--out", str(out), "--images", str(folder)]) == 0
    warned = capsys.readouterr().err.strip().splitlines()
    assert len(warned) == 1 and "skipped:" in warned[0] and "broken.gif" in warned[0], warned
    for layer in LAYERS:
        examples = json.loads((out / layer / "examples.json").read_text())
        assert examples["images"] == 3 and examples["settings"]["photos"] == PhotoSource(
            folder).key
        assert json.loads((out / layer / "links.json").read_text())["images"] == 3


def test_new_render_options_redo_renders_only(site, tmp_path, monkeypatch, capsys):
    out = tmp_path / "site"
    shutil.copytree(site, out)
    for name in ("top_patches", "unit_links"):
        monkeypatch.setattr(site_data, name, lambda *a, **kw: pytest.fail("searched again"))
    given, real_render = [], site_data.render_channels

    def render_on_one_device(*args, devices=None, **kwargs):  # --devices reaches each job
        return given.append(devices) or real_render(*args, devices=None, **kwargs)
    monkeypatch.setattr(site_data, "render_channels", render_on_one_device)
    loud = [a for a in ARGS if a != "--quiet"]
    assert main(loud + ["--out", str(out), "--seed", "1", "--devices", "1"]) == 0
    assert capsys.readouterr().out.startswith("estimate: about ")
    assert given == ([jax.local_devices()[:1]] * 3 + [None]) * 2  # diverse: on one device
    for view in ("", "neuron", "negative", "diverse"):  # the channel view: in renders/
        record = json.loads((out / LAYERS[0] / "renders" / view / "results.json").read_text())
        assert record["settings"]["seed"] == 1 and len(record["channels"]) == 16


@pytest.mark.parametrize("extra, message", [
    (["--layers", "conv99"], "unknown layer"),
    (["--layers", "logits"], "no spatial map"),
    (["--channels", "0-40"], "out of range"),
    (["--images", "EMPTY"], "no .jpg"),
    (["--k", "0"], "--k must be"),
    (["--devices", "9"], "--devices 9"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    extra = [str(tmp_path / "empty") if a == "EMPTY" else a for a in extra]
    assert main(ARGS + ["--out", str(tmp_path / "site")] + extra) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "site" / "index.html").exists()


SHARED = ["gallery", "--model", "tiny", "--layers", ",".join(LAYERS), "--channels", "0-2",
          "--steps", "4", "--size", "32", "--k", "2", "--diverse", "2", "--quiet"]


def test_two_processes_over_loopback_build_one_site(tmp_path, free_port):
    """Two processes join through jax.distributed and share the renders, process 0 writes the
    rest: the site is complete when both exit, and its images equal a one-process run's."""
    multi, one = tmp_path / "multi", tmp_path / "one"
    procs = [subprocess.Popen([sys.executable, "-m", "featviz", *SHARED, "--out", str(multi),
                               "--distributed", f"127.0.0.1:{free_port}", "--num-processes", "2",
                               "--process-id", str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1500:] for _, err in outs]
    assert "wrote" in outs[0][0] and "wrote" not in outs[1][0]
    pages = sorted(p.relative_to(multi).as_posix() for p in multi.rglob("*.html"))
    assert pages == sorted(["index.html"] + [f"{layer}/{name}.html" for layer in LAYERS
                                             for name in ["0", "1", "2", "index"]])
    shares = [json.loads((multi / LAYERS[0] / "renders" / f"results.p{i}.json").read_text())
              for i in range(2)]
    assert [sorted(s["channels"]) for s in shares] == [["0", "2"], ["1"]]

    assert main(SHARED + ["--out", str(one)]) == 0
    renders = sorted(p.relative_to(one) for p in one.glob("*/renders/**/*.png"))
    assert len(renders) == len(LAYERS) * 3 * 5  # per unit: 3 views, 2 diverse images
    for path in renders:
        a, b = (np.asarray(Image.open(site / path), np.int16) for site in (multi, one))
        assert np.abs(a - b).max() <= 1, path


def test_bottom_examples_are_the_lowest_units():
    model = featviz.load_model("tiny")
    photos = [(n, square_resize(im, 32)) for n, im in sample_photos()][:6]
    found = top_patches(model, iter(photos), "conv3_conv", [0, 9], k=3, size=32, batch=4,
                        progress=False)
    acts = np.asarray(model.activations(np.stack([im for _, im in photos]),
                                        layers=["conv3_conv"])["conv3_conv"])
    for c in (0, 9):
        lowest = np.sort(acts[..., c].ravel())[:3]
        np.testing.assert_allclose([e.value for e in found.bottom[c]], lowest, rtol=1e-5)
        for e in found.bottom[c]:
            i = [n for n, _ in photos].index(e.image)
            np.testing.assert_allclose(acts[i, e.y, e.x, c], e.value, rtol=1e-5)


class PooledCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return nn.Conv(4, (3, 3), name="conv2")(x)


@pytest.fixture(scope="module")
def pooled():
    """A small network that max-pools between its two convolutions; no class scores."""
    net = PooledCNN()
    params = net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    return featviz.from_linen(net, params, ["conv1", "conv2"], image_size=16)


def test_deconvnet_is_shown_only_behind_max_pooling(pooled):
    assert not has_max_pool(pooled, "conv1") and has_max_pool(pooled, "conv2")
    assert projection_rules(pooled, "conv2") == ("deconvnet", "guided")
    assert projection_rules(featviz.load_model("tiny"), "conv3") == ("guided",)


def test_a_max_pooling_network_gets_deconvnet_projections_and_no_classes(pooled, tmp_path):
    photos = PhotoSource(None, 16)
    examples = site_data.layer_examples(pooled, "conv2", [1], photos, tmp_path, k=2,
                                        image_size=16, progress=False)
    assert set(examples["channels"]["1"]["top"][0]) == {"value", "image", "patch", "deconvnet",
                                                          "guided"}
    links = site_data.layer_links(pooled, "conv2", [1], photos, tmp_path, earlier="conv1",
                                  image_size=16)
    row = links["channels"]["1"]
    assert "classes" not in row and [p for p, _ in row["contributions"]] != []


def test_links_are_activation_times_gradient():
    model = featviz.load_model("tiny")
    photos = [(n, square_resize(im, 32)) for n, im in sample_photos()][:5]
    links = unit_links(model, "conv3", [2, 7], iter(photos), earlier="conv2", size=32, batch=2)
    images = np.stack([im for _, im in photos])

    def outputs(params, x):
        acts = model.activations(x, params, ["conv2", "conv3", "logits"])
        return acts["conv2"], acts["conv3"], acts["logits"]
    before, acts, _ = outputs(model.params, images)

    def perturbed(i, delta):
        return rectifier_rules.evaluate(outputs, model.params, images, perturb={i: delta})
    for j, c in enumerate([2, 7]):
        grad = jax.grad(lambda d, c=c: perturbed(0, d)[1][..., c].mean((1, 2)).sum())(
            jnp.zeros_like(before))
        np.testing.assert_allclose(links.contributions[j], (grad * before).sum((1, 2)).mean(0),
                                   rtol=1e-4, atol=1e-6)
        for k in (0, 6):
            grad = jax.grad(lambda d, k=k: perturbed(1, d)[2][:, k].sum())(jnp.zeros_like(acts))
            expected = (grad[..., c] * acts[..., c]).sum((1, 2)).mean()
            np.testing.assert_allclose(links.classes[j, k], expected, rtol=1e-4, atol=1e-6)


def test_prefetch_passes_on_errors_and_stops_with_its_reader():
    def failing():
        yield 1
        raise OSError("disk gone")
    with pytest.raises(OSError, match="disk gone"):
        list(prefetch(failing()))
    produced = []

    def endless():
        for i in range(10**6):
            produced.append(i)
            yield i
    for i in prefetch(endless(), depth=2):
        if i == 3:
            break
    time.sleep(0.3)
    assert len(produced) < 10


class Browser:
    """Headless Chromium over the DevTools protocol: navigate, evaluate, screenshot, and
    collect console errors, uncaught exceptions and failed loads."""

    def __init__(self, executable: str, profile: Path, width=1100, height=800):
        from websockets.sync.client import connect
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a stale one from an earlier run
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 30
            while not port_file.exists() or not port_file.read_text().strip():
                assert self.proc.poll() is None and time.time() < deadline, "chromium did not start"
                time.sleep(0.1)
            port = port_file.read_text().split()[0]
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
            page = next(t for t in targets if t["type"] == "page")
            self.ws = connect(page["webSocketDebuggerUrl"], max_size=None).__enter__()
        except BaseException:
            self.proc.kill()
            raise
        self.next_id, self.events, self.errors = 0, [], []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def _receive(self) -> dict:
        message = json.loads(self.ws.recv(timeout=60))
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(str(params["args"]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(str(params["exceptionDetails"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])
        elif method:
            self.events.append(method)
        return message

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while (message := self._receive()).get("id") != self.next_id:
            pass
        assert "error" not in message, message
        return message["result"]

    def open(self, url: str) -> None:
        """Navigate and wait until the page and all its images have loaded (or failed)."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        while "Page.loadEventFired" not in self.events:
            self._receive()

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]

    def screenshot(self, path: Path, whole_page: bool = False) -> None:
        """The viewport as a PNG, or with ``whole_page`` the page from top to bottom."""
        params = {}
        if whole_page:
            width, height = self.evaluate("[document.documentElement.scrollWidth, "
                                          "document.documentElement.scrollHeight]")
            params = {"captureBeyondViewport": True,
                      "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}}
        shot = self.call("Page.captureScreenshot", format="png", **params)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.ws.__exit__(None, None, None)
        self.proc.terminate()
        self.proc.wait(timeout=10)




@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if executable is None:
        pytest.skip("no chromium on PATH; install it with `apt-get install chromium` "
                    "(.ci/run does so when it runs as root)")
    b = Browser(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


DECODED = ("Promise.all([...document.images].map(i => i.decode().then(() => i.naturalWidth, "
           "() => 0)))")


def _visit(browser, url: str) -> list[str]:
    """Open a page, check that every image decodes and the console is clean, and return its
    links' absolute URLs, each checked to name a file that is there."""
    browser.errors.clear()
    browser.open(url)
    widths = browser.evaluate(DECODED)
    assert widths and min(widths) > 0, (url, widths)
    assert browser.errors == [], (url, browser.errors)
    links = browser.evaluate("[...document.links].map(a => a.href)")
    for link in links:
        assert link.startswith("file://"), (url, link)
        target = Path(urllib.parse.unquote(urllib.parse.urlparse(link).path))
        assert target.is_file(), (url, link)
    return links


def _decoded_parts(browser) -> dict:
    """Each part of a unit's page (``data-part``) -> the natural widths of its decoded images,
    its links and its list items."""
    return browser.evaluate(
        "(async () => { const parts = {}; for (const s of document.querySelectorAll("
        "'[data-part]')) { const images = [...s.querySelectorAll('img')]; await Promise.all("
        "images.map(i => i.decode().catch(() => 0))); parts[s.dataset.part] = {widths: "
        "images.map(i => i.naturalWidth), links: [...s.querySelectorAll('a')].map(a => "
        "a.href), items: s.querySelectorAll('li').length}; } return parts; })()")


def test_browser_visits_every_page_and_link(site, browser):
    """From the index, every page is reached; each one's images decode and links resolve."""
    start = (site / "index.html").as_uri()
    queue, seen = [start], {start}
    while queue:
        for link in _visit(browser, queue.pop()):
            if link.endswith(".html") and link not in seen:
                seen.add(link)
                queue.append(link)
    assert len(seen) == 1 + len(LAYERS) * (1 + len(CHANNELS))


def test_unit_page_shows_every_part(site, browser, tmp_path):
    links = _visit(browser, (site / LAYERS[1] / "2.html").as_uri())
    parts = _decoded_parts(browser)
    assert set(UNIT_PARTS) <= set(parts), parts.keys()
    expected_images = {"channel": 1, "neuron": 1, "negative": 1, "diverse": DIVERSE,
                       "top": 2 * K, "bottom": K, "contributions": 5}
    for part, count in expected_images.items():
        widths = parts[part]["widths"]
        assert len(widths) == count and min(widths) > 0, (part, widths)
    contributors = parts["contributions"]["links"]
    assert len(contributors) == 5 and all(f"/{LAYERS[0]}/" in u for u in contributors)
    assert set(contributors) <= set(links)  # resolved by _visit
    assert parts["classes"]["items"] == 5
    browser.screenshot(tmp_path / "unit.png")
    assert (tmp_path / "unit.png").stat().st_size > 10_000


def test_class_search_lists_units_that_link_to_their_pages(site, browser):
    _visit(browser, (site / "index.html").as_uri())
    browser.call("Runtime.evaluate", expression="document.getElementById('class-search').focus()")
    browser.call("Input.insertText", text="class 3")
    results = browser.evaluate(
        "[...document.querySelectorAll('#class-results li')].map(li => ({name: "
        "li.querySelector('b').textContent, links: [...li.querySelectorAll('a')].map(a => "
        "a.href)}))")
    assert [r["name"] for r in results] == ["class 3: "], results
    units = results[0]["links"]
    assert len(units) == 8
    for url in units:
        path = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
        assert path.is_file() and path.parent.name in LAYERS, url
    assert _visit(browser, units[0])  # the best unit's page opens, its images decode
    assert browser.evaluate("document.title").endswith(Path(units[0]).stem)


SCREENSHOTS = {"index": ("index.html", "gallery_index.png"),
               "channel": ("blocks_3/5.html", "gallery_channel.png"),
               "unit": ("blocks_8/5.html", "site/unit_page.png")}


def make_screenshots(docs: Path, names=tuple(SCREENSHOTS)) -> None:
    """Build a 2-layer gallery of EfficientNet-Lite0 at full render settings and screenshot
    the pages ``names`` of ``SCREENSHOTS``."""
    work = Path(tempfile.gettempdir()) / "featviz-gallery-docs"  # a rerun resumes
    assert main(["gallery", "--layers", "blocks_3,blocks_8", "--channels", "0-15",
                 "--out", str(work / "site")]) == 0
    b = Browser(next(shutil.which(x) for x in BROWSERS if shutil.which(x)), work / "profile",
                width=1000, height=760)
    try:
        for name in names:
            page, file = SCREENSHOTS[name]
            _visit(b, (work / "site" / page).as_uri())
            (docs / file).parent.mkdir(parents=True, exist_ok=True)
            b.screenshot(docs / file, whole_page=name == "unit")
            print(f"wrote {docs / file}")
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(make_screenshots(Path(__file__).resolve().parents[1] / "docs",
                              sys.argv[1:] or tuple(SCREENSHOTS)))
