"""conv2d against a naive loop and the previous full-im2col kernels, its bounded workspace,
dtype checks of linear and conv2d, embed_id; first and second derivatives of both."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F
from memsave.functions._window import Window
from memsave.functions.connection import Convolution2D, Convolution2DGradW, Deconvolution2D
from memsave.memory import measure


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


# ----- the previous kernels: one full im2col matrix of the padded input ----------------------

def old_im2col(x, win):
    x = np.pad(x, ((0, 0), (0, 0), (win.ph, win.ph), (win.pw, win.pw)))
    n, c, h, w = x.shape
    oh, ow = win.out_size(h - 2 * win.ph, w - 2 * win.pw)
    s0, s1, s2, s3 = x.strides
    return np.lib.stride_tricks.as_strided(
        x, (n, c, win.kh, win.kw, oh, ow),
        (s0, s1, s2 * win.dy, s3 * win.dx, s2 * win.sy, s3 * win.sx))


def old_conv(x, W, win, groups):
    col = old_im2col(x, win)
    n, c, kh, kw, oh, ow = col.shape
    o = W.shape[0]
    col = col.reshape(n, groups, (c // groups) * kh * kw, oh * ow)
    return np.matmul(W.reshape(groups, o // groups, -1), col).reshape(n, o, oh, ow)


def old_deconv(gy, W, win, groups, hw):
    n, o, oh, ow = gy.shape
    _, cg, kh, kw = W.shape
    col = np.matmul(W.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1),
                    gy.reshape(n, groups, o // groups, oh * ow))
    col = col.reshape(n, groups * cg, kh, kw, oh, ow)
    img = np.zeros((n, groups * cg, hw[0] + 2 * win.ph, hw[1] + 2 * win.pw))
    for ky in range(kh):
        for kx in range(kw):
            i0, j0 = ky * win.dy, kx * win.dx
            img[:, :, i0:i0 + win.sy * (oh - 1) + 1:win.sy,
                j0:j0 + win.sx * (ow - 1) + 1:win.sx] += col[:, :, ky, kx]
    return img[:, :, win.ph:win.ph + hw[0], win.pw:win.pw + hw[1]]


def old_conv_grad_w(x, gy, win, groups):
    col = old_im2col(x, win)
    n, c, kh, kw, oh, ow = col.shape
    o, cg, p = gy.shape[1], c // groups, oh * ow
    col = col.reshape(n, groups, cg * kh * kw, p).transpose(1, 0, 3, 2)
    col = col.reshape(groups, n * p, cg * kh * kw)
    gy = gy.reshape(n, groups, o // groups, p).transpose(1, 2, 0, 3)
    return np.matmul(gy.reshape(groups, o // groups, n * p), col).reshape(o, cg, kh, kw)


@given(conv_configs(), st.sampled_from([None, 1, 200, 10**6]))
def test_kernels_match_the_previous_full_im2col_kernels(config, chunk_bytes):
    """Whole-sample chunks, row blocks (1 byte: one output row at a time) and one chunk."""
    xs, ws, stride, pad, dilation, groups = config
    rng = np.random.default_rng(7)
    x, W = rng.standard_normal(xs), rng.standard_normal(ws)
    win = Window.make(ws[2:], stride, pad, dilation)
    gy = rng.standard_normal((xs[0], ws[0]) + win.out_size(*xs[2:]))
    with ms.no_grad(), ms.using_config("conv_chunk_bytes", chunk_bytes):
        y = Convolution2D(win, groups).apply(x, W)[0].array
        gx = Deconvolution2D(win, groups, xs[2:]).apply(gy, W)[0].array
        gW = Convolution2DGradW(win, groups).apply(x, gy)[0].array
    np.testing.assert_allclose(y, old_conv(x, W, win, groups), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, old_deconv(gy, W, win, groups, xs[2:]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gW, old_conv_grad_w(x, gy, win, groups), rtol=1e-12, atol=1e-12)


def _transient_bytes(run):
    """Peak live bytes of ``run()`` above the start, less its result's bytes."""
    with measure() as m:
        result = run()
    return m.peak - result.nbytes


