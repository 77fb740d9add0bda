"""Activations (memsave/functions/activation.py): values against NumPy references, first and
second derivatives against central differences, numerical stability, what is kept."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F
from memsave.memory import saved_residuals

from ._strategies import arrays, check_grads, shapes, var

_erf = np.vectorize(math.erf)


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def np_logsumexp(x, axis, keepdims=False):
    m = x.max(axis=axis, keepdims=True)
    out = np.log(np.exp(x - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


ELEMENTWISE = {
    "tanh": (F.tanh, np.tanh, {}),
    "sigmoid": (F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), {}),
    "relu": (F.relu, lambda x: np.maximum(x, 0), {"away_from": (0.0,)}),
    "leaky_relu": (F.leaky_relu, lambda x: np.where(x > 0, x, 0.2 * x), {"away_from": (0.0,)}),
    "leaky_relu_negative_slope": (lambda x: F.leaky_relu(x, slope=-0.5),
                                  lambda x: np.where(x > 0, x, -0.5 * x), {"away_from": (0.0,)}),
    "gelu_tanh": (F.gelu, lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi)
                                                            * (x + 0.044715 * x ** 3))), {}),
    "gelu_exact": (lambda x: F.gelu(x, approximate="none"),
                   lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))), {}),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE))
@given(data=st.data())
def test_elementwise_activations(name, data):
    op, ref, kwargs = ELEMENTWISE[name]
    x = data.draw(arrays(lo=-3.0, hi=3.0, **kwargs))
    y = op(var(x))
    assert y.shape == x.shape and y.dtype == np.float64
    np.testing.assert_allclose(y.array, ref(x), rtol=1e-12, atol=1e-15)
    check_grads(op, x)


@pytest.mark.parametrize("op", [F.tanh, F.sigmoid, F.relu, F.leaky_relu, F.gelu,
                                lambda x: F.gelu(x, approximate="none"), F.softmax,
                                F.log_softmax, F.logsumexp])
def test_float32_in_float32_out(op):
    x = ms.Variable(np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3))
    y = op(x)
    assert y.dtype == np.float32
    y.backward(np.ones(y.shape, dtype=np.float32))
    assert x.grad.dtype == np.float32


def test_gelu_exact_matches_math_erf_far_into_the_tails():
    x = np.concatenate([np.linspace(-40, 40, 2001), [np.inf, 0.0, -1e-300]])
    y = F.gelu(var(x), approximate="none").array
    expected = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) if np.isfinite(v) else v
                         for v in x])
    # rtol: rounding x / sqrt(2) moves erfc by ~x**2 ulps deep in the tail
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-300)
    v = var(np.array([-1.0, 0.0, 2.0]))
    F.gelu(v, approximate="none").sum().backward()
    pdf = np.exp(-0.5 * v.array ** 2) / np.sqrt(2 * np.pi)
    cdf = 0.5 * (1 + _erf(v.array / np.sqrt(2)))
    np.testing.assert_allclose(v.grad, cdf + v.array * pdf, rtol=1e-14)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="'sigmoid'"):
        F.gelu(var([1.0]), approximate="sigmoid")


def test_leaky_relu_gradient_is_slope_on_the_negative_side():
    v = var([-2.0, 3.0])
    F.leaky_relu(v, slope=0.1).sum().backward()
    np.testing.assert_allclose(v.grad, [0.1, 1.0])


@st.composite
def with_axis(draw, min_dims=1):
    x = draw(arrays(shapes(min_dims=min_dims), lo=-4.0, hi=4.0))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    return x, axis


@given(with_axis())
def test_softmax(case):
    x, axis = case
    y = F.softmax(var(x), axis=axis)
    np.testing.assert_allclose(y.array, np_softmax(x, axis), rtol=1e-12)
    np.testing.assert_allclose(y.array.sum(axis=axis), 1.0, rtol=1e-12)
    check_grads(lambda a: F.softmax(a, axis=axis), x)


@given(with_axis())
def test_log_softmax(case):
    x, axis = case
    y = F.log_softmax(var(x), axis=axis)
    np.testing.assert_allclose(y.array, np.log(np_softmax(x, axis)), rtol=1e-10, atol=1e-12)
    check_grads(lambda a: F.log_softmax(a, axis=axis), x)


@given(data=st.data())
def test_logsumexp(data):
    x = data.draw(arrays(shapes(min_dims=1), lo=-4.0, hi=4.0))
    axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1)
                     | st.lists(st.integers(0, x.ndim - 1), min_size=1, unique=True).map(tuple))
    keepdims = data.draw(st.booleans())
    y = F.logsumexp(var(x), axis=axis, keepdims=keepdims)
    expected = np_logsumexp(x, axis, keepdims)
    assert y.shape == np.shape(expected)
    np.testing.assert_allclose(y.array, expected, rtol=1e-12)
    check_grads(lambda a: F.logsumexp(a, axis=axis, keepdims=keepdims), x)


def test_softmax_family_is_stable_for_large_and_infinite_inputs():
    x = np.array([[1000.0, 1000.0, -1000.0], [-np.inf, 0.0, -np.inf]])
    with np.errstate(divide="raise", over="raise", invalid="raise"):  # no inf - inf, no 0/0
        p = F.softmax(var(x)).array
        lp = F.log_softmax(var(x)).array
        lse = F.logsumexp(var(x)).array
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(lp[0, :2], [-np.log(2)] * 2)
    assert lp[0, 2] == -2000.0 - np.log(2)
    np.testing.assert_allclose(lse, [1000.0 + np.log(2), 0.0])
    v = var(x[:1])
    F.log_softmax(v).sum().backward()
    np.testing.assert_allclose(v.grad, [[-0.5, -0.5, 1.0]], atol=1e-12)
    with np.errstate(divide="ignore"):  # log(0), as np.log gives
        np.testing.assert_array_equal(F.logsumexp(var(np.full(3, -np.inf))).array, -np.inf)


def test_softmax_backward_matches_its_jacobian():
    x = np.array([0.3, -1.2, 2.0])
    p = np_softmax(x, -1)
    jacobian = np.diag(p) - np.outer(p, p)
    g = np.array([1.0, -2.0, 0.5])
    v = var(x)
    F.softmax(v).backward(g)
    np.testing.assert_allclose(v.grad, jacobian.T @ g, rtol=1e-12)


def test_softmax_family_keeps_outputs_not_inputs():
    x = var(np.linspace(-1, 1, 12).reshape(3, 4))

    def kept(fn):
        return sorted((r.op, r.shape) for r in saved_residuals(fn, x))

    # (x * 1.0) is an intermediate: an op that kept it would show up here
    assert kept(lambda a: F.softmax(a * 1.0)) == [("Softmax", (3, 4))]
    assert kept(lambda a: F.log_softmax(a * 1.0, axis=0)) == [("LogSoftmax", (3, 4))]
    assert kept(lambda a: F.relu(a * 1.0) + F.leaky_relu(a * 1.0)) == [
        ("LeakyReLU", (3, 4)), ("ReLU", (3, 4))]
    assert kept(lambda a: F.logsumexp(a * 1.0)) == [("LogSumExp", (3,)), ("LogSumExp", (3, 4))]


ACTIVATIONS = {"tanh": F.tanh, "sigmoid": F.sigmoid, "relu": F.relu, "leaky_relu": F.leaky_relu,
               "gelu": F.gelu, "softmax": F.softmax, "log_softmax": F.log_softmax,
               "logsumexp": F.logsumexp}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.int64, np.uint8])
def test_non_float_input_raises_naming_the_dtype(name, dtype):
    x = ms.Variable(np.ones((2, 3), dtype=dtype), requires_grad=False)
    with pytest.raises(ms.DTypeError, match=f"{name} needs a floating-point x, got dtype "
                                            f"{np.dtype(dtype)}; cast it first"):
        ACTIVATIONS[name](x)
    with pytest.raises(ms.DTypeError, match=f"got dtype {np.dtype(dtype)}"):
        ACTIVATIONS[name](x.array)


@pytest.mark.parametrize("op", [F.softmax, F.log_softmax, F.logsumexp])
def test_axis_errors_name_the_argument(op):
    x = var(np.zeros((2, 3)))
    for bad in (1.0, "1", True, (0, 1.5)):
        with pytest.raises(TypeError, match=r"axis must be an int, a tuple of ints or None, got "):
            op(x, axis=bad)
    for bad in (2, -3, (0, 5)):
        with pytest.raises(ms.ShapeError, match="out of range for an array of rank 2"):
            op(x, axis=bad)
    assert op(x, axis=np.int64(1)).shape[0] == 2
