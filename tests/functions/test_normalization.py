"""layer_norm and batch_norm: values, derivatives, running statistics, what they keep."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def layer_norm_reference(x, g, b, eps):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def batch_norm_reference(x, g, b, mean, var, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * g.reshape(shape) \
        + b.reshape(shape)


def batch_axes(x):
    return (0,) + tuple(range(2, x.ndim))


# ----- layer_norm --------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4,), (3, 5), (2, 2, 4)])
def test_layer_norm_values_and_gradients(shape):
    x, g, b = rand(*shape), rand(shape[-1], seed=1), rand(shape[-1], seed=2)
    np.testing.assert_allclose(F.layer_norm(x, g, b).array, layer_norm_reference(x, g, b, 1e-5),
                               rtol=1e-10, atol=1e-12)
    assert ms.gradcheck(F.layer_norm, [x, g, b])
    assert ms.gradgradcheck(F.layer_norm, [x, g, b])


@given(st.integers(1, 3), st.integers(2, 5), st.floats(1e-5, 1e-1))
def test_layer_norm_property(n, d, eps):
    x, g, b = rand(n, d, seed=n), rand(d, seed=d), rand(d, seed=7)
    np.testing.assert_allclose(F.layer_norm(x, g, b, eps).array, layer_norm_reference(x, g, b, eps),
                               rtol=1e-10, atol=1e-12)
    assert ms.gradcheck(lambda x, g, b: F.layer_norm(x, g, b, eps), [x, g, b])


def test_layer_norm_shape_error():
    with pytest.raises(ms.ShapeError, match=r"gamma has shape \(3,\).*\(2, 4\)"):
        F.layer_norm(np.zeros((2, 4)), np.ones(3), np.zeros(4))


# ----- batch_norm: training mode -----------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2), (3, 2, 1, 3)])
def test_batch_norm_train_values_and_gradients(shape):
    x, g, b = rand(*shape), rand(shape[1], seed=1), rand(shape[1], seed=2)
    axes = batch_axes(x)
    expected = batch_norm_reference(x, g, b, x.mean(axes), x.var(axes), 2e-5)
    np.testing.assert_allclose(F.batch_norm(x, g, b).array, expected, rtol=1e-10, atol=1e-12)
    assert ms.gradcheck(F.batch_norm, [x, g, b])
    assert ms.gradgradcheck(F.batch_norm, [x, g, b])


@given(st.sampled_from([(3, 2), (2, 2, 2, 1), (2, 1, 2, 2)]), st.floats(0.0, 0.99))
def test_running_statistics_update_once_per_call(shape, decay):
    x1, x2 = rand(*shape, seed=3), rand(*shape, seed=4)
    c, axes = shape[1], batch_axes(x1)
    m = x1.size // c
    rm, rv = np.full(c, 0.5), np.full(c, 2.0)
    expect_m, expect_v = rm.copy(), rv.copy()
    for x in (x1, x2):
        F.batch_norm(ms.Variable(x), np.ones(c), np.zeros(c), rm, rv, decay=decay, train=True)
        expect_m = decay * expect_m + (1 - decay) * x.mean(axes)
        expect_v = decay * expect_v + (1 - decay) * x.var(axes) * m / (m - 1)
        np.testing.assert_allclose(rm, expect_m, rtol=1e-12)
        np.testing.assert_allclose(rv, expect_v, rtol=1e-12)


def test_running_statistics_untouched_by_backward_and_by_recompute():
    x, g, b = ms.Variable(rand(4, 3)), ms.Parameter(np.ones(3)), ms.Parameter(np.zeros(3))
    rm, rv = np.zeros(3), np.ones(3)
    y = F.batch_norm(x, g, b, rm, rv)  # config.train defaults to True
    after_forward = rm.copy(), rv.copy()
    assert not np.allclose(rm, 0)
    (y * y).sum().backward()
    np.testing.assert_array_equal(rm, after_forward[0])
    np.testing.assert_array_equal(rv, after_forward[1])
    with ms.using_config("in_recompute", True):
        y2 = F.batch_norm(x, g, b, rm, rv)
    np.testing.assert_array_equal(y2.array, y.array)  # still normalizes by the batch
    np.testing.assert_array_equal(rm, after_forward[0])
    np.testing.assert_array_equal(rv, after_forward[1])


def test_running_statistics_float32_buffers():
    x = rand(5, 2).astype(np.float32)
    rm, rv = np.zeros(2, dtype=np.float32), np.ones(2, dtype=np.float32)
    y = F.batch_norm(x, np.ones(2, np.float32), np.zeros(2, np.float32), rm, rv)
    assert y.dtype == np.float32 and rm.dtype == np.float32
    np.testing.assert_allclose(rm, 0.1 * x.mean(0), rtol=1e-5)


def test_normalizations_keep_x_and_small_statistics_not_normalized_copies():
    x0 = ms.Variable(rand(4, 3, 2, 2))
    x = F.tanh(x0)
    saved = []
    with ms.saved_array_hooks(lambda a, fn: saved.append((type(fn).__name__, a.shape)) or a,
                              lambda a: a):
        y = F.batch_norm(x, ms.Parameter(np.ones(3)), ms.Parameter(np.zeros(3)),
                         np.zeros(3), np.ones(3))
        z = F.layer_norm(x, ms.Parameter(np.ones(2)), ms.Parameter(np.zeros(2)))
    channel, row = (1, 3, 1, 1), (4, 3, 2, 1)  # mean and 1 / std
    assert saved == [("BatchNormalization", (4, 3, 2, 2)), ("BatchNormalization", channel),
                     ("BatchNormalization", channel), ("LayerNormalization", (4, 3, 2, 2)),
                     ("LayerNormalization", row), ("LayerNormalization", row)]
    (y.sum() + (z * z).sum()).backward()
    assert x0.grad.shape == x0.shape


# ----- batch_norm: evaluation mode ---------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2)])
def test_batch_norm_eval_uses_running_statistics(shape):
    x, g, b = rand(*shape), rand(shape[1], seed=1), rand(shape[1], seed=2)
    rm, rv = rand(shape[1], seed=3), rand(shape[1], seed=4) ** 2 + 0.5
    before = rm.copy(), rv.copy()
    with ms.using_config("train", False):
        y = F.batch_norm(x, g, b, rm, rv, eps=1e-3)
    np.testing.assert_allclose(y.array, batch_norm_reference(x, g, b, rm, rv, 1e-3), rtol=1e-12)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])

    def f(x, g, b):
        return F.batch_norm(x, g, b, rm, rv, train=False)

    assert ms.gradcheck(f, [x, g, b])
    assert ms.gradgradcheck(lambda x, g, b: f(x, g, b) ** 2, [x, g, b])


def test_eval_backward_ignores_later_updates_of_running_arrays():
    x, g, b = ms.Variable(rand(3, 2)), ms.Parameter(np.ones(2)), ms.Parameter(np.zeros(2))
    rm, rv = np.zeros(2), np.ones(2)
    y = F.batch_norm(x, g, b, rm, rv, train=False)
    F.batch_norm(rand(3, 2, seed=9), g, b, rm, rv, train=True)  # updates rm, rv in place
    (y * y).sum().backward()
    np.testing.assert_allclose(g.grad, 2 * (x.array ** 2 / (1 + 2e-5)).sum(0), rtol=1e-12)


def test_batch_norm_errors():
    with pytest.raises(ms.ShapeError, match=r"running_mean has shape \(2,\)"):
        F.batch_norm(np.zeros((4, 3)), np.ones(3), np.zeros(3), np.zeros(2), np.ones(3))
    with pytest.raises(ms.ShapeError, match=r"\(N, C\) or \(N, C, H, W\)"):
        F.batch_norm(np.zeros((4, 3, 2)), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.batch_norm(np.zeros((4, 3)), np.ones(3), np.zeros(3), train=False)


@pytest.mark.parametrize("op, shape", [(F.layer_norm, (3, 2, 5)), (F.batch_norm, (4, 3)),
                                       (F.batch_norm, (2, 3, 2, 2))])
def test_fused_backward_equals_the_differentiable_one(op, shape):
    """Plain backward runs one fused pass on raw arrays; create_graph=True the composition."""
    c = shape[-1] if op is F.layer_norm else shape[1]
    x, g, b = (ms.Variable(a) for a in (rand(*shape), rand(c, seed=1), rand(c, seed=2)))
    y = op(x, g, b)
    gy = rand(*shape, seed=3)
    fused = ms.grad([y], [x, g, b], [gy], retain_graph=True)
    composed = ms.grad([y], [x, g, b], [gy], create_graph=True)
    assert all(a.creator is None for a in fused) and composed[0].creator is not None
    for a, c_ in zip(fused, composed):
        np.testing.assert_allclose(a.array, c_.array, rtol=0, atol=1e-12)
    gx, = ms.grad([y], [x], [gy], retain_graph=True)  # only what is asked is computed
    np.testing.assert_allclose(gx.array, fused[0].array, rtol=0, atol=1e-12)


@pytest.mark.parametrize("which", ["batch", "layer"])
def test_fused_backward_needs_about_one_input_sized_buffer(which):
    # gx plus chunk-sized temporaries (an eighth of the batch each), not three x-sized buffers
    from memsave.memory import measure

    rng = np.random.default_rng(0)
    x = ms.Variable(rng.standard_normal((16, 8, 16, 16)))
    channels = x.shape[1] if which == "batch" else x.shape[-1]
    gamma, beta = ms.Variable(np.ones(channels)), ms.Variable(np.zeros(channels))
    y = (F.batch_norm(x, gamma, beta) if which == "batch" else F.layer_norm(x, gamma, beta))
    gy = rng.standard_normal(y.shape)
    with measure() as m:
        gx, = ms.grad([y], [x], [gy])
    assert m.peak <= 1.75 * x.array.nbytes, m.peak / x.array.nbytes   # was 3x and more
