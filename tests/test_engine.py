"""Objectives, parameterizations, transforms and the batched, compiled renderer."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import featviz
from featviz import draws, objectives as obj, param, transforms as T

# --- objectives ------------------------------------------------------------------------------

ACTS = {"conv": jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4),
        "logits": jnp.array([0.5, 2.0, -1.0])}
IMG = jnp.linspace(0, 1, 2 * 2 * 3).reshape(2, 2, 3)


def test_channel_neuron_direction_logit_deepdream():
    a = np.asarray(ACTS["conv"])
    assert float(obj.channel("conv", 2)(ACTS, IMG)) == pytest.approx(a[..., 2].mean())
    assert float(obj.neuron("conv", 1)(ACTS, IMG)) == pytest.approx(a[1, 1, 1])
    assert float(obj.neuron("conv", 3, y=0, x=2)(ACTS, IMG)) == pytest.approx(a[0, 2, 3])
    v = np.array([1.0, 0.0, -1.0, 2.0], np.float32)
    assert float(obj.direction("conv", v)(ACTS, IMG)) == pytest.approx((a @ v).mean())
    assert float(obj.class_logit(1)(ACTS, IMG)) == pytest.approx(2.0)
    assert float(obj.deepdream("conv")(ACTS, IMG)) == pytest.approx((a ** 2).mean())


def test_neuron_counts_negative_coordinates_from_the_end():
    a = np.asarray(ACTS["conv"])
    assert float(obj.neuron("conv", 2, y=-1, x=-2)(ACTS, IMG)) == pytest.approx(a[1, 1, 2])
    assert float(obj.neuron("conv", 2, y=-2)(ACTS, IMG)) == pytest.approx(a[0, 1, 2])
    for make in (lambda: obj.neuron("conv", None), lambda: obj.channel("conv", None),
                 lambda: obj.class_logit(None)):
        with pytest.raises(TypeError, match="needs a"):
            make()


@pytest.mark.parametrize("objective, message", [
    (obj.channel("relu2", 16), "channel 16 is out of range: layer 'relu2' has channels 0-15"),
    (obj.channel("relu2", 3) + obj.channel("relu1", -9), "channel -9 is out of range"),
    (obj.class_logit(10, layer="fc"), "class 10 is out of range: layer 'fc' has classes 0-9"),
    (obj.neuron("relu2", 0, y=8), "neuron y=8 is outside layer 'relu2'"),
    (2.0 * obj.neuron("relu2", 0, x=-9), "neuron x=-9 is outside"),
    (obj.neuron("fc", 3), "layer 'fc' has no spatial map .* use channel"),
    (obj.direction("relu2", np.ones(5)), "direction has 5 components but layer 'relu2' has 16"),
])
def test_out_of_range_indices_are_refused_before_compiling(tiny_model, objective, message,
                                                           compilations):
    r = featviz.Renderer(tiny_model, size=32, steps=2)
    with pytest.raises(obj.ObjectiveIndexError, match=message):
        r([objective], jax.random.split(jax.random.key(0), 1))
    assert "run_segment" not in compilations


@pytest.mark.parametrize("call, message", [
    (lambda r, o, k: r([], k[:0]), "0 objectives and 0 keys"),
    (lambda r, o, k: r([o] * 3, k), "3 objectives and 1 keys"),
    (lambda r, o, k: r([o], k, lr=float("nan")), "lr must be a finite number above 0 .* not nan"),
    (lambda r, o, k: r([o], k, lr=-0.05), "lr must be a finite number above 0"),
    (lambda r, o, k: r([o], k, steps=0), "steps must be from 1"),
    (lambda r, o, k: r([o], k, size=64), "a call may set steps, lr, lr_ramp, redirect_steps"),
])
def test_calls_that_cannot_render_are_refused(tiny_model, call, message, compilations):
    r = featviz.Renderer(tiny_model, size=32, steps=2)
    with pytest.raises(ValueError, match=message):
        call(r, obj.channel("relu2", 0), featviz.channel_keys(0, [0]))
    assert "run_segment" not in compilations


def test_renderer_settings_that_cannot_work_are_refused(tiny_model):
    with pytest.raises(ValueError, match="size must be from 16 to 4096, not 0"):
        featviz.Renderer(tiny_model, size=0)
    with pytest.raises(ValueError, match=r"makes images of shape \(32, 32, 3\) but this "
                                         r"renderer needs \(64, 64, 3\)"):
        featviz.Renderer(tiny_model, size=64, param=param.maco(32))
    with pytest.raises(ValueError, match="seed must be a whole number from 0"):
        featviz.channel_keys(-1, [0])


def test_penalties():
    img = np.asarray(IMG)
    tv = np.abs(np.diff(img, axis=0)).sum() + np.abs(np.diff(img, axis=1)).sum()
    assert float(obj.total_variation()(ACTS, IMG)) == pytest.approx(tv)
    assert float(obj.l1(0.5)(ACTS, IMG)) == pytest.approx(np.abs(img - 0.5).sum())


def test_arithmetic_is_exact():
    c0, c1 = (float(obj.channel("conv", i)(ACTS, IMG)) for i in (0, 1))
    logit = 2.0
    cases = {
        obj.channel("conv", 0) + obj.channel("conv", 1): c0 + c1,
        obj.channel("conv", 0) - obj.channel("conv", 1): c0 - c1,
        0.5 * obj.channel("conv", 0) + obj.class_logit(1) * 3: 0.5 * c0 + 6.0,
        obj.channel("conv", 1) / 4 - 1: c1 / 4 - 1,
        2 / obj.class_logit(1): 1.0,
        -obj.channel("conv", 0): -c0,
        1 - obj.channel("conv", 0): 1 - c0,
        (obj.channel("conv", 0) + obj.channel("conv", 1)) * (obj.class_logit(1) - 1):
            (c0 + c1) * (logit - 1),
    }
    for o, expected in cases.items():
        assert float(o(ACTS, IMG)) == pytest.approx(expected), o


def test_weights_apply_to_their_own_terms_only():
    """A weighted sum weights each term once (no weight leaks onto earlier terms)."""
    o = 1.0 * obj.class_logit(0) + 10.0 * obj.class_logit(1) + 100.0 * obj.class_logit(2)
    assert float(o(ACTS, IMG)) == pytest.approx(0.5 + 20.0 - 100.0)


def test_total_of_a_thousand_terms_is_flat():
    o = obj.total([obj.channel("conv", i % 4) for i in range(1000)])
    assert len(o.static[1]) == 1000
    assert float(o(ACTS, IMG)) == pytest.approx(
        sum(float(np.asarray(ACTS["conv"])[..., i % 4].mean()) for i in range(1000)), rel=1e-5)


def test_total_of_nothing_is_refused():
    with pytest.raises(ValueError, match="total\\(\\) of no objectives"):
        obj.total([])


def test_a_sum_traces_one_computation_per_form_of_term():
    """A thousand channels (some weighted) cost what three do: one vmapped call per form."""
    def size_of_program(n):
        o = obj.total([obj.channel("conv", i % 4) + 2.0 * obj.channel("conv", i % 3)
                       + obj.class_logit(1) for i in range(n)])
        return len(jax.make_jaxpr(lambda a, im: o(a, im))(ACTS, IMG).eqns)
    assert size_of_program(1000) == size_of_program(3)
    o = obj.channel("conv", 0) + 2.0 * obj.channel("conv", 1) + 3.0 * obj.channel("conv", 2)
    conv = np.asarray(ACTS["conv"])
    assert float(o(ACTS, IMG)) == pytest.approx(
        conv[..., 0].mean() + 2 * conv[..., 1].mean() + 3 * conv[..., 2].mean(), rel=1e-6)


def test_stack_of_one_form_and_of_several():
    batch = obj.stack([obj.channel("conv", c) for c in range(4)])
    assert batch.params.tolist() == [0, 1, 2, 3]
    listed = [obj.channel("conv", 2), obj.class_logit(1), 2.0 * obj.channel("conv", 0),
              obj.class_logit(0), obj.deepdream("conv")]
    mixed = obj.stack(listed)
    assert mixed.params[0].tolist() == [0, 1, 2, 1, 3]
    stacked_acts = jax.tree.map(lambda a: jnp.stack([a] * 5), ACTS)
    values = jax.vmap(lambda o, a, i: o(a, i))(mixed, stacked_acts, jnp.stack([IMG] * 5))
    np.testing.assert_allclose(values, [float(o(ACTS, IMG)) for o in listed], rtol=1e-6)
    assert mixed.layers == {"conv", "logits"}


def test_diversity_prefers_different_images():
    same = {"conv": jnp.ones((2, 3, 3, 4))}
    rng = np.random.default_rng(0)
    diff = {"conv": jnp.asarray(rng.uniform(size=(2, 3, 3, 4)) ** 8)}
    d = obj.diversity("conv")
    assert float(d(same)) == pytest.approx(-1.0)
    assert float(d(diff)) > float(d(same))


# --- parameterizations and transforms ---------------------------------------------------------

# The oracle: Lucid, optvis/param/spatial.py (tensorflow/lucid, Apache-2.0), its rfft2d_freqs
# as written and its fft_image's scaling and inverse transform, TensorFlow's ops in NumPy
# (tf.signal.irfft2d is np.fft.irfft2 over the last two axes: both normalized by 1/(h*w), both
# inferring the width 2*(w_f - 1) from w_f columns).
def _lucid_rfft2d_freqs(h, w):
    """Computes 2D spectrum frequencies."""

    fy = np.fft.fftfreq(h)[:, None]
    # when we have an odd input dimension we need to keep one additional
    # frequency and later cut off 1 pixel
    if w % 2 == 1:
        fx = np.fft.fftfreq(w)[: w // 2 + 2]
    else:
        fx = np.fft.fftfreq(w)[: w // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


def _lucid_fft_image(spectrum_real_imag_t, h, w, decay_power=1):
    """Lucid's fft_image given its variable, (2, batch, ch) + rfft2d_freqs(h, w).shape."""
    freqs = _lucid_rfft2d_freqs(h, w)
    spectrum_t = spectrum_real_imag_t[0] + 1j * spectrum_real_imag_t[1]
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** decay_power
    scale *= np.sqrt(w * h)
    scaled_spectrum_t = scale * spectrum_t
    image_t = np.transpose(np.fft.irfft2(scaled_spectrum_t), (0, 2, 3, 1))
    image_t = image_t[:, :h, :w, :]
    return image_t / 4.0


