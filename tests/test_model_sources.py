"""``--model`` with a user's own model: a saved Keras file (.keras, .h5), a factory
(``package.module:function``, ``path/to/file.py:function``), and ``keras:NAME`` from Keras's
cache or its download; every mistake a one-line error. Nothing is downloaded: the one download
the tests start goes to an unreachable proxy."""
import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from PIL import Image

import featviz
from featviz.cli import main
from featviz.models import keras as fk

keras = fk._import_keras()
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# a proxy nothing listens on: any download fails at once, whatever the network
NO_NETWORK = {name: "http://127.0.0.1:9" for name in
              ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")}

LINEN_FACTORY = """
    import flax.linen as nn
    import jax
    import jax.numpy as jnp


    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
            x = nn.relu(nn.Conv(6, (3, 3), strides=2, name="conv2")(x))
            self.sow("intermediates", "relu2", x)
            return nn.Dense(3, name="head")(x.mean((1, 2)))


    def build():
        net = Net()
        return net, net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


    def named():
        return (*build(), ["conv2"])


    def not_a_model():
        return 42


    def needs(size):
        return build()
"""

NNX_FACTORY = """
    from flax import nnx


    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(3, 5, (3, 3), rngs=rngs)
            self.conv2 = nnx.Conv(5, 7, (3, 3), strides=2, rngs=rngs)

        def __call__(self, x):
            return self.conv2(nnx.relu(self.conv1(x))).mean((1, 2))


    def build():
        return Net(nnx.Rngs(0))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A seeded Keras CNN (conv1..conv3, 32 px input), trained two steps on random data and
    saved as mine.keras and mine.h5; (network, folder)."""
    folder = tmp_path_factory.mktemp("keras-model")
    rng = np.random.default_rng(0)
    with fk.numpy_initializers(rng):
        net = keras.Sequential([keras.Input((32, 32, 3)),
                                keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
                                keras.layers.Conv2D(8, 3, strides=2, activation="relu",
                                                    name="conv2"),
                                keras.layers.Conv2D(8, 3, activation="relu", name="conv3"),
                                keras.layers.GlobalAveragePooling2D(name="pool"),
                                keras.layers.Dense(4, name="out")], name="mine")
    net.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(True))
    for _ in range(2):
        net.train_on_batch(rng.uniform(size=(4, 32, 32, 3)), rng.integers(0, 4, 4))
    net.save(folder / "mine.keras")
    with warnings.catch_warnings():  # Keras calls .h5 legacy; it is still a Keras model file
        warnings.simplefilter("ignore")
        net.save(folder / "mine.h5")
    return net, folder


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A package on the Python path (``user_nets.mod``: a linen module and its variables) and a
    file elsewhere (``nets.py``: an nnx module); the folder holding both."""
    (tmp_path / "user_nets").mkdir()
    (tmp_path / "user_nets" / "__init__.py").write_text("")
    (tmp_path / "user_nets" / "mod.py").write_text(textwrap.dedent(LINEN_FACTORY))
    (tmp_path / "user_nets" / "broken.py").write_text("import not_installed_anywhere\n")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "nets.py").write_text(textwrap.dedent(NNX_FACTORY))
    (tmp_path / "files" / "bad.py").write_text("def build():\n    return (\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("user_nets.mod", "user_nets.broken", "user_nets"):
        sys.modules.pop(name, None)


def _layers(capsys, model: str, *extra) -> list[tuple[str, str]]:
    """``featviz layers --model MODEL``: (layer, shape) per line."""
    assert main(["layers", "--model", model, *extra]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[1:]
    return [re.match(r"(\S+)\s+(\(.*?\))", row).groups() for row in rows]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featviz: error:"), err
    return err[0]


@pytest.mark.parametrize("file", ["mine.keras", "mine.h5"])
def test_a_saved_keras_model_is_a_model(saved, file, capsys):
    net, folder = saved
    assert _layers(capsys, str(folder / file)) == [
        ("conv1", "(30, 30, 8)"), ("conv2", "(14, 14, 8)"), ("conv3", "(12, 12, 8)"),
        ("out", "(4,)")]
    model = featviz.load_model(str(folder / file))
    assert model.image_size == 32
    images = np.random.default_rng(1).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    ours = model.activations(images, layers=["conv3", "out"])
    theirs = keras.Model(net.inputs[0], [net.get_layer(n).output for n in ("conv3", "out")])(images)
    for name, ref in zip(["conv3", "out"], theirs):
        np.testing.assert_allclose(ours[name], np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_atlas_and_gallery_of_a_saved_keras_model(saved, tmp_path, capsys):
    model = str(saved[1] / "mine.keras")
    atlas = tmp_path / "atlas.png"
    assert main(["atlas", "--model", model, "--layer", "conv3", "--channels", "0-3",
                 "--steps", "4", "--size", "32", "--quiet", "--out", str(atlas)]) == 0
    with Image.open(atlas) as image:
        assert image.format == "PNG" and min(image.size) >= 64
    photos = tmp_path / "photos"  # a few small ones: the top patches are not what is tested
    photos.mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"{i}.png")
    site = tmp_path / "site"
    assert main(["gallery", "--model", model, "--layers", "conv2,conv3", "--channels", "0-7",
                 "--steps", "4", "--size", "32", "--k", "2", "--images", str(photos), "--quiet",
                 "--out", str(site)]) == 0
    page = (site / "index.html").read_text()
    assert "conv2" in page and "conv3" in page
    assert len(list((site / "conv3").rglob("*.png"))) >= 8
    capsys.readouterr()


def test_factories_from_a_module_and_from_a_file(factories, capsys):
    assert _layers(capsys, "user_nets.mod:build", "--size", "32") == [
        ("conv1", "(32, 32, 4)"), ("conv2", "(16, 16, 6)"), ("head", "(3,)"),
        ("relu2", "(16, 16, 6)")]
    assert _layers(capsys, "user_nets.mod:named", "--size", "32") == [("conv2", "(16, 16, 6)")]
    nets = str(factories / "files" / "nets.py")
    assert _layers(capsys, f"{nets}:build", "--size", "32") == [
        ("conv1", "(32, 32, 5)"), ("conv2", "(16, 16, 7)")]
    out = factories / "atlas.png"
    assert main(["atlas", "--model", "user_nets.mod:build", "--layer", "conv2", "--channels",
                 "0-1", "--steps", "4", "--size", "32", "--quiet", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    capsys.readouterr()


def _junk_files(folder):
    (folder / "junk.keras").write_text("not a model")
    return folder


@pytest.mark.parametrize("model, expected", [
    ("{tmp}/missing.keras", "no Keras model file at {tmp}/missing.keras"),
    ("{tmp}/junk.keras", "{tmp}/junk.keras is not a Keras model file (neither a .keras "
                         "archive nor an HDF5 file)"),
    ("no_such_package_here.mod:build", "cannot import no_such_package_here.mod (no module "
                                       "'no_such_package_here'"),
    ("user_nets.broken:build", "user_nets.broken imports 'not_installed_anywhere', which is "
                               "not installed"),
    ("user_nets.mod:nothere", "user_nets.mod has no 'nothere' (it defines Net, build, named, "
                              "not_a_model, needs)"),
    ("user_nets.mod:not_a_model", "user_nets.mod:not_a_model returned a value of type int, "
                                  "not a model"),
    ("user_nets.mod:needs", "needs arguments (size)"),
    ("{tmp}/files/bad.py:build", "{tmp}/files/bad.py, line 2: "),
    ("{tmp}/files/absent.py:build", "no Python file at {tmp}/files/absent.py"),
    ("{tmp}/files/nets.py", "unknown model '{tmp}/files/nets.py' ({tmp}/files/nets.py names no "
                            "function: give {tmp}/files/nets.py:FUNCTION)"),
])
def test_each_mistake_is_one_line(factories, capsys, model, expected):
    tmp = str(_junk_files(factories))
    assert main(["layers", "--model", model.format(tmp=tmp)]) == 2
    assert expected.format(tmp=tmp) in _error_line(capsys)


def test_a_saved_model_brings_its_own_weights(saved, capsys):
    folder = saved[1]
    assert main(["layers", "--model", str(folder / "mine.keras"), "--weights",
                 str(folder / "mine.h5")]) == 2
    assert "--weights FILE goes with a zoo model or keras:NAME" in _error_line(capsys)


def test_a_weights_only_file_is_not_a_model(saved, tmp_path, capsys):
    weights = tmp_path / "mine.weights.h5"
    saved[0].save_weights(weights)
    assert main(["layers", "--model", str(weights)]) == 2
    line = _error_line(capsys)
    assert f"cannot load {weights} as a Keras model" in line and "factory" in line


def test_keras_application_from_keras_cache_without_network(tmp_path, monkeypatch, capsys):
    """A weights file where Keras keeps what it downloads is used as it is."""
    app = fk.APPLICATIONS["MobileNet"]
    cached = tmp_path / "models" / app.top_url.rsplit("/", 1)[1]
    cached.parent.mkdir()
    with fk.numpy_initializers(np.random.default_rng(0)):
        net = keras.applications.MobileNet(weights=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net.save(cached)
    for name, value in {"KERAS_HOME": str(tmp_path), **NO_NETWORK}.items():
        monkeypatch.setenv(name, value)
    model = featviz.load_model("keras:MobileNet")
    theirs = featviz.from_keras(net).params
    shared = [k for k in theirs if "seed_generator" not in k]
    assert len(shared) > 100 and set(shared) <= set(model.params)
    assert all(np.array_equal(model.params[k], theirs[k]) for k in shared)
    assert ("conv_pw_13_relu", "(7, 7, 1024)") in _layers(capsys, "keras:MobileNet")


def test_keras_application_offline_says_what_to_fetch_and_where(tmp_path):
    """No cached file and no network: one line with the URL Keras fetches and the path it
    keeps the file at, exit status 2 (in a process of its own, whose proxy is unreachable)."""
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update(NO_NETWORK, KERAS_HOME=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "featviz", "layers", "--model",
                          "keras:MobileNet"], env=env, capture_output=True, text=True,
                         timeout=300)
    app = fk.APPLICATIONS["MobileNet"]
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert f"fetch {app.top_url} and save it as " \
           f"{tmp_path / 'models' / app.top_url.rsplit('/', 1)[1]}" in err[0]
    assert "--weights FILE" in err[0] and not list((tmp_path / "models").iterdir())
