"""Connections with parameters: linear, conv2d, embed_id.

Convolutions keep only ``x`` and ``W`` for backward.  Every gradient is itself a
FunctionNode with a backward, so convolutions can be differentiated twice.

Workspace bound: the forward, the input gradient and the weight gradient each unfold x
(or the input gradient's columns) one chunk at a time into one reused buffer, so besides
its result a convolution allocates at most B bytes, where B is
``config.conv_chunk_bytes`` or, when that is None (the default), the bytes of the
convolution's output y.  A chunk holds whole samples while one sample's columns fit in B,
otherwise blocks of output rows of one sample (at least one row, even above B); row
blocks add their rows of y (B * C_out / (C * kh * kw)).  NumPy's ufunc buffers for
strided adds (at most 3 x 8192 elements) come on top.  Padding is never copied.

>>> import numpy as np, memsave as ms
>>> x, W = ms.Variable(np.ones((4, 3))), ms.Parameter(np.ones((2, 3)))
>>> linear(x, W).shape
(4, 2)
"""
from __future__ import annotations

from typing import Any

from memsave.backend import get_array_module, scatter_add
from memsave.config import config
from memsave.core.backprop import take_input
from memsave.core.fit import broadcast_to
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable
from memsave.errors import DTypeError, ShapeError
from memsave.functions._window import Window
from memsave.functions.array import sum as sum_
from memsave.functions.math import matmul

__all__ = ["linear", "conv2d", "embed_id"]


class Linear(FunctionNode):
    """``y = x @ W.T + b`` over the last axis of ``x``; ``W`` has shape (out, in)."""

    def forward(self, x, W, b=None):
        self.retain_inputs(0, 1)
        y = x @ W.T
        if b is not None:
            y += b
        return y

    def backward(self, indexes, gy):
        x, W = self.retained_inputs()
        gW = gb = None
        if 1 in indexes:                        # W's gradient, and b's in the same op
            with_bias = len(self.inputs) == 3 and 2 in indexes
            grads = LinearGradParams(with_bias).apply(gy, x)
            gW, gb = grads if with_bias else (grads[0], None)
        elif 2 in indexes:
            gb = gy                             # the engine sums it to b's shape (sum_to)
        del x                                   # done with x: gx may take its buffer
        gx = _linear_grad_x(self, gy, W) if 0 in indexes else None
        return (gx, gW) if len(self.inputs) == 2 else (gx, gW, gb)


def _linear_grad_x(f: Linear, gy: Variable, W: Variable) -> Variable:
    """``gy @ W``, written into the buffer of ``f``'s input x when backward may take it over
    (nothing else holds x: see memsave.core.backprop.take_input)."""
    buffer = take_input(f, 0)
    if buffer is None:
        return matmul(gy, W)
    xp = get_array_module(buffer)
    return Variable(xp.matmul(gy.array, W.array, out=buffer), requires_grad=False)


class LinearGradParams(FunctionNode):
    """The parameter gradients of :class:`Linear` in one op: ``gy.T @ x`` over all leading
    axes, and with ``with_bias`` also ``gy`` summed over them (outputs gW, gb)."""

    def __init__(self, with_bias=False):
        self.with_bias = with_bias

    def forward(self, gy, x):
        self.retain_inputs(0, 1)
        rows = gy.reshape(-1, gy.shape[-1])
        gW = rows.T @ x.reshape(-1, x.shape[-1])
        return (gW, rows.sum(axis=0)) if self.with_bias else gW

    def backward(self, indexes, ggW, ggb=None):
        gy, x = self.retained_inputs()
        g_gy = g_x = None
        if 0 in indexes:
            g_gy = broadcast_to(ggb, gy.shape) if ggW is None else linear(x, ggW, ggb)
        if 1 in indexes and ggW is not None:
            g_x = matmul(gy, ggW)
        return g_gy, g_x