@pytest.mark.parametrize("size,decay_power", [(16, 1.0), (64, 1.0), (16, 1.5)])
def test_fft_param_is_lucids_fft_image(size, decay_power):
    """The Fourier image is Lucid's fft_image of the same coefficients, no constant between them:
    Lucid multiplies the scale by sqrt(h*w) and inverts with irfft2d's 1/(h*w), featviz inverts
    the spectrum without that factor with norm="ortho"'s 1/sqrt(h*w). Even sizes only: for an odd
    width Lucid keeps one more column of coefficients (w // 2 + 2) and crops a wider image."""
    p = param.fft_spectrum(size, sd=1.0, decay_power=decay_power)
    coeffs = np.asarray(p.init(jax.random.key(0)))  # (2, h, w // 2 + 1, channels)
    assert coeffs.shape[1:3] == _lucid_rfft2d_freqs(size, size).shape
    lucid = _lucid_fft_image(coeffs.transpose(0, 3, 1, 2)[:, None], size, size, decay_power)[0]
    assert np.abs(lucid).max() > 0.1  # not a vanishing image
    np.testing.assert_allclose(p.to_image(jnp.asarray(coeffs)), lucid, rtol=0, atol=1e-5)


def test_image_param_is_valid_rgb():
    for kw in ({}, {"fft": False}, {"decorrelate": False}, {"sigmoid": False}):
        p = param.image(32, **kw)
        img = p.to_image(p.init(jax.random.key(1)) * 100)
        assert img.shape == (32, 32, 3) and float(img.min()) >= 0 and float(img.max()) <= 1


