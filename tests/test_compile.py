"""Compilation: one program per job, none for another seed, step count, learning rate or set
of channels, and compiled programs found again by a new process in the persistent cache."""
import os
import subprocess
import sys

import numpy as np
import pytest

import featviz
from featviz import jobs, objectives as obj
from featviz.engine import SEGMENT


def test_atlas_of_a_layer_compiles_one_render_program(lite0, tmp_path, compilations):
    result = jobs.render_channels(lite0, "blocks_1", range(12), tmp_path / "a", steps=40,
                                  size=32, chunk=4, progress=False)
    assert len(result.records) == 12
    assert compilations.count("run_segment") == 1, compilations
    # besides: the keys, and the final images' objectives through the model's forward program
    assert set(compilations) <= {"run_segment", "forward", "evaluate"}, compilations


def test_other_steps_seed_lr_channels_compile_nothing(lite0, compilations):
    renderer = featviz.Renderer(lite0, size=32, steps=8)
    first = renderer([obj.channel("blocks_1", c) for c in (0, 1)], featviz.channel_keys(0, [0, 1]))
    compilations.clear()
    other = renderer([obj.channel("blocks_1", c) for c in (5, 9)], featviz.channel_keys(3, [5, 9]),
                     steps=45, lr=0.02, redirect_steps=0)
    assert compilations == []
    assert other.trace.shape == (2, 45) and first.trace.shape == (2, 8)
    assert not np.array_equal(first.images, other.images)


def test_steps_in_segments_equal_one_long_run(tiny_model):
    """Steps split over program calls continue exactly where the last call stopped."""
    renderer = featviz.Renderer(tiny_model, size=32, lr_ramp=(1, 1))  # a rate for any length
    objs, keys = [obj.channel("conv1", 2)], featviz.channel_keys(0, [2])
    long = renderer(objs, keys, steps=SEGMENT * 2 + 5)
    again = renderer(objs, keys, steps=SEGMENT * 2 + 5)
    short = renderer(objs, keys, steps=SEGMENT + 1)
    np.testing.assert_array_equal(long.images, again.images)
    np.testing.assert_array_equal(long.trace[:, :SEGMENT + 1], short.trace)


def test_learning_rate_is_data_and_changes_the_image(tiny_model, compilations):
    renderer = featviz.Renderer(tiny_model, size=32, steps=8)
    objs, keys = [obj.channel("conv1", 1)], featviz.channel_keys(0, [1])
    slow, fast = renderer(objs, keys, lr=0.001), renderer(objs, keys, lr=0.1)
    assert compilations.count("run_segment") == 1
    assert fast.final[0] > slow.final[0]


def test_learning_rate_ramp_is_data(tiny_model, compilations):
    """A flat ramp at twice the rate is that rate, to the bit; a falling ramp is another
    render; neither compiles again."""
    renderer = featviz.Renderer(tiny_model, size=32, steps=SEGMENT + 3)
    objs, keys = [obj.channel("conv1", 1)], featviz.channel_keys(0, [1])
    doubled = renderer(objs, keys, lr=0.05, lr_ramp=(2, 2))
    flat = renderer(objs, keys, lr=0.1, lr_ramp=(1, 1))
    falling = renderer(objs, keys, lr=0.1, lr_ramp=(1.5, 0.5))
    assert compilations.count("run_segment") == 1
    np.testing.assert_array_equal(doubled.images, flat.images)
    assert np.abs(falling.images - flat.images).max() > 0.01


@pytest.mark.parametrize("ramp", [(1,), (1, 0), (1, float("inf")), (1, float("nan")),
                                  (1e38, 1), (1e-300, 1), "fast", "11"])
def test_learning_rate_ramp_must_be_two_reasonable_numbers(tiny_model, ramp):
    with pytest.raises(ValueError, match="lr_ramp must be two numbers"):
        featviz.Renderer(tiny_model, size=32, lr_ramp=ramp)


def test_a_custom_optimizer_keeps_its_own_rate_unless_told(tiny_model):
    import optax

    objs, keys = [obj.channel("conv1", 1)], featviz.channel_keys(0, [1])
    def render(**settings):
        return featviz.Renderer(tiny_model, size=32, steps=6, **settings)(objs, keys).images
    injected = optax.inject_hyperparams(optax.adam)
    own = render(optimizer=injected(learning_rate=0.1))
    np.testing.assert_array_equal(own, render(lr=0.1, lr_ramp=(1, 1)))
    np.testing.assert_array_equal(own, render(optimizer=injected(learning_rate=0.1),
                                              lr=0.05, lr_ramp=(2, 2)))
    scheduled = injected(learning_rate=optax.linear_schedule(0.1, 0.01, 6))
    for settings in ({"lr": 0.2}, {"lr_ramp": (1, 1)}):
        with pytest.raises(ValueError, match="sets its own learning rate"):
            featviz.Renderer(tiny_model, size=32, optimizer=scheduled, **settings)
    with pytest.raises(ValueError, match="sets its own learning rate"):
        featviz.Renderer(tiny_model, size=32, optimizer=optax.adam(0.1), lr_ramp=(3, 3))