def _check_dtypes(name, x, W, b):
    """x, W and b must share one dtype: mixing would silently promote (float64 activations
    and a float64 W.grad behind float32 layers)."""
    if x.dtype != W.dtype:
        raise DTypeError(f"{name}: x is {x.dtype} but W is {W.dtype}; cast the input to the "
                         f"layer's dtype (x.astype(np.{W.dtype})) or build the layer in the "
                         f"input's (dtype=np.{x.dtype})")
    if b is not None and b.dtype != W.dtype:
        raise DTypeError(f"{name}: b is {b.dtype} but W is {W.dtype}; give both one dtype "
                         f"(b.astype(np.{W.dtype}))")


def linear(x: Any, W: Any, b: Any = None) -> Variable:
    """Affine map ``x @ W.T + b`` (PyTorch/Chainer layout: ``W`` is (out, in)).

    >>> import numpy as np
    >>> linear(Variable(np.ones((1, 2))), np.ones((3, 2)), np.zeros(3)).array
    array([[2., 2., 2.]])
    """
    x_shape, W_shape = x.shape, W.shape
    if len(W_shape) != 2 or x_shape[-1] != W_shape[1]:
        raise ShapeError(f"linear: x has shape {tuple(x_shape)} but W has shape {tuple(W_shape)}; "
                         f"expected W of shape (out, {x_shape[-1]})")
    if b is not None and tuple(b.shape) != (W_shape[0],):
        raise ShapeError(f"linear: b has shape {tuple(b.shape)}, expected ({W_shape[0]},)")
    if x.dtype != W.dtype or (b is not None and b.dtype != W.dtype):
        _check_dtypes("linear", x, W, b)
    args = (x, W) if b is None else (x, W, b)
    return Linear().apply(*args)[0]


# ----- 2-D convolution -------------------------------------------------------------------
# Three FunctionNodes, each the others' gradient: Convolution2D (y from x, W),
# Deconvolution2D (x-shaped from y-shaped and W) and Convolution2DGradW (W-shaped from
# x and y-shaped).  Each keeps only its two inputs.  Each kernel walks the batch in chunks
# (whole samples, or blocks of output rows of one sample) and reuses one column buffer of
# at most ``_budget`` bytes: one GEMM per chunk, written straight into the result.

def _budget(y_shape, itemsize):
    """Largest column chunk in bytes: ``config.conv_chunk_bytes``, or else the bytes of the
    convolution's output y."""
    limit = config.conv_chunk_bytes
    if limit is not None:
        return int(limit)
    n, o, oh, ow = y_shape
    return n * o * oh * ow * itemsize


