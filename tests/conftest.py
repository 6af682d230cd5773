import os

# Tests run few steps, so compile time is what counts: XLA:CPU with less LLVM optimization
# compiles a render program in about 0.6-0.75x the time and runs its steps about 1.8x slower
# (EfficientNet-Lite0, 2 cores); at that level, XLA's older (non-MLIR) fusion emitters compile
# it in about 0.75x the time again, and run its steps no slower. Set before JAX starts its
# backend; subprocesses inherit it.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                                 "--xla_backend_optimization_level=2",
                                                 "--xla_cpu_use_fusion_emitters=false"]))

# Keras (tests/test_keras.py, docstring examples) runs on JAX; set before keras is imported.
os.environ.setdefault("KERAS_BACKEND", "jax")

import logging
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import featviz


class TinyCNN(nn.Module):
    """A small random CNN: conv-relu-conv-relu-dense."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, name="conv1")(x))
        self.sow("intermediates", "relu1", x)
        x = nn.relu(nn.Conv(16, (3, 3), strides=2, name="conv2")(x))
        self.sow("intermediates", "relu2", x)
        return nn.Dense(10, name="fc")(x.mean(axis=(1, 2)))


class CompileLog(logging.Handler):
    """Names of the programs JAX traces and lowers (compiled, or loaded from the cache)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.programs = []

    def emit(self, record):
        found = re.match(r"Compiling jit\((\w+)\)", record.getMessage())
        if found:
            self.programs.append(found.group(1))


@pytest.fixture
def compilations():
    """The names of the programs traced and lowered while a test runs (the render program's is
    ``run_segment``); a program loaded from featviz's program store is not traced."""
    log, logger = CompileLog(), logging.getLogger("jax")
    old_level = logger.level
    logger.addHandler(log)
    logger.setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    yield log.programs
    jax.config.update("jax_log_compiles", False)
    logger.removeHandler(log)
    logger.setLevel(old_level)


LONGEST_FIRST = ("test_notebooks.py", "test_docs.py::test_readme")


def pytest_collection_modifyitems(items):
    """The longest tests (each a fresh kernel or many programs) start first, so that the
    workers of ``pytest -n`` finish together."""
    items.sort(key=lambda item: not any(s in item.nodeid for s in LONGEST_FIRST))


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent XLA cache for this test run (its processes included), empty at the start:
    a program that several tests compile is compiled once, as for a user of the CLI."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers of one run share their cache
        root = root.parent
    path = str(root / "xla-cache")
    os.makedirs(path, exist_ok=True)
    os.environ["FEATVIZ_CACHE_DIR"] = os.environ["JAX_COMPILATION_CACHE_DIR"] = path
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      featviz.cache.MIN_COMPILE_SECONDS)


@pytest.fixture
def free_port() -> int:
    """A loopback port free now, for a test's ``jax.distributed`` coordinator."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model():
    net = TinyCNN()
    params = net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return featviz.from_linen(net, params, ["conv1", "relu1", "relu2", "fc"], image_size=32)


@pytest.fixture(scope="session")
def lite0():
    return featviz.load_model()


@pytest.fixture(scope="session")
def grace_hopper():
    import matplotlib.cbook
    return matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