def test_optimizer_with_a_fixed_rate_refuses_a_per_call_rate(tiny_model):
    import optax

    with pytest.raises(ValueError, match="sets its own learning rate"):
        featviz.Renderer(tiny_model, size=32, optimizer=optax.adam(0.1), lr=0.2)


def _render_in_a_new_process(cache_dir, out, *args):
    env = dict(os.environ, FEATVIZ_CACHE_DIR=str(cache_dir), JAX_COMPILATION_CACHE_DIR="",
               JAX_LOG_COMPILES="1")
    run = subprocess.run([sys.executable, "-m", "featviz", "render", "--layer", "blocks_3",
                          "--size", "64", "--quiet", "--out", str(out), *args],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stderr


def test_stored_program_is_loaded_by_another_process_with_other_settings(tmp_path):
    """Nothing run-specific enters the program's key: a second process with another seed, step
    count, learning rate and channels loads the first one's program without tracing it."""
    cache = tmp_path / "cache"
    first = _render_in_a_new_process(cache, tmp_path / "a", "--channels", "0-3", "--steps", "8")
    assert "Compiling jit(run_segment)" in first
    assert len(list((cache / "programs").iterdir())) == 1
    second = _render_in_a_new_process(cache, tmp_path / "b", "--channels", "4-7", "--steps", "40",
                                      "--seed", "5", "--lr", "0.02")
    assert "Compiling jit(run_segment)" not in second
    assert len(list((tmp_path / "b").glob("*.png"))) == 4


ADAPTED_MODEL_RENDER = """
import sys, flax.linen as nn, jax, jax.numpy as jnp, featviz
class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.Conv(4, (3, 3), name="conv")(x))
net = Net()
model = featviz.from_linen(net, net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))), ["conv"])
seed, steps = int(sys.argv[1]), int(sys.argv[2])
featviz.Renderer(model, size=32)([featviz.objectives.channel("conv", 1)],
                                 featviz.channel_keys(seed, [1]), steps=steps)
"""


def test_adapted_model_program_is_found_in_jax_cache_by_another_process(tmp_path):
    """A module of your own is keyed by JAX's persistent cache (by its lowered program), which
    another process with other settings hits."""
    env = dict(os.environ, FEATVIZ_CACHE_DIR=str(tmp_path), JAX_COMPILATION_CACHE_DIR="",
               JAX_LOG_COMPILES="1")
    runs = [subprocess.run([sys.executable, "-c", ADAPTED_MODEL_RENDER, seed, steps],
                           capture_output=True, text=True, env=env, timeout=600)
            for seed, steps in (("0", "4"), ("3", "40"))]
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr[-2000:]
    assert "Persistent compilation cache hit for 'jit_run_segment'" not in runs[0].stderr
    assert "Persistent compilation cache hit for 'jit_run_segment'" in runs[1].stderr
    assert not (tmp_path / "programs").exists()


def test_a_program_loaded_from_jax_cache_is_not_stored(tmp_path):
    """An executable JAX loaded from its own cache serializes without all of its compiled
    functions; storing it once gave a program that failed when run by the next process."""
    cache = tmp_path / "cache"
    _render_in_a_new_process(cache, tmp_path / "a", "--channels", "0-1", "--steps", "4")
    for entry in (cache / "programs").iterdir():
        entry.unlink()
    _render_in_a_new_process(cache, tmp_path / "b", "--channels", "0-1", "--steps", "4")
    assert not any((cache / "programs").iterdir())
    _render_in_a_new_process(cache, tmp_path / "c", "--channels", "2-3", "--steps", "4")
    assert len(list((tmp_path / "c").glob("*.png"))) == 2


def test_damaged_stored_program_is_compiled_again(tmp_path, monkeypatch, compilations):
    from featviz import cache, programs
    monkeypatch.setattr(cache, "cache_dir", lambda: str(tmp_path))
    model = featviz.load_model("tiny")
    objs, keys = [obj.channel("conv2", 1)] * 3, featviz.channel_keys(0, [1] * 3)
    first = featviz.Renderer(model, size=40, steps=4)(objs, keys)  # a program no other test has
    [entry] = (tmp_path / "programs").iterdir()
    entry.write_bytes(b"not a program")
    compilations.clear()
    again = featviz.Renderer(model, size=40, steps=4)
    np.testing.assert_array_equal(again(objs, keys).images, first.images)
    # removed, and compiled instead
    assert compilations.count("run_segment") == 1 and not entry.exists()
    assert programs.load(entry.stem) is None


def test_program_key_separates_forms_layers_and_batches():
    from featviz.programs import objective_signature as sig
    batch = lambda layer, n: obj.stack([obj.channel(layer, c) for c in range(n)])  # noqa: E731
    signatures = {sig(batch("conv1", 2)), sig(batch("conv2", 2)), sig(batch("conv1", 3)),
                  sig(obj.stack([obj.neuron("conv1", 0)] * 2)), sig(obj.channel("conv1", 0) * 2)}
    assert len(signatures) == 5 and None not in signatures


def test_only_default_settings_use_the_program_store(tiny_model):
    zoo = featviz.load_model("tiny")
    objs, keys = obj.stack([obj.channel("conv2", 1)]), featviz.channel_keys(0, [1])
    assert featviz.Renderer(zoo, size=32)._store_key(objs, keys) is not None
    for settings in ({"transforms": []}, {"param": featviz.param.image(32, fft=False)},
                     {"transparency": True}):
        assert featviz.Renderer(zoo, size=32, **settings)._store_key(objs, keys) is None
    assert featviz.Renderer(tiny_model, size=32)._store_key(objs, keys) is None  # adapted module


def test_cpu_matmul_kernels_are_xlas_default_unless_asked(monkeypatch):
    from featviz.compiler import compiler_options
    monkeypatch.delenv("FEATVIZ_CPU_MATMULS", raising=False)
    assert compiler_options("cpu") == {} and compiler_options("gpu") == {}
    monkeypatch.setenv("FEATVIZ_CPU_MATMULS", "xla")
    assert compiler_options("cpu") == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert compiler_options("gpu") == {}


def test_the_segment_form_follows_the_network_and_platform(lite0, tiny_model, monkeypatch):
    """On a CPU a network that runs XLA convolutions steps on the host, one step per call;
    EfficientNet-Lite0 (shifted multiplies and matmuls there) keeps the rolled loop."""
    from featviz.engine import LOOP_ENV, segment_loop
    from featviz.errors import ConfigError
    monkeypatch.delenv(LOOP_ENV, raising=False)
    assert segment_loop(lite0, "cpu", 64) == "rolled"
    assert segment_loop(tiny_model, "cpu", 32) == "host"
    assert segment_loop(tiny_model, "gpu", 32) == "rolled"
    assert featviz.Renderer(tiny_model, size=32).settings.steps_per_call == 1
    monkeypatch.setenv(LOOP_ENV, "unroll4")
    assert featviz.Renderer(lite0, size=32).settings.loop == "unroll4"
    monkeypatch.setenv(LOOP_ENV, "unrolled")
    with pytest.raises(ConfigError, match="FEATVIZ_SEGMENT_LOOP='unrolled'"):
        featviz.Renderer(tiny_model, size=32)


@pytest.mark.parametrize("loop", ["rolled", "unroll2", "host"])
def test_every_segment_form_renders_the_same_images(tiny_model, monkeypatch, compilations, loop):
    """Each form runs the same steps: the images and traces of a render that ends inside a
    segment agree (up to rounding), and another step count or seed compiles nothing."""
    from featviz.engine import LOOP_ENV
    objs, keys = [obj.channel("relu2", c) for c in (1, 4)], featviz.channel_keys(0, [1, 4])
    monkeypatch.setenv(LOOP_ENV, "rolled")
    rolled = featviz.Renderer(tiny_model, size=32)(objs, keys, steps=SEGMENT + 5)
    monkeypatch.setenv(LOOP_ENV, loop)
    renderer = featviz.Renderer(tiny_model, size=32)
    renderer(objs, featviz.channel_keys(2, [1, 4]), steps=3)
    compilations.clear()
    result = renderer(objs, keys, steps=SEGMENT + 5)
    assert compilations == [] and result.trace.shape == (2, SEGMENT + 5)
    np.testing.assert_allclose(result.images, rolled.images, atol=1e-4)
    np.testing.assert_allclose(result.trace, rolled.trace, rtol=1e-4, atol=1e-5)
