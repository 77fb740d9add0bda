"""Max and average pooling against naive loops; first and second derivatives; no padded or
unfolded copy of the input."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F
from memsave.functions._window import Window
from memsave.functions.pooling import AveragePooling2D, AveragePooling2DGrad, MaxPooling2D
from memsave.memory import measure


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def pool_reference(x, ksize, stride, pad, reduce, pad_value):
    (kh, kw), (ph, pw) = _pair(ksize), _pair(pad)
    sy, sx = _pair(ksize if stride is None else stride)
    n, c, h, w = x.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    oh, ow = (h + 2 * ph - kh) // sy + 1, (w + 2 * pw - kw) // sx + 1
    y = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            y[:, :, i, j] = reduce(xpad[:, :, i * sy:i * sy + kh, j * sx:j * sx + kw], axis=(2, 3))
    return y


def distinct(shape, seed=0):
    """Values at least 0.1 apart, so no finite difference crosses a max pooling kink."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0


CASES = [  # (x shape, ksize, stride, pad)
    ((1, 1, 4, 4), 2, None, 0),
    ((2, 2, 5, 5), 3, 2, 1),
    ((1, 2, 5, 6), (2, 3), (1, 2), (1, 0)),
    ((1, 1, 6, 5), (3, 2), 1, (1, 1)),
]
ZERO_PADDED = [((2, 1, 3, 3), 3, 1, 2)]  # windows of padding only: average pooling only


@pytest.mark.parametrize("shape, ksize, stride, pad", CASES)
def test_max_pooling_matches_reference_and_gradients(shape, ksize, stride, pad):
    x = distinct(shape)
    y = F.max_pooling_2d(ms.Variable(x), ksize, stride, pad)
    np.testing.assert_array_equal(y.array, pool_reference(x, ksize, stride, pad, np.max, -np.inf))

    def f(x):
        return F.max_pooling_2d(x, ksize, stride, pad)

    assert ms.gradcheck(f, [x])
    assert ms.gradgradcheck(lambda x: f(x) ** 2, [x])


@pytest.mark.parametrize("shape, ksize, stride, pad", CASES + ZERO_PADDED)
def test_average_pooling_matches_reference_and_gradients(shape, ksize, stride, pad):
    x = np.random.default_rng(1).standard_normal(shape)
    y = F.average_pooling_2d(ms.Variable(x), ksize, stride, pad)
    np.testing.assert_allclose(y.array, pool_reference(x, ksize, stride, pad, np.mean, 0.0),
                               rtol=1e-12, atol=1e-12)

    def f(x):
        return F.average_pooling_2d(x, ksize, stride, pad)

    assert ms.gradcheck(f, [x])
    assert ms.gradgradcheck(lambda x: f(x) ** 2, [x])


@st.composite
def pool_configs(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    h = max(1, kh - 2 * ph) + draw(st.integers(0, 3))
    w = max(1, kw - 2 * pw) + draw(st.integers(0, 3))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 2)), h, w), (kh, kw), (sy, sx), (ph, pw)


@given(pool_configs())
def test_pooling_property(config):
    shape, ksize, stride, pad = config
    x = distinct(shape, seed=2)
    np.testing.assert_array_equal(F.max_pooling_2d(x, ksize, stride, pad).array,
                                  pool_reference(x, ksize, stride, pad, np.max, -np.inf))
    np.testing.assert_allclose(F.average_pooling_2d(x, ksize, stride, pad).array,
                               pool_reference(x, ksize, stride, pad, np.mean, 0.0), atol=1e-12)
    assert ms.gradcheck(lambda x: F.max_pooling_2d(x, ksize, stride, pad), [x])
    assert ms.gradcheck(lambda x: F.average_pooling_2d(x, ksize, stride, pad), [x])


def test_max_pooling_gradient_goes_to_the_first_maximum():
    x = ms.Variable(np.array([[[[1.0, 5.0, 5.0, 0.0]]]]))
    y = F.max_pooling_2d(x, (1, 2), stride=1)
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(x.grad, [[[[0.0, 2.0, 1.0, 0.0]]]])


def test_max_pooling_keeps_only_small_argmax_indices():
    x0 = ms.Variable(distinct((2, 3, 6, 6)))
    x = F.tanh(x0)
    saved = []

    def pack(a, fn):
        saved.append((type(fn).__name__, a.shape, a.dtype))
        return a

    with ms.saved_array_hooks(pack, lambda a: a):
        y = F.max_pooling_2d(x, 2)
        z = F.average_pooling_2d(x, 3, 1, 1)
    assert saved == [("MaxPooling2D", (2, 3, 3, 3), np.dtype(np.int8))]
    (y.sum() + z.sum()).backward()
    assert x0.grad.shape == x0.shape


def test_pooling_float32_and_errors():
    x = np.ones((1, 1, 4, 4), dtype=np.float32)
    assert F.max_pooling_2d(x, 2).dtype == np.float32
    assert F.average_pooling_2d(x, 2, pad=1).dtype == np.float32
    with pytest.raises(ms.ShapeError, match=r"\(4, 4\)"):
        F.average_pooling_2d(np.ones((4, 4)), 2)
    with pytest.raises(ms.ShapeError, match="smaller than"):
        F.max_pooling_2d(x, 5)
    with pytest.raises(ValueError, match="pad"):
        F.max_pooling_2d(x, 2, pad=2)


def test_pooling_allocates_no_copy_of_the_input():
    """Padded 3x3 windows, stride 1: besides the result (and max pooling's int8 argmax) the
    kernels allocate one comparison mask (1/8 of x in float64) and NumPy's ufunc iteration
    buffers (at most 3 x 8192 elements), where a padded copy alone was more than x."""
    x = np.random.default_rng(3).standard_normal((8, 8, 32, 32))
    win = Window.make(3, 1, 1)
    runs = {"max": lambda: MaxPooling2D(win).apply(x)[0].array,
            "average": lambda: AveragePooling2D(win).apply(x)[0].array,
            "average grad": lambda: AveragePooling2DGrad(win, x.shape).apply(x)[0].array}
    with ms.no_grad():
        for name, run in runs.items():
            with measure() as m:
                result = run()
            transient = m.peak - result.nbytes - (x.size if name == "max" else 0)
            assert transient <= x.nbytes // 8 + 3 * 8192 * 8 + 8192, (name, transient / x.nbytes)
