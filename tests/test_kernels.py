"""The two forms of EfficientNet-Lite's convolutions (XLA's native convolution and featviz's
shifted multiplies / patch matmul) compute the same thing, alone and in the whole network."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from featviz.models import layers

# Of the reference's largest magnitude; measured: 4e-7 (float32), 1.7e-2 (bfloat16, where the
# shifted form rounds after each of its k*k adds and XLA's convolution accumulates in float32).
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}
FORMS = {"depthwise": (layers.native_depthwise_conv, layers.depthwise_conv),
         "stem": (layers.native_conv, layers.patch_conv)}
CASES = ([("depthwise", stride, kernel) for stride in (1, 2) for kernel in (3, 5)]
         + [("stem", stride, 3) for stride in (1, 2)])  # the stem: 3x3, 3 input channels


def _forward_and_grads(conv, stride):
    """conv's output and its input and kernel gradients for a given cotangent, one program."""
    def run(x, w, g):
        y, vjp = jax.vjp(lambda x, w: conv(x, w, stride), x, w)
        return (y, *vjp(g))
    return run


def _assert_close(ours, ref, tol, what):
    ours, ref = np.asarray(ours, np.float32), np.asarray(ref, np.float32)
    assert ours.shape == ref.shape, what
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    assert err <= tol, f"{what}: relative error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("size", [7, 8])  # (size, size + 3): odd and even heights and widths
@pytest.mark.parametrize("kind,stride,kernel", CASES)
def test_native_and_shifted_forms_agree(kind, stride, kernel, size, dtype):
    rng = np.random.default_rng(stride * 100 + kernel * 10 + size)
    c = 6 if kind == "depthwise" else 3
    w_shape = (kernel, kernel, c) if kind == "depthwise" else (kernel, kernel, c, 8)
    x = rng.normal(size=(2, size, size + 3, c))
    w = rng.normal(size=w_shape)
    y_shape = jax.eval_shape(lambda x, w: FORMS[kind][0](x, w, stride), x, w).shape
    g = rng.normal(size=y_shape)
    x, w, g = (jnp.asarray(a, dtype) for a in (x, w, g))

    native, shifted = FORMS[kind]
    both = jax.jit(lambda *a: (_forward_and_grads(native, stride)(*a),
                               _forward_and_grads(shifted, stride)(*a)))
    from_native, from_shifted = both(x, w, g)
    for what, ours, ref in zip(("output", "input gradient", "kernel gradient"), from_native,
                               from_shifted):
        assert ours.dtype == ref.dtype == jnp.dtype(dtype), what
        _assert_close(ours, ref, TOLERANCE[dtype], what)
    if dtype == "float32":  # the padding is also that of XLA's own "SAME"
        same = jax.lax.conv_general_dilated(
            x, w[:, :, None, :] if kind == "depthwise" else w, (stride, stride), "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=c if kind == "depthwise" else 1)
        _assert_close(from_shifted[0], same, TOLERANCE[dtype], "output vs lax SAME")


def test_platform_table_and_override(monkeypatch):
    monkeypatch.delenv(layers.KERNELS_ENV, raising=False)
    assert layers.conv_kernels("cpu") == (layers.depthwise_conv, layers.patch_conv)
    for platform in ("gpu", "tpu", "some-new-accelerator"):
        assert layers.conv_kernels(platform) == (layers.native_depthwise_conv, layers.native_conv)
    monkeypatch.setenv(layers.KERNELS_ENV, "native")
    assert layers.conv_kernels("cpu") == (layers.native_depthwise_conv, layers.native_conv)
    monkeypatch.setenv(layers.KERNELS_ENV, "shifted")
    assert layers.conv_kernels("gpu") == (layers.depthwise_conv, layers.patch_conv)
    monkeypatch.setenv(layers.KERNELS_ENV, "cudnn")
    with pytest.raises(ValueError, match="native, shifted|shifted, native"):
        layers.conv_kernels("gpu")


def test_platform_follows_the_mesh_and_the_backend():
    x = jnp.ones((2, 4))
    assert layers._platform(x) == jax.default_backend()
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    sharded = jax.device_put(x, sharding)
    seen = []
    jax.jit(lambda v: seen.append(layers._platform(v)) or v)(sharded)
    assert seen == [jax.devices()[0].platform]


def test_lite0_logits_equal_with_either_choice(lite0, monkeypatch):
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    logits = {}
    for choice in ("native", "shifted"):
        monkeypatch.setenv(layers.KERNELS_ENV, choice)
        def forward(v):  # a new function per choice: the choice is made when it is traced
            return lite0.apply(lite0.params, lite0.preprocess(v), ["logits"])["logits"]
        jaxpr = str(jax.make_jaxpr(forward)(images))
        assert ("conv_general_dilated" in jaxpr) == (choice == "native")
        logits[choice] = np.asarray(jax.jit(forward)(images))
    np.testing.assert_allclose(logits["native"], logits["shifted"], rtol=0, atol=1e-4)
    assert np.abs(logits["shifted"]).max() > 1  # real logits, not a degenerate output