def test_pad_and_jitter_match_numpy():
    img = np.random.default_rng(0).uniform(size=(10, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(T.pad(2, 0.5)(None, img), np.pad(img, ((2, 2), (2, 2), (0, 0)),
                                                                   constant_values=0.5))
    key = jax.random.key(3)
    out = np.asarray(T.jitter(4)(key, img))
    dy, dx = (np.asarray(T.uniform(key, 2)) * 5).astype(int)  # the shift jitter draws
    np.testing.assert_array_equal(out, img[dy:dy + 6, dx:dx + 8])


def test_rotation_and_scale_match_numpy_bilinear():
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(9, 9, 3)).astype(np.float32)
    key = jax.random.key(0)
    out = np.asarray(T.random_rotate([90])(key, img))
    np.testing.assert_allclose(out, np.rot90(img, k=1), atol=1e-5)  # 90 degrees is exact
    np.testing.assert_allclose(T.random_scale([1.0])(key, img), img, atol=1e-6)
    # zoom x2 about the centre: output pixel p samples input at c + (p - c) / 2
    out = np.asarray(T.random_scale([2.0])(key, img))
    c = 4.0
    src = c + (np.arange(9) - c) / 2
    y0 = np.floor(src).astype(int)
    f = src - y0
    y1 = np.minimum(y0 + 1, 8)
    rows = img[y0] * (1 - f)[:, None, None] + img[y1] * f[:, None, None]
    expected = rows[:, y0] * (1 - f)[None, :, None] + rows[:, y1] * f[None, :, None]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_jitter_gradient_equals_autodiff_of_the_crop():
    img = jax.random.uniform(jax.random.key(0), (4, 20, 22, 3))
    cotangent = jax.random.normal(jax.random.key(1), (4, 15, 17, 3))
    keys = jax.random.split(jax.random.key(2), 4)

    def plain_crop(key, x):
        dy, dx = T._below(key, (6, 6))  # the offsets jitter(5) draws from this key
        return jax.lax.dynamic_slice(x, (dy, dx, 0), (15, 17, 3))

    def grad(crop):
        return jax.grad(lambda x: (jax.vmap(crop)(keys, x) * cotangent).sum())(img)

    np.testing.assert_array_equal(jax.vmap(T.jitter(5))(keys, img), jax.vmap(plain_crop)(keys, img))
    np.testing.assert_array_equal(grad(T.jitter(5)), grad(plain_crop))


def test_warp_reads_fill_off_the_canvas():
    img = np.zeros((9, 9, 3), np.float32)
    out = np.asarray(T.random_scale([0.5], fill=0.25)(jax.random.key(0), img))
    assert out[4, 4, 0] == 0.0 and out[0, 0, 0] == 0.25  # zoomed out: corners come from outside


@pytest.mark.parametrize("degrees,scale", [(0, 1.0), (10, 0.9), (-10, 1.1), (45, 1.0),
                                           (30, 2.0), (80, 0.5), (0, 3.0)])
def test_warp_gradient_is_the_exact_transpose(degrees, scale):
    """The gather-based gradient equals autodiff's (scatter) gradient of the same resampling."""
    img, g = jax.random.uniform(jax.random.key(0), (2, 13, 17, 3))
    matrix = T._rotation(np.deg2rad(degrees)) / scale
    reach = T._reach(scale, np.deg2rad([degrees]))
    coords = T._source_coords(matrix, 13, 17)
    autodiff = jax.grad(lambda x: (T._bilinear(x, *coords, 0.5) * g).sum())(img)
    ours = jax.grad(lambda x: (T._warp(x, matrix, reach, 0.5) * g).sum())(img)
    np.testing.assert_allclose(ours, autodiff, atol=1e-5)


def test_blur_matches_numpy():
    img = np.zeros((9, 9, 1), np.float32)
    img[4, 4] = 1
    out = np.asarray(T.blur(1.0)(None, img))[..., 0]
    k = T.gaussian_kernel(1.0)
    r = len(k) // 2
    expected = np.zeros((9, 9))
    expected[4 - r:4 + r + 1, 4 - r:4 + r + 1] = np.outer(k, k)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_counter_based_draws_are_uniform_and_keyed():
    key = jax.random.key(0)
    values = np.asarray(jax.vmap(lambda i: draws.uniform(draws.derive_key(key, i), 2))(
        jnp.arange(8192)))
    assert ((values >= 0) & (values < 1)).all()
    counts = np.histogram(values, bins=8, range=(0, 1))[0]
    assert np.abs(counts / values.size - 1 / 8).max() < 0.01  # 16384 draws: within ~4 sigma
    assert abs(np.corrcoef(values[:-1, 0], values[1:, 0])[0, 1]) < 0.05  # counter to counter
    np.testing.assert_array_equal(draws.uniform(draws.derive_key(key, 3), 4),
                                  draws.uniform(draws.derive_key(jax.random.key(0), 3), 4))
    assert not np.array_equal(draws.uniform(draws.derive_key(key, 3), 4),
                              draws.uniform(draws.derive_key(jax.random.key(1), 3), 4))


def test_counter_based_normal_draws_are_standard_normal():
    values = np.asarray(draws.normal(jax.random.key(2), (64, 1024))).ravel()
    assert np.isfinite(values).all()
    assert abs(values.mean()) < 0.01 and abs(values.std() - 1) < 0.01  # 65536 draws
    for z in (-2.0, -1.0, 0.0, 1.0, 2.0):  # the normal CDF at a few points, within 4 sigma
        expected = 0.5 * (1 + math.erf(z / math.sqrt(2)))
        sigma = math.sqrt(expected * (1 - expected) / values.size)
        assert abs((values < z).mean() - expected) < 4 * sigma


def test_standard_transforms_have_fixed_shape():
    t = T.compose(T.standard_transforms())
    shapes = {t(jax.random.key(i), jnp.zeros((64, 64, 3))).shape for i in range(5)}
    assert shapes == {(76, 76, 3)}


# --- renderer --------------------------------------------------------------------------------

def test_objective_rises_under_ascent(tiny_model):
    r = featviz.Renderer(tiny_model, size=32, steps=64, transforms=[])
    out = r([obj.channel("conv1", c) for c in range(4)], featviz.channel_keys(0, range(4)))
    assert out.images.shape == (4, 32, 32, 3)
    assert (out.trace[:, -1] > out.trace[:, 0] + 0.1).all()
    assert np.allclose(out.final, out.trace[:, -1], rtol=0.1, atol=0.05)


def test_batched_render_equals_per_channel_renders(tiny_model):
    r = featviz.Renderer(tiny_model, size=32, steps=16)
    chans = [0, 3, 5, 7]
    batch = r([obj.channel("conv1", c) for c in chans], featviz.channel_keys(7, chans))
    for i, c in enumerate(chans):
        one = r([obj.channel("conv1", c)], featviz.channel_keys(7, [c]))
        np.testing.assert_allclose(one.images[0], batch.images[i], atol=2e-4)


def test_new_channel_does_not_recompile(tiny_model, compilations):
    r = featviz.Renderer(tiny_model, size=32, steps=4)
    for c in range(4):
        r([obj.channel("relu1", c), obj.channel("relu1", 7 - c)],
          featviz.channel_keys(0, [c, 7 - c]))
    assert compilations.count("run_segment") == 1


def test_same_seed_same_image_other_seed_other_image(tiny_model):
    r = featviz.Renderer(tiny_model, size=32, steps=8)
    a = r([obj.channel("relu2", 1)], featviz.channel_keys(3, [1])).images
    b = r([obj.channel("relu2", 1)], featviz.channel_keys(3, [1])).images
    c = r([obj.channel("relu2", 1)], featviz.channel_keys(4, [1])).images
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_diversity_term_makes_the_batch_less_alike(tiny_model):
    objs = [obj.channel("relu2", 0) - 1e-3 * obj.total_variation()] * 4
    keys = jax.random.split(jax.random.key(0), 4)  # the same starts with and without the term
    diversity = obj.diversity("relu1")
    scores = {}
    for weight in (None, 10.0):
        r = featviz.Renderer(tiny_model, size=32, steps=32, optimizer=optax.adam(0.05),
                             batch_objective=weight and obj.diversity("relu1", weight))
        out = r(objs, keys)
        assert np.isfinite(out.images).all()
        scores[weight] = float(diversity(tiny_model.activations(out.images, layers=["relu1"])))
    # a score is minus the mean Gram cosine similarity; 1 + score measures how unlike they are
    assert 1 + scores[10.0] > 10 * (1 + scores[None])


def test_a_list_of_several_forms_is_one_program_and_keeps_each_image(tiny_model, compilations):
    listed = [obj.channel("relu2", 3), obj.class_logit(4, layer="fc"), obj.channel("relu2", 5),
              obj.neuron("relu1", 2)]
    keys = featviz.channel_keys(0, range(4))
    renderer = featviz.Renderer(tiny_model, size=32, steps=16)
    together = renderer(listed, keys)
    assert compilations.count("run_segment") == 1 and together.images.shape == (4, 32, 32, 3)
    for i, objective in enumerate(listed):  # each image as if rendered alone
        alone = featviz.Renderer(tiny_model, size=32, steps=16)([objective], keys[i:i + 1])
        np.testing.assert_allclose(together.images[i], alone.images[0], atol=1e-4)
        np.testing.assert_allclose(together.final[i], alone.final[0], rtol=1e-4)


def test_pretrained_channel_rises(lite0):
    out = featviz.render(lite0, [obj.channel("blocks_3", 5), obj.class_logit(1)], size=64, steps=24)
    assert (out.trace[:, -4:].mean(1) > out.trace[:, :4].mean(1)).all()


def test_too_large_chunk_is_refused_with_a_suggestion(tiny_model, monkeypatch):
    from featviz import memory
    from featviz.errors import ChunkTooLargeError

    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: 100_000)
    r = featviz.Renderer(tiny_model, size=32, steps=2)
    with pytest.raises(ChunkTooLargeError, match=r"use chunk=\d+"):
        r([obj.channel("conv1", c) for c in range(8)], featviz.channel_keys(0, range(8)))


