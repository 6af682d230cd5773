"""The gallery site end to end: files, resumption, bad input, and a real headless Chromium that
opens it from disk, follows its links and checks every image loads without console errors.
The tests build it from the zoo's ``tiny`` model (seeded random weights): they are about files,
links and resuming, not about what a real network learned.

Chromium is driven over the Chrome DevTools protocol with the ``websockets`` package rather
than selenium: one small pure-Python dependency, no chromedriver whose version must match the
browser's, and direct access to console and network-error events.

``python tests/test_gallery.py`` renders a larger gallery and writes the README's screenshots,
docs/gallery_index.png and docs/gallery_channel.png.
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
import urllib.request
from pathlib import Path

import pytest

from featviz import gallery
from featviz.cli import main
from featviz.engine import Renderer

LAYERS, CHANNELS = ["conv2", "conv3"], [0, 1, 2, 3]
ARGS = ["gallery", "--model", "tiny", "--layers", ",".join(LAYERS), "--channels", "0-3",
        "--steps", "16", "--size", "64", "--k", "6", "--quiet"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


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


def test_site_files_and_relative_links(site):
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    assert pages == sorted(["index.html"] + [f"{layer}/{name}.html" for layer in LAYERS
                                             for name in ["0", "1", "2", "3", "index"]])
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r"(src|href)=\"(https?:|//|/)", text), page
        for ref in re.findall(r"(?:src|href)=\"([^\"#]+)\"", text):
            assert ref.startswith("data:") or (page.parent / ref).is_file(), (page, ref)
    patches = json.loads((site / LAYERS[0] / "patches.json").read_text())
    assert sorted(patches["channels"]) == ["0", "1", "2", "3"]
    assert all(len(rows) == 6 for rows in patches["channels"].values())


def test_rerun_skips_finished_work(site, tmp_path, monkeypatch, capsys):
    out = tmp_path / "site"
    shutil.copytree(site, out)
    (out / LAYERS[1] / "patches" / "2_0.png").unlink()  # as if interrupted in channel 2
    searched = []
    real_top = gallery.top_patches
    monkeypatch.setattr(gallery, "top_patches",
                        lambda *a, **kw: searched.append(a[3]) or real_top(*a, **kw))
    monkeypatch.setattr(Renderer, "_render_stacked", lambda *a: pytest.fail("re-rendered"))
    assert main(ARGS + ["--out", str(out)]) == 0
    assert searched == [[2]]
    assert (out / LAYERS[1] / "patches" / "2_0.png").is_file()
    assert (out / "index.html").read_text() == (site / "index.html").read_text()


@pytest.mark.parametrize("extra, message", [
    (["--layers", "conv99"], "unknown layer"),
    (["--layers", "logits"], "no spatial map"),
    (["--channels", "0-40"], "out of range"),
    (["--images", "EMPTY"], "no .jpg"),
    (["--k", "0"], "--k must be"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, extra, message):
    (tmp_path / "empty").mkdir()
    extra = [str(tmp_path / "empty") if a == "EMPTY" else a for a in extra]
    assert main(ARGS + ["--out", str(tmp_path / "site")] + extra) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "site" / "index.html").exists()


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

    def screenshot(self, path: Path) -> None:
        shot = self.call("Page.captureScreenshot", format="png")
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


def _visit(browser, url: str) -> list[str]:
    """Open a page, check its images and console, and return its links' absolute URLs."""
    browser.errors.clear()
    browser.open(url)
    widths = browser.evaluate("[...document.images].map(i => i.naturalWidth)")
    assert widths and min(widths) > 0, (url, widths)
    assert browser.errors == [], (url, browser.errors)
    return browser.evaluate("[...document.links].map(a => a.href)")


def test_browser_follows_index_to_atlas_to_channel(site, browser, tmp_path):
    index_links = _visit(browser, (site / "index.html").as_uri())
    atlas = next(u for u in index_links if u.endswith(f"{LAYERS[1]}/index.html"))
    atlas_links = _visit(browser, atlas)
    channel = next(u for u in atlas_links if u.endswith(f"{LAYERS[1]}/2.html"))
    channel_links = _visit(browser, channel)
    assert {u.rsplit("/", 2)[-2] + "/" + u.rsplit("/", 1)[-1] for u in channel_links} >= {
        f"{LAYERS[1]}/index.html", f"{LAYERS[1]}/1.html", f"{LAYERS[1]}/3.html"}
    n_images = browser.evaluate("document.images.length")
    assert n_images == 1 + 3 * 6  # the visualization, then 6 patches, each with 2 projections
    browser.screenshot(tmp_path / "channel.png")
    assert (tmp_path / "channel.png").stat().st_size > 10_000


def make_screenshots(docs: Path) -> None:
    """Build a 2-layer gallery at full render settings and screenshot two of its pages."""
    work = Path(tempfile.gettempdir()) / "featviz-gallery-docs"  # a rerun resumes
    assert main(["gallery", "--layers", "blocks_3,blocks_8", "--channels", "0-11", "--steps", "256",
                 "--out", str(work / "site")]) == 0
    b = Browser(next(shutil.which(x) for x in BROWSERS if shutil.which(x)), work / "profile",
                width=1000, height=760)
    try:
        for page, name in [("index.html", "gallery_index.png"),
                           ("blocks_3/5.html", "gallery_channel.png")]:
            _visit(b, (work / "site" / page).as_uri())
            b.screenshot(docs / name)
    finally:
        b.close()
    print(f"wrote {docs / 'gallery_index.png'} and {docs / 'gallery_channel.png'}")


if __name__ == "__main__":
    sys.exit(make_screenshots(Path(__file__).resolve().parents[1] / "docs"))