# NumPy's ufuncs on strided views (the col2im adds) allocate iteration buffers of up to
# 8192 elements per operand: a constant next to a real layer's output.
UFUNC_BUFFERS = 3 * 8192 * 8


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("chunk_bytes", [None, 200_000])
def test_conv_transient_memory_is_bounded_by_the_output(chunk_bytes, stride):
    """Forward, grad-x and grad-W each allocate at most about one output (or the configured
    chunk) besides their result, where one full im2col matrix was 9 outputs.  Row blocks
    (stride 1, 200 kB) add the block's y rows, 1/9 of its columns here.  Stride 2 takes the
    scatter path for grad-x."""
    rng = np.random.default_rng(8)
    x, W = rng.standard_normal((16, 8, 32, 32)), rng.standard_normal((8, 8, 3, 3))
    win = Window.make(3, stride, 1)
    gy = rng.standard_normal((16, 8) + win.out_size(32, 32))
    chunk = gy.nbytes if chunk_bytes is None else chunk_bytes
    bound = chunk + chunk // 9 + UFUNC_BUFFERS + 8192
    assert 9 * gy.nbytes == old_im2col(x, win).reshape(16, -1).nbytes
    runs = {"forward": lambda: Convolution2D(win, 1).apply(x, W)[0].array,
            "grad-x": lambda: Deconvolution2D(win, 1, (32, 32)).apply(gy, W)[0].array,
            "grad-W": lambda: Convolution2DGradW(win, 1).apply(x, gy)[0].array}
    with ms.no_grad(), ms.using_config("conv_chunk_bytes", chunk_bytes):
        for name, run in runs.items():
            transient = _transient_bytes(run)
            assert chunk // 2 <= transient <= bound, (name, transient, chunk)


def test_conv2d_transient_memory_with_backward():
    """A whole conv2d step, graph and all, peaks below its output plus x's gradient plus one
    output of workspace (it used to be ~10 outputs: np.pad copy, im2col, transposed copies)."""
    rng = np.random.default_rng(9)
    x = ms.Variable(rng.standard_normal((16, 8, 32, 32)))
    W = ms.Parameter(rng.standard_normal((8, 8, 3, 3)))
    y_bytes = x.array.nbytes
    with measure() as m:
        F.conv2d(x, W, pad=1).sum().backward()
    assert m.peak <= 3 * y_bytes + UFUNC_BUFFERS + 16384, m.peak / y_bytes


# ----- dtypes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("x_shape", [(3, 4), (2, 3, 4)])
@pytest.mark.parametrize("trainable", ["xWb", "Wb", "xb", "b", "xW"])
def test_linear_first_and_second_derivatives(x_shape, trainable):
    # W's and b's gradients come from one op (LinearGradParams); b alone goes through the
    # engine's sum_to.  Every combination of what is trained, on 2-D and 3-D inputs.
    rng = np.random.default_rng(3)
    arrays = {"x": rng.standard_normal(x_shape), "W": rng.standard_normal((5, 4)),
              "b": rng.standard_normal(5)}

    def f(*trained):
        args = dict(arrays, **dict(zip(trainable, trained)))   # the others stay constants
        return F.tanh(F.linear(args["x"], args["W"], args["b"]))

    inputs = [arrays[name] for name in trainable]
    assert ms.gradcheck(f, inputs) and ms.gradgradcheck(f, inputs)
    x, W, b = (ms.Variable(arrays[name], requires_grad=name in trainable) for name in "xWb")
    F.linear(x, W, b).sum().backward()
    rows = np.prod(x_shape[:-1])
    if "b" in trainable:
        np.testing.assert_allclose(b.grad, np.full(5, rows, dtype=float))
    if "W" in trainable:
        np.testing.assert_allclose(W.grad, np.broadcast_to(arrays["x"].reshape(rows, 4).sum(0),
                                                           (5, 4)))


def test_linear_and_conv2d_refuse_mixed_dtypes():
    x64, W32 = np.ones((2, 3)), np.ones((4, 3), dtype=np.float32)
    with pytest.raises(ms.DTypeError, match=r"linear: x is float64 but W is float32; .*"
                                            r"x\.astype\(np\.float32\).*dtype=np\.float64"):
        F.linear(ms.Variable(x64), W32)
    with pytest.raises(ms.DTypeError, match=r"b is float64 but W is float32.*b\.astype"):
        F.linear(x64.astype(np.float32), W32, np.zeros(4))
    x = np.ones((1, 2, 4, 4))
    with pytest.raises(ms.DTypeError, match=r"conv2d: x is float64 but W is float32"):
        F.conv2d(x, np.ones((3, 2, 3, 3), dtype=np.float32))
    with pytest.raises(ms.DTypeError, match=r"conv2d: b is float32 but W is float64"):
        F.conv2d(x, np.ones((3, 2, 3, 3)), np.zeros(3, dtype=np.float32))
    with pytest.raises(ms.DTypeError, match=r"x is int64 but W is float64"):
        F.conv2d(np.ones((1, 2, 4, 4), dtype=np.int64), np.ones((3, 2, 3, 3)))


def test_float32_linear_layer_refuses_float64_inputs():
    with pytest.raises(ms.DTypeError, match=r"x is float64 but W is float32"):
        ms.nn.Linear(2, 3)(np.ones((1, 2)))
    assert ms.nn.Linear(2, 3)(np.ones((1, 2), dtype=np.float32)).dtype == np.float32


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