def test_nnx_module_renders():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(3, 8, (3, 3), strides=2, rngs=rngs)
            self.conv2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.conv1(x))
            self.sow(nnx.Intermediate, "relu1", x)
            return self.conv2(x).mean((1, 2))

    model = featviz.from_nnx(Net(nnx.Rngs(0)), ["relu1", "conv2"], image_size=32)
    out = featviz.Renderer(model, size=32, steps=32, transforms=[])(
        [obj.channel("conv2", c) for c in range(3)], featviz.channel_keys(0, range(3)))
    assert (out.trace[:, -1] > out.trace[:, 0]).all()


def test_bfloat16_compute_keeps_float32_images_and_rises(tiny_model):
    r32 = featviz.Renderer(tiny_model, size=32, steps=32, transforms=[])
    r16 = featviz.Renderer(tiny_model, size=32, steps=32, transforms=[], precision="bfloat16")
    objs, keys = [obj.channel("conv1", c) for c in range(3)], featviz.channel_keys(0, range(3))
    full, half = r32(objs, keys), r16(objs, keys)
    assert half.images.dtype == np.float32 and half.trace.dtype == np.float32
    assert (half.trace[:, -1] > half.trace[:, 0] + 0.1).all()
    np.testing.assert_allclose(half.final, full.final, rtol=0.1, atol=0.05)


