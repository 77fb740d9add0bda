"""Arithmetic and elementwise math (memsave/functions/math.py): values against NumPy,
first and second derivatives against central differences, broadcasting, scalars, dtypes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import memsave as ms
import memsave.functions as F

from ._strategies import arrays, check_grads, shapes, var

BROADCAST_PAIRS = hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=3)

BINARY = {
    "add": (F.add, np.add, {}),
    "sub": (F.sub, np.subtract, {}),
    "mul": (F.mul, np.multiply, {}),
    "div": (F.div, np.divide, {"b": (0.5, 2.0)}),
    "pow": (F.pow, np.power, {"a": (0.5, 2.0)}),
}


@pytest.mark.parametrize("name", list(BINARY))
@given(data=st.data())
def test_binary_ops_broadcast(name, data):
    op, ref, ranges = BINARY[name]
    (sa, sb), _ = data.draw(BROADCAST_PAIRS)
    a = data.draw(arrays(sa, *ranges.get("a", (-2.0, 2.0))))
    b = data.draw(arrays(sb, *ranges.get("b", (-2.0, 2.0))))
    y = op(var(a), var(b))
    assert y.shape == np.broadcast_shapes(sa, sb)
    np.testing.assert_allclose(y.array, ref(a, b), rtol=1e-12)
    check_grads(op, a, b)


@pytest.mark.parametrize("sa, sb", [((3, 1), (1, 4)), ((2, 3), (3,)), ((2, 1, 3), (4, 1)),
                                    ((), (2, 2))])
@pytest.mark.parametrize("op, ref", [(F.add, np.add), (F.mul, np.multiply), (F.sub, np.subtract)])
def test_broadcast_gradients_are_reduced_to_each_input(sa, sb, op, ref):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    va, vb = var(a), var(b)
    y = op(va, vb)
    np.testing.assert_allclose(y.array, ref(a, b))
    y.backward(np.ones(y.shape))
    assert va.grad.shape == sa and vb.grad.shape == sb
    check_grads(op, a, b)


def test_broadcast_add_gradient_counts_the_copies():
    a, b = var(np.zeros((3, 1))), var(np.zeros((1, 4)))
    (a + b).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full((3, 1), 4.0))
    np.testing.assert_array_equal(b.grad, np.full((1, 4), 3.0))


@given(x=arrays(lo=0.5, hi=2.0), s=st.floats(0.5, 2.0))
def test_scalar_operands_on_either_side(x, s):
    v = var(x)
    cases = [(v + s, x + s), (s + v, s + x), (v - s, x - s), (s - v, s - x), (v * s, x * s),
             (s * v, s * x), (v / s, x / s), (s / v, s / x), (v ** s, x ** s), (s ** v, s ** x),
             (-v, -x)]
    for y, expected in cases:
        np.testing.assert_allclose(y.array, expected, rtol=1e-12)
    check_grads(lambda a: (s - a) * s / a + s ** a + a ** s, x)


def test_ndarray_on_the_left_defers_to_variable():
    x = np.array([1.0, 2.0])
    v = var([3.0, 4.0])
    for y, expected in [(x + v, [4.0, 6.0]), (x * v, [3.0, 8.0]), (x - v, [-2.0, -2.0]),
                        (x / v, [1 / 3, 0.5]), (np.eye(2) @ v, [3.0, 4.0])]:
        assert isinstance(y, ms.Variable)
        np.testing.assert_allclose(y.array, expected)


@pytest.mark.parametrize("make", [
    lambda v: v + 1.5, lambda v: 1.5 + v, lambda v: v - 1.5, lambda v: 1.5 - v,
    lambda v: v * 1.5, lambda v: 1.5 * v, lambda v: v / 1.5, lambda v: 1.5 / v,
    lambda v: v ** 2, lambda v: 2.0 ** v, lambda v: F.mean(v), lambda v: F.sqrt(v),
])
def test_float32_stays_float32_with_python_scalars(make):
    v = ms.Variable(np.array([1.0, 2.0], dtype=np.float32))
    y = make(v)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, dtype=np.float32))
    assert v.grad.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("c", [3, -0.7, 1e-3, 2049.0])
def test_python_number_ops_equal_the_two_input_ops_and_keep_nothing(dtype, c):
    # A Python number becomes part of the op (AddConstant, MulConstant, ...): values and
    # gradients must be bit for bit those of the op with the number as a 0-d array of x's
    # dtype, and nothing may be kept for backward.
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 2.0, (3, 4)).astype(dtype)
    gy = rng.standard_normal((3, 4)).astype(dtype)
    as_array = np.asarray(c, dtype=dtype)
    packed = []
    for make in (lambda v, k: v + k, lambda v, k: k + v, lambda v, k: v - k,
                 lambda v, k: k - v, lambda v, k: v * k, lambda v, k: k * v,
                 lambda v, k: v / k):
        v = ms.Variable(x)
        with ms.saved_array_hooks(lambda a, fn: packed.append(a) or a, lambda a: a):
            y = make(v, c)
        assert packed == [] and y.dtype == dtype
        y.backward(gy)
        w = ms.Variable(x)
        expected = make(w, as_array)
        expected.backward(gy)
        np.testing.assert_array_equal(y.array, expected.array)
        np.testing.assert_array_equal(v.grad, w.grad)


def test_python_number_ops_on_integer_arrays_promote_as_numpy_does():
    labels = ms.Variable(np.arange(3))
    assert (labels * 1.5).dtype == np.float64 and (labels + 1).dtype == labels.dtype
    np.testing.assert_array_equal((labels / 2).array, np.arange(3) / 2)


UNARY = {
    "neg": (F.neg, np.negative, {}),
    "exp": (F.exp, np.exp, {}),
    "log": (F.log, np.log, {"lo": 0.2}),
    "sqrt": (F.sqrt, np.sqrt, {"lo": 0.2}),
    "absolute": (F.absolute, np.abs, {"away_from": (0.0,)}),
    "square": (F.square, np.square, {}),
}


@pytest.mark.parametrize("name", list(UNARY))
@given(data=st.data())
def test_unary_ops(name, data):
    op, ref, kwargs = UNARY[name]
    x = data.draw(arrays(**kwargs))
    y = op(var(x))
    assert y.shape == x.shape
    np.testing.assert_allclose(y.array, ref(x), rtol=1e-12)
    check_grads(op, x)


def test_abs_alias_and_operator():
    v = var([-2.0, 3.0])
    assert F.abs is F.absolute
    np.testing.assert_array_equal(abs(v).array, [2.0, 3.0])
    abs(v).sum().backward()
    np.testing.assert_array_equal(v.grad, [-1.0, 1.0])


@pytest.mark.parametrize("sa, sb", [
    ((2, 3), (3, 4)),        # matrix
    ((2, 2, 3), (2, 3, 2)),  # batched
    ((2, 1, 2, 3), (3, 3, 2)),  # batch dimensions broadcast
    ((3,), (3, 2)),          # vector @ matrix
    ((2, 3), (3,)),          # matrix @ vector
    ((3,), (2, 3, 2)),       # vector @ batch
    ((2, 2, 3), (3,)),       # batch @ vector
])
def test_matmul_matches_numpy_with_gradients(sa, sb):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    y = F.matmul(var(a), var(b))
    assert y.shape == np.matmul(a, b).shape
    np.testing.assert_allclose(y.array, a @ b, rtol=1e-12)
    np.testing.assert_allclose((var(a) @ b).array, a @ b, rtol=1e-12)
    check_grads(F.matmul, a, b)


def test_matmul_vector_vector_is_an_inner_product():
    a, b = np.arange(3.0), np.arange(3.0) + 1
    y = F.matmul(var(a), var(b))
    assert y.shape == ()
    np.testing.assert_allclose(y.array, a @ b)
    check_grads(F.matmul, a, b)


@given(data=st.data())
def test_matmul_hypothesis_shapes(data):
    n, k, m = data.draw(st.tuples(*[st.integers(1, 3)] * 3))
    batch = data.draw(hnp.array_shapes(min_dims=0, max_dims=1, max_side=2))
    a = data.draw(arrays(batch + (n, k)))
    b = data.draw(arrays((k, m)))
    np.testing.assert_allclose(F.matmul(var(a), var(b)).array, a @ b, rtol=1e-12, atol=1e-12)
    check_grads(F.matmul, a, b)


@pytest.mark.parametrize("sa, sb", [((2, 3), (4, 5)), ((3,), (2, 2)), ((2, 2, 3), (2,))])
def test_matmul_shape_mismatch_names_both_shapes(sa, sb):
    with pytest.raises(ms.ShapeError) as info:
        F.matmul(var(np.zeros(sa)), var(np.zeros(sb)))
    assert str(sa) in str(info.value) and str(sb) in str(info.value)


def test_matmul_rejects_0d():
    with pytest.raises(ms.ShapeError, match="rank >= 1"):
        F.matmul(var(2.0), var(np.ones(2)))


@given(data=st.data())
def test_mean_over_axes(data):
    x = data.draw(arrays(shapes(min_dims=1)))
    axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1)
                     | st.lists(st.integers(0, x.ndim - 1), min_size=1, unique=True).map(tuple))
    keepdims = data.draw(st.booleans())
    y = F.mean(var(x), axis=axis, keepdims=keepdims)
    expected = x.mean(axis=axis, keepdims=keepdims)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.array, expected, rtol=1e-12, atol=1e-15)
    check_grads(lambda a: F.mean(a, axis=axis, keepdims=keepdims), x)
    np.testing.assert_allclose(var(x).mean().array, x.mean(), rtol=1e-12, atol=1e-15)


def test_pow_gradient_in_the_exponent():
    a, b = var([2.0, 3.0]), var([3.0, 0.5])
    (a ** b).sum().backward()
    np.testing.assert_allclose(a.grad, [3.0 * 4.0, 0.5 / np.sqrt(3.0)])
    np.testing.assert_allclose(b.grad, [8.0 * np.log(2.0), np.sqrt(3.0) * np.log(3.0)])