def _chunks(n, oh, row_bytes, budget):
    """(n0, n1, r0, r1): whole samples while one sample's columns fit in ``budget`` bytes,
    otherwise blocks of output rows of one sample (at least one row)."""
    if oh * row_bytes <= budget:
        step = budget // (oh * row_bytes)
        return [(n0, min(n, n0 + step), 0, oh) for n0 in range(0, n, step)]
    step = max(1, budget // row_bytes)
    return [(i, i + 1, r0, min(oh, r0 + step)) for i in range(n) for r0 in range(0, oh, step)]


def _buffer(xp, chunks, row_elems, dtype):
    """One flat buffer, zeroed, big enough for the largest chunk's columns."""
    return xp.zeros(max((n1 - n0) * (r1 - r0) for n0, n1, r0, r1 in chunks) * row_elems, dtype)


def _columns(x, win, budget):
    """Yield (n0, n1, r0, r1, col) over the chunks of x's column matrix: ``col[i, c, ky, kx,
    r, j]`` is the pixel of sample n0 + i under kernel offset (ky, kx) of the window at
    output (r0 + r, j), zero where that pixel is padding.  ``col`` is a view of one buffer,
    overwritten by the next chunk."""
    xp = get_array_module(x)
    n, c, h, w = x.shape
    oh, ow = win.out_size(h, w)
    row_elems = c * win.kh * win.kw * ow
    chunks = _chunks(n, oh, row_elems * x.itemsize, budget)
    flat = _buffer(xp, chunks, row_elems, x.dtype)
    # Whole-sample chunks all write the same positions, so the padding stays zero;
    # row blocks of a padded image do not.
    rezero = chunks[0][3] - chunks[0][2] < oh and (win.ph or win.pw)
    for n0, n1, r0, r1 in chunks:
        col = flat[:(n1 - n0) * (r1 - r0) * row_elems].reshape(
            n1 - n0, c, win.kh, win.kw, r1 - r0, ow)
        if rezero:
            col.fill(0)
        for off in win.offsets(h, w, (r0, r1)):
            col[:, :, off.ky, off.kx, off.out[0], off.out[1]] = x[n0:n1, :, off.inp[0], off.inp[1]]
        yield n0, n1, r0, r1, col


def _conv(x, W, win, groups, budget=None):
    """(N, C, H, W) * (O, C/groups, kh, kw) -> (N, O, oh, ow) on raw arrays; columns in
    chunks of ``budget`` bytes (default: ``_budget`` of the result)."""
    xp = get_array_module(x, W)
    n, _, h, w = x.shape
    o = W.shape[0]
    oh, ow = win.out_size(h, w)
    y = xp.empty((n, o, oh, ow), dtype=xp.result_type(x, W))
    Wg = W.reshape(groups, o // groups, -1)
    budget = _budget(y.shape, y.itemsize) if budget is None else budget
    for n0, n1, r0, r1, col in _columns(x, win, budget):
        nb, p = n1 - n0, (r1 - r0) * ow
        cols = col.reshape(nb, groups, -1, p)
        if r1 - r0 == oh:
            xp.matmul(Wg, cols, out=y[n0:n1].reshape(nb, groups, -1, p))
        else:
            y[n0:n1, :, r0:r1] = xp.matmul(Wg, cols).reshape(nb, o, r1 - r0, ow)
    return y


def _deconv(gy, W, win, groups, hw):
    """Transpose of ``_conv`` in x: (N, O, oh, ow), W -> (N, C, H, W).

    With stride 1 (and padding at most the dilated kernel's reach) this is a convolution of
    gy with the flipped filters, channels in and out swapped per group, padded by
    ``dilation * (k - 1) - pad``: the same GEMMs without the scatter-adds of the columns."""
    dy_reach, dx_reach = win.dy * (win.kh - 1), win.dx * (win.kw - 1)
    if win.sy == win.sx == 1 and win.ph <= dy_reach and win.pw <= dx_reach:
        o, cg, kh, kw = W.shape
        flipped = W.reshape(groups, o // groups, cg, kh, kw)[:, :, :, ::-1, ::-1]
        flipped = flipped.transpose(0, 2, 1, 3, 4).reshape(groups * cg, o // groups, kh, kw)
        full = Window(kh, kw, 1, 1, dy_reach - win.ph, dx_reach - win.pw, win.dy, win.dx)
        return _conv(gy, flipped, full, groups, _budget(gy.shape, gy.itemsize))
    return _deconv_scatter(gy, W, win, groups, hw)


def _deconv_scatter(gy, W, win, groups, hw):
    """:func:`_deconv` for any stride: columns W^T gy per chunk, added into the image."""
    xp = get_array_module(gy, W)
    n, o, oh, ow = gy.shape
    _, cg, kh, kw = W.shape
    c, (h, w) = groups * cg, hw
    gx = xp.zeros((n, c, h, w), dtype=xp.result_type(gy, W))
    WgT = W.reshape(groups, o // groups, cg * kh * kw).transpose(0, 2, 1)
    row_elems = c * kh * kw * ow
    chunks = _chunks(n, oh, row_elems * gx.itemsize, _budget(gy.shape, gx.itemsize))
    flat = _buffer(xp, chunks, row_elems, gx.dtype)
    for n0, n1, r0, r1 in chunks:
        nb, p = n1 - n0, (r1 - r0) * ow
        col = flat[:nb * p * c * kh * kw].reshape(nb, groups, cg * kh * kw, p)
        xp.matmul(WgT, gy[n0:n1, :, r0:r1].reshape(nb, groups, o // groups, p), out=col)
        col = col.reshape(nb, c, kh, kw, r1 - r0, ow)
        for off in win.offsets(h, w, (r0, r1)):
            gx[n0:n1, :, off.inp[0], off.inp[1]] += col[:, :, off.ky, off.kx, off.out[0], off.out[1]]
    return gx


def _conv_grad_w(x, gy, win, groups):
    """Transpose of ``_conv`` in W: x, (N, O, oh, ow) -> (O, C/groups, kh, kw)."""
    xp = get_array_module(x, gy)
    o, ow = gy.shape[1], gy.shape[3]
    cg = x.shape[1] // groups
    gW = xp.zeros((groups, o // groups, cg * win.kh * win.kw), dtype=xp.result_type(x, gy))
    for n0, n1, r0, r1, col in _columns(x, win, _budget(gy.shape, gW.itemsize)):
        nb, p = n1 - n0, (r1 - r0) * ow
        cols = col.reshape(nb, groups, -1, p).transpose(0, 1, 3, 2)
        gW += xp.matmul(gy[n0:n1, :, r0:r1].reshape(nb, groups, o // groups, p), cols).sum(axis=0)
    return gW.reshape(o, cg, win.kh, win.kw)


class Convolution2D(FunctionNode):
    """``y = conv(x, W) + b``; keeps x and W, not the column matrix."""

    def __init__(self, window, groups):
        self.window = window
        self.groups = groups

    def forward(self, x, W, b=None):
        self.retain_inputs(0, 1)
        y = _conv(x, W, self.window, self.groups)
        if b is not None:
            y += b.reshape(1, -1, 1, 1)
        return y

    def backward(self, indexes, gy):
        x, W = self.retained_inputs()
        gx = gW = gb = None
        if 0 in indexes:
            gx = Deconvolution2D(self.window, self.groups, x.shape[2:]).apply(gy, W)[0]
        if 1 in indexes:
            gW = Convolution2DGradW(self.window, self.groups).apply(x, gy)[0]
        if len(self.inputs) == 2:
            return gx, gW
        if 2 in indexes:
            gb = sum_(gy, axis=(0, 2, 3))
        return gx, gW, gb


class Deconvolution2D(FunctionNode):
    """Gradient of a convolution with respect to its input: x-shaped from (gy, W)."""

    def __init__(self, window, groups, hw):
        self.window = window
        self.groups = groups
        self.hw = tuple(hw)

    def forward(self, gy, W):
        self.retain_inputs(0, 1)
        return _deconv(gy, W, self.window, self.groups, self.hw)

    def backward(self, indexes, ggx):
        gy, W = self.retained_inputs()
        g_gy = g_W = None
        if 0 in indexes:
            g_gy = Convolution2D(self.window, self.groups).apply(ggx, W)[0]
        if 1 in indexes:
            g_W = Convolution2DGradW(self.window, self.groups).apply(ggx, gy)[0]
        return g_gy, g_W


class Convolution2DGradW(FunctionNode):
    """Gradient of a convolution with respect to its filter: W-shaped from (x, gy)."""

    def __init__(self, window, groups):
        self.window = window
        self.groups = groups

    def forward(self, x, gy):
        self.retain_inputs(0, 1)
        return _conv_grad_w(x, gy, self.window, self.groups)

    def backward(self, indexes, ggW):
        x, gy = self.retained_inputs()
        g_x = g_gy = None
        if 0 in indexes:
            g_x = Deconvolution2D(self.window, self.groups, x.shape[2:]).apply(gy, ggW)[0]
        if 1 in indexes:
            g_gy = Convolution2D(self.window, self.groups).apply(x, ggW)[0]
        return g_x, g_gy


def conv2d(x: Any, W: Any, b: Any = None, stride: Any = 1, pad: Any = 0, dilation: Any = 1,
           groups: int = 1) -> Variable:
    """2-D convolution (cross-correlation, as in Chainer and PyTorch) of ``x`` (N, C, H, W)
    with filters ``W`` (C_out, C/groups, kh, kw); ``stride``, ``pad`` and ``dilation`` are
    ints or (vertical, horizontal) pairs.  Output: (N, C_out, oh, ow) with
    ``oh = (H + 2*pad - dilation*(kh - 1) - 1) // stride + 1``.

    >>> import numpy as np
    >>> x = Variable(np.ones((1, 2, 5, 5)))
    >>> conv2d(x, np.ones((4, 2, 3, 3)), np.zeros(4), stride=2, pad=1).shape
    (1, 4, 3, 3)
    """
    if len(x.shape) != 4 or len(W.shape) != 4:
        raise ShapeError(f"conv2d needs x of shape (N, C, H, W) and W of shape (C_out, "
                         f"C/groups, kh, kw); got x {tuple(x.shape)} and W {tuple(W.shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"conv2d: groups must be a positive int, got {groups!r}")
    _, c, h, w = x.shape
    o, cg, kh, kw = W.shape
    if c % groups or o % groups:
        raise ShapeError(f"conv2d: groups={groups} must divide the {c} channels of x "
                         f"{tuple(x.shape)} and the {o} filters of W {tuple(W.shape)}")
    if cg * groups != c:
        raise ShapeError(f"conv2d: x has shape {tuple(x.shape)} ({c} channels) but W has shape "
                         f"{tuple(W.shape)}; expected W of shape ({o}, {c // groups}, {kh}, {kw})"
                         f" (C_out, C/groups, kh, kw) with groups={groups}")
    if b is not None and tuple(b.shape) != (o,):
        raise ShapeError(f"conv2d: b has shape {tuple(b.shape)}, expected ({o},)")
    _check_dtypes("conv2d", x, W, b)
    win = Window.make((kh, kw), stride, pad, dilation)
    oh, ow = win.out_size(h, w)
    if oh < 1 or ow < 1:
        raise ShapeError(f"conv2d: input of spatial size {(h, w)} is smaller than the dilated "
                         f"kernel {(win.dy * (kh - 1) + 1, win.dx * (kw - 1) + 1)} with "
                         f"pad {(win.ph, win.pw)}")
    args = (x, W) if b is None else (x, W, b)
    return Convolution2D(win, groups).apply(*args)[0]


# ----- embeddings ----------------------------------------------------------------------------

class EmbedID(FunctionNode):
    """``W[ids]``; keeps only the integer ids."""

    def forward(self, ids, W):
        self.save_for_backward(ids)
        return W[ids]

    def backward(self, indexes, gy):
        ids, = self.saved
        return None, EmbedIDGrad(self.inputs[1].shape).apply(ids, gy)[0]


class EmbedIDGrad(FunctionNode):
    """Scatter-add of row gradients into a zero matrix of the embedding's shape."""

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, ids, gy):
        xp = get_array_module(gy)
        self.save_for_backward(ids)
        gW = xp.zeros(self.shape, dtype=gy.dtype)
        scatter_add(gW, ids, gy)
        return gW

    def backward(self, indexes, ggW):
        ids, = self.saved
        return None, EmbedID().apply(ids, ggW)[0]


def embed_id(ids: Any, W: Any) -> Variable:
    """Look up rows of ``W`` (vocab, dim) for integer ``ids`` of any shape: ``(*ids.shape, dim)``.

    The gradient adds each row's gradient into ``W``'s rows (repeated ids accumulate).

    >>> import numpy as np
    >>> embed_id(np.array([[2, 0]]), Variable(np.arange(6.0).reshape(3, 2))).array
    array([[[4., 5.],
            [0., 1.]]])
    """
    ids = ids.array if isinstance(ids, Variable) else ids
    if not hasattr(ids, "dtype") or ids.dtype.kind not in "iu":
        raise DTypeError(f"embed_id: ids must be an integer array, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)}")
    if len(W.shape) != 2:
        raise ShapeError(f"embed_id: W must have shape (vocab, dim), got {tuple(W.shape)}")
    vocab = W.shape[0]
    bad = (ids < 0) | (ids >= vocab)
    if bad.any():
        raise ValueError(f"embed_id: id {int(ids[bad].ravel()[0])} is out of range for a "
                         f"vocabulary of {vocab} rows (ids must be in [0, {vocab}))")
    return EmbedID().apply(ids, W)[0]