def test_redirected_rule_passes_gradient_only_to_dead_examples():
    from featviz import rectifier_rules

    def f(x):
        return jnp.sum(jax.nn.relu6(x) * jnp.array([1.0, -1.0]), axis=1)
    x = jnp.array([[-1.0, -2.0],    # example 0: both units dead (plain gradient all zero)
                   [3.0, -2.0]])    # example 1: unit 0 alive
    def loss(x):  # the renderer minimizes minus the objective
        return -f(x).sum()
    plain = jax.grad(loss)(x)
    redirected = jax.grad(lambda v: -rectifier_rules.evaluate(f, v, rule="redirected").sum())(x)
    np.testing.assert_array_equal(plain, [[0, 0], [-1, 0]])
    # dead example: unit 0 gets the gradient that raises it; unit 1's would push it lower: blocked
    np.testing.assert_array_equal(redirected, [[-1, 0], [-1, 0]])


def test_redirect_revives_dead_channels_that_can_fire(lite0):
    """Stem channel 14 is 0 on the grey starting image but can fire; channel 11 cannot fire
    for any image (its bias outweighs every input). Only the redirected start revives 14.
    (Optimized after its relu6: before it, as by default, the gradient is never zero.)"""
    keys = featviz.channel_keys(0, [14, 11])
    objs = [obj.channel("stem", 14), obj.channel("stem", 11)]
    renderer = featviz.Renderer(lite0, size=64, steps=128, activation="post")
    plain = renderer(objs, keys, redirect_steps=0)
    redirected = renderer(objs, keys)
    assert plain.final[0] == 0 and plain.final[1] == 0
    assert redirected.final[0] > 0.1 and redirected.final[1] == 0


