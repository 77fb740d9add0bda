"""Losses (memsave/functions/loss.py): values against a direct NumPy computation, ignore_label,
reductions, errors, first and second derivatives."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F
from memsave.memory import saved_residuals

from ._strategies import arrays, check_grads, shapes, var


def np_cross_entropy(x, t, ignore_label=-1):
    """Per-entry loss, computed the slow way: loop over entries, log of the softmax."""
    x = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    flat = t.reshape(-1)
    out = np.zeros(flat.shape)
    for i, (row, label) in enumerate(zip(x, flat)):
        if label != ignore_label:
            out[i] = -np.log(np.exp(row[label]) / np.exp(row).sum())
    return out.reshape(t.shape)


@st.composite
def logits_and_labels(draw, ignore_label=-1):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    rest = draw(st.lists(st.integers(1, 2), max_size=2).map(tuple))
    x = draw(arrays((n, c) + rest, lo=-3.0, hi=3.0))
    t = draw(st.lists(st.sampled_from(list(range(c)) + [ignore_label]),
                      min_size=n * int(np.prod(rest)), max_size=n * int(np.prod(rest))))
    return x, np.array(t, dtype=np.int64).reshape((n,) + rest)


@given(logits_and_labels())
def test_softmax_cross_entropy_matches_numpy(case):
    x, t = case
    per_entry = np_cross_entropy(x, t)
    count = max(int((t != -1).sum()), 1)
    y = F.softmax_cross_entropy(var(x), t)
    assert y.shape == ()
    np.testing.assert_allclose(y.array, per_entry.sum() / count, rtol=1e-12, atol=1e-15)
    no = F.softmax_cross_entropy(var(x), t, reduce="no")
    assert no.shape == t.shape
    np.testing.assert_allclose(no.array, per_entry, rtol=1e-12, atol=1e-15)
    check_grads(F.softmax_cross_entropy, x, t)
    check_grads(lambda a, b: F.softmax_cross_entropy(a, b, reduce="no"), x, t)


def test_softmax_cross_entropy_gradient_is_softmax_minus_onehot_over_count():
    x = np.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0], [3.0, -1.0, 2.0]])
    t = np.array([2, -1, 0])
    v = var(x)
    F.softmax_cross_entropy(v, t).backward()
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    expected = (p - np.eye(3)[[2, 0, 0]]) / 2
    expected[1] = 0.0  # ignored row
    np.testing.assert_allclose(v.grad, expected, rtol=1e-12)


def test_softmax_cross_entropy_custom_ignore_label_and_all_ignored():
    x = np.array([[1.0, 2.0], [0.5, -0.5]])
    t = np.array([1, 7])
    y = F.softmax_cross_entropy(var(x), t, ignore_label=7)
    np.testing.assert_allclose(y.array, np_cross_entropy(x, t, 7)[0])
    v = var(x)
    z = F.softmax_cross_entropy(v, np.array([-1, -1]))
    assert z.array == 0.0
    z.backward()
    np.testing.assert_array_equal(v.grad, np.zeros((2, 2)))


def test_softmax_cross_entropy_is_stable_for_large_logits():
    x = np.array([[1000.0, 0.0], [-1000.0, 1000.0]])
    with np.errstate(divide="raise", over="raise", invalid="raise"):
        y = F.softmax_cross_entropy(var(x), np.array([1, 1]), reduce="no")
    np.testing.assert_allclose(y.array, [1000.0, 0.0])


def test_softmax_cross_entropy_float32_and_label_variable():
    x = ms.Variable(np.array([[0.5, 1.5]], dtype=np.float32))
    t = ms.Variable(np.array([1], dtype=np.int32))  # an int Variable (requires_grad by default)
    y = F.softmax_cross_entropy(x, t)
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32 and t.grad is None


def test_softmax_cross_entropy_errors():
    x = var(np.zeros((2, 3)))
    with pytest.raises(ms.DTypeError, match="integer.*float64"):
        F.softmax_cross_entropy(x, np.array([0.0, 1.0]))
    with pytest.raises(ms.ShapeError, match=r"\(2, 3\).*\(2,\).*\(3,\)"):
        F.softmax_cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(ms.ShapeError, match=r"\(2, 3, 4\).*\(2, 4\).*\(2, 3\)"):
        F.softmax_cross_entropy(var(np.zeros((2, 3, 4))), np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="label 3 is out of range for 3 classes"):
        F.softmax_cross_entropy(x, np.array([0, 3]))
    with pytest.raises(ValueError, match="label -2 is out of range"):
        F.softmax_cross_entropy(x, np.array([-2, 0]))
    with pytest.raises(ValueError, match="reduce"):
        F.softmax_cross_entropy(x, np.array([0, 1]), reduce="sum")


@given(data=st.data())
def test_mean_squared_error(data):
    shape = data.draw(shapes())
    a, b = data.draw(arrays(shape)), data.draw(arrays(shape))
    y = F.mean_squared_error(var(a), var(b))
    assert y.shape == ()
    np.testing.assert_allclose(y.array, np.mean((a - b) ** 2), rtol=1e-12, atol=1e-15)
    check_grads(F.mean_squared_error, a, b)
    check_grads(lambda u, w: F.mean_squared_error(u * u, w), a, b)


def test_mean_squared_error_float32_gradients_and_constant_target():
    x = ms.Variable(np.array([1.0, 3.0], dtype=np.float32))
    y = F.mean_squared_error(x, np.array([0.0, 1.0], dtype=np.float32))
    assert y.dtype == np.float32 and y.array == 2.5
    y.backward()
    np.testing.assert_array_equal(x.grad, np.array([1.0, 2.0], dtype=np.float32))


def test_mean_squared_error_shape_mismatch_names_both_shapes():
    with pytest.raises(ms.ShapeError, match=r"\(2, 3\).*\(3, 2\)"):
        F.mean_squared_error(var(np.zeros((2, 3))), var(np.zeros((3, 2))))


def test_losses_keep_their_inputs_only():
    x = var(np.linspace(-1, 1, 6).reshape(2, 3))
    t = np.array([0, 2])
    kept = saved_residuals(lambda a: F.softmax_cross_entropy(a * 1.0, t), x)
    assert sorted((r.op, r.shape) for r in kept) == [("SoftmaxCrossEntropy", (2,)),
                                                    ("SoftmaxCrossEntropy", (2, 3))]
    kept = saved_residuals(lambda a: F.mean_squared_error(a * 1.0, np.zeros((2, 3))), x)
    assert [(r.op, r.shape) for r in kept] == [("MeanSquaredError", (2, 3))]


@pytest.mark.parametrize("reduce", ["mean", "no"])
@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 2, 2)])
def test_softmax_cross_entropy_fused_backward_equals_the_differentiable_one(reduce, shape):
    rng = np.random.default_rng(0)
    x = ms.Variable(rng.standard_normal(shape))
    t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    t.flat[1] = -1  # an ignored entry
    y = F.softmax_cross_entropy(x, t, reduce=reduce)
    gy = rng.standard_normal(y.shape)
    fused, = ms.grad([y], [x], [gy], retain_graph=True)
    composed, = ms.grad([y], [x], [gy], create_graph=True)
    assert fused.creator is None and composed.creator is not None
    np.testing.assert_allclose(fused.array, composed.array, rtol=0, atol=1e-12)
    assert ms.gradcheck(lambda x: F.softmax_cross_entropy(x, t, reduce=reduce), [x.array])
