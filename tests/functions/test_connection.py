"""conv2d against a naive loop, embed_id; first and second derivatives of both."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F
from memsave.functions._window import Window
from memsave.functions.connection import Convolution2DGradW, Deconvolution2D


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def conv_reference(x, W, b=None, stride=1, pad=0, dilation=1, groups=1):
    """The definition, one output pixel at a time."""
    (sy, sx), (ph, pw), (dy, dx) = _pair(stride), _pair(pad), _pair(dilation)
    n, _, h, w = x.shape
    o, cg, kh, kw = W.shape
    xpad = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dy * (kh - 1) - 1) // sy + 1
    ow = (w + 2 * pw - dx * (kw - 1) - 1) // sx + 1
    y = np.zeros((n, o, oh, ow))
    og = o // groups
    for i_n in range(n):
        for i_o in range(o):
            g = i_o // og
            for i in range(oh):
                for j in range(ow):
                    patch = xpad[i_n, g * cg:(g + 1) * cg,
                                 i * sy:i * sy + dy * (kh - 1) + 1:dy,
                                 j * sx:j * sx + dx * (kw - 1) + 1:dx]
                    y[i_n, i_o, i, j] = (patch * W[i_o]).sum() + (0 if b is None else b[i_o])
    return y


CASES = [  # (x shape, W shape, stride, pad, dilation, groups)
    ((1, 1, 4, 4), (1, 1, 2, 2), 1, 0, 1, 1),
    ((2, 2, 5, 4), (3, 2, 3, 3), 1, 1, 1, 1),
    ((1, 3, 6, 5), (2, 3, 2, 3), 2, 0, 1, 1),
    ((1, 2, 6, 6), (2, 2, 3, 2), (2, 1), (1, 2), 1, 1),
    ((1, 2, 6, 6), (2, 2, 2, 2), 1, 0, 2, 1),
    ((1, 2, 5, 6), (2, 2, 2, 3), (1, 2), 1, (2, 1), 1),
    ((2, 2, 4, 4), (2, 1, 3, 3), 1, 1, 1, 2),
    ((1, 3, 5, 5), (6, 1, 2, 2), 2, 1, 1, 3),
    ((1, 4, 5, 4), (2, 2, 3, 1), 1, (0, 1), (1, 1), 2),
]


@pytest.mark.parametrize("xs, ws, stride, pad, dilation, groups", CASES)
def test_conv2d_matches_reference(xs, ws, stride, pad, dilation, groups):
    rng = np.random.default_rng(1)
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
    y = F.conv2d(ms.Variable(x), W, b, stride, pad, dilation, groups)
    np.testing.assert_allclose(y.array, conv_reference(x, W, b, stride, pad, dilation, groups),
                               rtol=1e-12, atol=1e-12)
    y = F.conv2d(ms.Variable(x), W, None, stride, pad, dilation, groups)
    np.testing.assert_allclose(y.array, conv_reference(x, W, None, stride, pad, dilation, groups),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xs, ws, stride, pad, dilation, groups", CASES)
def test_conv2d_gradients(xs, ws, stride, pad, dilation, groups):
    rng = np.random.default_rng(2)
    x, W, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])

    def f(x, W, b):
        return F.conv2d(x, W, b, stride, pad, dilation, groups)

    assert ms.gradcheck(f, [x, W, b])
    # Squaring makes the first gradient depend on gy's own graph, so double backprop
    # goes through all three nodes (Convolution2D, Deconvolution2D, Convolution2DGradW).
    assert ms.gradgradcheck(lambda x, W, b: f(x, W, b) ** 2, [x, W, b])


@pytest.mark.parametrize("stride, pad, dilation, groups", [(1, 0, 1, 1), (2, 1, 1, 2),
                                                           ((1, 2), (2, 0), (2, 1), 1)])
def test_gradient_nodes_are_differentiable(stride, pad, dilation, groups):
    rng = np.random.default_rng(3)
    win = Window.make((2, 3), stride, pad, dilation)
    x, W = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((2, 2 // groups, 2, 3))
    gy = rng.standard_normal(F.conv2d(x, W, stride=stride, pad=pad, dilation=dilation,
                                      groups=groups).shape)

    def deconv(gy, W):
        return Deconvolution2D(win, groups, (5, 6)).apply(gy, W)[0] ** 2

    def grad_w(x, gy):
        return Convolution2DGradW(win, groups).apply(x, gy)[0] ** 2

    assert ms.gradcheck(deconv, [gy, W]) and ms.gradgradcheck(deconv, [gy, W])
    assert ms.gradcheck(grad_w, [x, gy]) and ms.gradgradcheck(grad_w, [x, gy])


@st.composite
def conv_configs(draw):
    groups = draw(st.integers(1, 2))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    dy, dx = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h = max(1, dy * (kh - 1) + 1 - 2 * ph) + draw(st.integers(0, 3))
    w = max(1, dx * (kw - 1) + 1 - 2 * pw) + draw(st.integers(0, 3))
    n = draw(st.integers(1, 2))
    return (n, groups * cg, h, w), (groups * og, cg, kh, kw), (sy, sx), (ph, pw), (dy, dx), groups


@given(conv_configs(), st.booleans())
def test_conv2d_property(config, with_bias):
    xs, ws, stride, pad, dilation, groups = config
    rng = np.random.default_rng(4)
    x, W = rng.standard_normal(xs), rng.standard_normal(ws)
    b = rng.standard_normal(ws[0]) if with_bias else None
    inputs = [x, W] if b is None else [x, W, b]

    def f(*args):
        return F.conv2d(*args[:2], *args[2:], stride=stride, pad=pad, dilation=dilation,
                        groups=groups)

    np.testing.assert_allclose(f(*inputs).array,
                               conv_reference(x, W, b, stride, pad, dilation, groups),
                               rtol=1e-12, atol=1e-12)
    assert ms.gradcheck(f, inputs)


def test_conv2d_keeps_only_x_and_w():
    rng = np.random.default_rng(5)
    x0 = ms.Variable(rng.standard_normal((1, 2, 6, 6)))
    W = ms.Parameter(rng.standard_normal((3, 2, 3, 3)))
    x = F.tanh(x0)  # an intermediate: kept through the hook; W is a leaf, kept by reference
    saved = []
    with ms.saved_array_hooks(lambda a, fn: saved.append((type(fn).__name__, a.shape)) or a,
                              lambda a: a):
        y = F.conv2d(x, W, stride=1, pad=1)
    assert saved == [("Convolution2D", (1, 2, 6, 6))]
    y.sum().backward()
    assert x0.grad.shape == x0.shape and W.grad.shape == W.shape


def test_conv2d_float32_and_grad_shapes():
    x = ms.Variable(np.ones((2, 2, 4, 4), dtype=np.float32))
    W = ms.Parameter(np.ones((4, 1, 2, 2), dtype=np.float32))
    b = ms.Parameter(np.zeros(4, dtype=np.float32))
    y = F.conv2d(x, W, b, stride=2, groups=2)
    assert y.dtype == np.float32 and y.shape == (2, 4, 2, 2)
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, np.full(x.shape, 2.0))
    np.testing.assert_array_equal(b.grad, np.full(4, 8.0))


def test_conv2d_errors_name_the_shapes():
    x = np.zeros((1, 3, 5, 5))
    with pytest.raises(ms.ShapeError, match=r"\(1, 3, 5, 5\).*\(2, 2, 3, 3\)"):
        F.conv2d(x, np.zeros((2, 2, 3, 3)))
    with pytest.raises(ms.ShapeError, match="groups=2"):
        F.conv2d(x, np.zeros((2, 1, 3, 3)), groups=2)
    with pytest.raises(ms.ShapeError, match=r"b has shape \(3,\)"):
        F.conv2d(x, np.zeros((2, 3, 3, 3)), np.zeros(3))
    with pytest.raises(ms.ShapeError, match="smaller than"):
        F.conv2d(x, np.zeros((2, 3, 3, 3)), dilation=3)
    with pytest.raises(ms.ShapeError, match=r"\(N, C, H, W\)"):
        F.conv2d(np.zeros((3, 5, 5)), np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="stride"):
        F.conv2d(x, np.zeros((2, 3, 3, 3)), stride=0)


# ----- embed_id ----------------------------------------------------------------------------

def test_embed_id_forward_and_scatter_add():
    W = ms.Parameter(np.arange(12.0).reshape(4, 3))
    ids = np.array([[1, 3, 1], [0, 1, 2]])
    y = F.embed_id(ids, W)
    np.testing.assert_array_equal(y.array, W.array[ids])
    y.backward(np.ones(y.shape))
    np.testing.assert_array_equal(W.grad, np.array([[1.0] * 3, [3.0] * 3, [1.0] * 3, [1.0] * 3]))


@given(st.lists(st.integers(0, 4), min_size=1, max_size=6), st.sampled_from([np.int32, np.int64,
                                                                              np.uint8]))
def test_embed_id_gradients(ids, dtype):
    ids = np.array(ids, dtype=dtype).reshape(-1, 1) if len(ids) % 2 else \
        np.array(ids, dtype=dtype).reshape(2, -1)
    W = np.random.default_rng(6).standard_normal((5, 3))
    assert ms.gradcheck(lambda ids, W: F.embed_id(ids, W), [ids, W])
    assert ms.gradgradcheck(lambda ids, W: F.embed_id(ids, W) ** 2, [ids, W])


def test_embed_id_errors():
    W = np.zeros((4, 2))
    with pytest.raises(ms.DTypeError, match="integer"):
        F.embed_id(np.array([0.0, 1.0]), W)
    with pytest.raises(ValueError, match="id 7 .* 4 rows"):
        F.embed_id(np.array([[0, 7], [1, 2]]), W)
    with pytest.raises(ValueError, match="id -1"):
        F.embed_id(np.array([-1]), W)
    with pytest.raises(ms.ShapeError):
        F.embed_id(np.array([0]), np.zeros(4))