class _BatchNormCNN(nn.Module):
    """A ResNet-style CNN written the common way: BatchNorm, a residual block, ``train``."""

    @nn.compact
    def __call__(self, x, train: bool):
        norm = lambda name: nn.BatchNorm(use_running_average=not train, name=name)  # noqa: E731
        x = nn.relu(norm("bn1")(nn.Conv(8, (3, 3), name="conv1")(x)))
        y = norm("bn2")(nn.Conv(8, (3, 3), name="conv2")(x))
        x = nn.relu(x + y)
        self.sow("intermediates", "block", x)
        return nn.Dense(5, name="fc")(x.mean((1, 2)))


def test_batchnorm_cnn_adapts_with_apply_kwargs():
    net = _BatchNormCNN()
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    variables = net.init(jax.random.key(0), x, train=False)
    # running statistics that are not the identity, as after training
    stats = jax.tree.map(lambda a: a + 0.3, variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}
    model = featviz.from_linen(net, variables, ["conv1", "block", "fc"], image_size=32,
                               apply_kwargs={"train": False})
    ours = model.activations(x)
    logits, state = net.apply(variables, x, train=False, mutable=["intermediates"])
    np.testing.assert_allclose(ours["fc"], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["block"], state["intermediates"]["block"][0], atol=1e-5)
    live = int(np.argmax(np.asarray(ours["block"]).mean((0, 1, 2))))  # a channel that can fire
    out = featviz.render(model, [obj.channel("block", live)], size=32, steps=24)
    assert out.trace[0, -4:].mean() > out.trace[0, :4].mean()


