"""MaCo: phase-only parameterization with the photos' amplitude, its transforms and the
transparency map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import featviz
from featviz import objectives as obj, param, transforms as T


def _decorrelated(img):
    """The standardized decorrelated image that ``maco``'s sigmoid and colour mixing map to
    ``img`` (both inverted)."""
    img = np.asarray(img, np.float64)
    return np.log(img / (1 - img)) @ np.linalg.inv(param.COLOR_CORRELATION.astype(np.float64)).T


def _real_bins(size):
    """The bins of an rfft2 layout that must be real: fy and fx each 0 or 1/2."""
    real = np.zeros((size, size // 2 + 1), bool)
    ends = [0, size // 2] if size % 2 == 0 else [0]
    real[np.ix_(ends, [0, size // 2] if size % 2 == 0 else [0])] = True
    return real


@pytest.mark.parametrize("size", [16, 17])
def test_only_the_phase_is_a_parameter_and_the_amplitude_is_the_photos(size):
    p = param.maco(size)
    params = p.init(jax.random.key(0))
    assert jax.tree_util.tree_leaves(params)[0] is params  # one array: the phases
    magnitude = param.maco_magnitude(size)
    assert params.shape == magnitude.shape == (size, size // 2 + 1, 3)
    to_image = jax.jit(p.to_image)
    for key in (0, 1):  # an initial image and a moved one: the same amplitude up to a scale
        phase = p.init(jax.random.key(key)) + key * jax.random.normal(jax.random.key(9),
                                                                      magnitude.shape)
        amplitude = np.abs(np.fft.rfft2(_decorrelated(to_image(phase)), axes=(0, 1),
                                        norm="ortho"))
        keep = ~_real_bins(size)
        keep[0, 0] = False  # the mean, removed by the standardization
        ratio = amplitude[keep] / magnitude[keep]
        np.testing.assert_allclose(ratio, np.median(ratio), rtol=2e-3)


def test_magnitude_at_the_reference_size_is_the_stored_one_and_other_sizes_sample_it():
    stored = np.load(param.MACO_SPECTRUM).astype(np.float32)
    ref = stored.shape[0]
    np.testing.assert_array_equal(param.maco_magnitude(ref), stored)
    double = param.maco_magnitude(2 * ref)  # every other bin is a reference frequency
    np.testing.assert_allclose(double[2::2, 2::2], stored[1:, 1:], rtol=1e-5)
    assert double[0, 0].tolist() == pytest.approx((2 * stored[0, 0]).tolist())
    for size in (31, 64, 100):
        m = param.maco_magnitude(size)
        assert m.shape == (size, size // 2 + 1, 3) and np.isfinite(m).all() and (m > 0).all()


@pytest.mark.parametrize("size", [16, 33])
def test_images_are_rgb_in_range(size):
    p = param.maco(size)
    to_image = jax.jit(p.to_image)
    for key in range(3):
        img = np.asarray(to_image(p.init(jax.random.key(key)) * (key + 1)))
        assert img.shape == (size, size, 3) and img.min() >= 0 and img.max() <= 1
        assert img.std() > 0.05  # a visible picture, not a flat grey


def test_random_crop_stays_on_the_canvas_and_its_gradient_is_the_transpose():
    img, g = jax.random.uniform(jax.random.key(0), (2, 13, 17, 3))
    matrix, shift = 0.6 * jnp.eye(2), jnp.array([-2.5, 3.25])
    reach = T._reach(1 / 0.6, np.zeros(1))
    coords = T._shifted(T._source_coords(matrix, 13, 17), shift)
    autodiff = jax.jit(jax.grad(lambda x: (T._bilinear(x, *coords, 0.5) * g).sum()))(img)
    ours = jax.jit(jax.grad(lambda x: (T._warp(x, matrix, reach, 0.5, shift) * g).sum()))(img)
    np.testing.assert_allclose(ours, autodiff, atol=1e-5)
    crop = T.random_crop((0.5, 1.0), fill=-100.0)  # any sample off the canvas would show
    out = jax.jit(jax.vmap(crop))(jax.random.split(jax.random.key(1), 8), jnp.ones((8, 20, 20, 3)))
    np.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_maco_render_rises_repeats_and_gives_a_transparency_map(tiny_model, compilations):
    from featviz.engine import SEGMENT as segment
    steps = segment + 8  # two segments: the map carries over
    r = featviz.Renderer(tiny_model, size=32, steps=steps, param=param.maco(32), transparency=True,
                         lr_ramp=(1, 1))  # the same rate at each step, whatever the length
    channels = [0, 3]
    keys = featviz.channel_keys(0, channels)
    objectives = [obj.channel("relu2", c) for c in channels]
    out = r(objectives, keys)
    assert out.images.shape == (2, 32, 32, 3)
    assert (out.trace[:, -4:].mean(1) > out.trace[:, :4].mean(1)).all()
    assert out.transparency.shape == (2, 32, 32)
    assert (out.transparency >= 0).all() and (out.transparency.reshape(2, -1).max(1) > 0).all()
    again = r(objectives, keys)
    np.testing.assert_array_equal(again.images, out.images)
    np.testing.assert_array_equal(again.transparency, out.transparency)
    first_segment = r(objectives, keys, steps=segment).transparency
    assert (out.transparency >= first_segment).all()
    assert (out.transparency.sum((1, 2)) > first_segment.sum((1, 2))).all()
    assert compilations.count("run_segment") == 1


def test_name_table_builds_each_parameterization():
    for name, build in param.PARAMETERIZATIONS.items():
        p = build(16)
        params = jax.eval_shape(p.init, jax.random.key(0))
        assert jax.eval_shape(p.to_image, params).shape == (16, 16, 3), name
    assert param.PARAMETERIZATIONS["maco"](16).transforms is T.maco_transforms