def test_nnx_module_with_batchnorm_and_dropout_in_eval_mode():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.bn1 = nnx.BatchNorm(8, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)

        def __call__(self, x):
            x = self.drop(nnx.relu(self.bn1(self.conv1(x))))
            self.sow(nnx.Intermediate, "block", x)
            return x.mean((1, 2))

    net = Net(nnx.Rngs(0))
    net.eval()  # running statistics, no dropout: what a trained network is visualized with
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype(np.float32)
    model = featviz.from_nnx(net, layers=["bn1", "block"], image_size=16)
    ours = model.activations(x)
    np.testing.assert_allclose(ours["bn1"], net.bn1(net.conv1(x)), atol=1e-5)
    live = int(np.argmax(np.asarray(ours["block"]).mean((0, 1, 2))))
    out = featviz.render(model, [obj.channel("block", live)], size=16, steps=24)
    assert out.trace[0, -4:].mean() > out.trace[0, :4].mean()


class _CappedNet(nn.Module):
    """A conv whose relu6 saturates within a few steps: post-activation objectives stall at 6."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), strides=2, kernel_init=nn.initializers.normal(1.0))(x))
        x = nn.Conv(4, (3, 3), name="conv", kernel_init=nn.initializers.normal(1.0))(x)
        self.sow("intermediates", "capped", nn.relu6(x))
        return x.mean((1, 2))


def test_capped_layer_optimizes_its_pre_activation_by_default():
    net = _CappedNet()
    model = featviz.from_linen(net, net.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3))),
                               ["capped"], image_size=16, pre_activations={"capped": "conv"})
    assert model.pre_activation("capped") == "conv" and model.check_layer("conv") == "conv"
    objs, keys = [obj.channel("capped", c) for c in range(4)], featviz.channel_keys(0, range(4))
    pre = featviz.Renderer(model, size=16, steps=48, transforms=[])(objs, keys)
    post = featviz.Renderer(model, size=16, steps=48, transforms=[], activation="post")(objs, keys)
    acts = model.activations(pre.images, layers=["capped", "conv"])
    on_conv = np.asarray(acts["conv"]).mean((1, 2))[np.arange(4), np.arange(4)]
    on_capped = np.asarray(acts["capped"]).mean((1, 2))[np.arange(4), np.arange(4)]
    np.testing.assert_allclose(pre.final, on_conv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pre.final_post, on_capped, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(post.final, post.final_post)
    capped = post.final >= 6.0 - 1e-4  # stalled at the cap: its gradient is zero there
    assert capped.any() and (pre.final[capped] > 12.0).all()  # past the cap it still climbs
    with pytest.raises(ValueError, match="activation must be one of pre, post"):
        featviz.Renderer(model, size=16, activation="after")


def test_a_transform_factory_is_refused_and_a_nan_render_warns(tiny_model):
    with pytest.raises(ValueError, match="pad is not a transform .* transforms.pad\\(12\\)"):
        featviz.Renderer(tiny_model, size=32, transforms=[T.pad])
    with pytest.warns(RuntimeWarning, match="not finite"):
        featviz.render(tiny_model, [obj.channel("relu2", 0) / 0.0], size=32, steps=2)
