"""2-D pooling over (N, C, H, W): max_pooling_2d, average_pooling_2d.

Max pooling keeps only the position of each window's maximum, as a small
integer array (int8 for kernels up to 127 pixels); average pooling keeps nothing.
Windows never run past the padded input (PyTorch's ``ceil_mode=False``).  Every kernel
loops over the kernel offsets with slices of x and y (:meth:`Window.offsets`): nothing
is padded or unfolded, so the only temporaries are one offset's comparison mask or
product, at most the output's size.

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.arange(16.0).reshape(1, 1, 4, 4))
>>> max_pooling_2d(x, 2).array
array([[[[ 5.,  7.],
         [13., 15.]]]])
"""
from __future__ import annotations

from typing import Any

from memsave.backend import get_array_module
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable
from memsave.errors import ShapeError
from memsave.functions._window import Window

__all__ = ["max_pooling_2d", "average_pooling_2d"]


def _index_dtype(win: Window) -> str:
    size = win.kh * win.kw
    return "int8" if size <= 127 else "int16" if size <= 32767 else "int32"


def _out_shape(x_shape, win):
    return tuple(x_shape[:2]) + win.out_size(*x_shape[2:])


class MaxPooling2D(FunctionNode):
    """Window maximum; keeps the argmax offsets (a small int array), not x."""

    def __init__(self, window):
        self.window = window

    def forward(self, x):
        xp = get_array_module(x)
        lowest = -xp.inf if x.dtype.kind == "f" else xp.iinfo(x.dtype).min
        y = xp.full(_out_shape(x.shape, self.window), lowest, dtype=x.dtype)
        idx = xp.zeros(y.shape, dtype=_index_dtype(self.window))
        for off in self.window.offsets(*x.shape[2:]):
            v, y_part = x[:, :, off.inp[0], off.inp[1]], y[:, :, off.out[0], off.out[1]]
            # strict: the first maximum wins, like argmax
            xp.copyto(idx[:, :, off.out[0], off.out[1]], off.ky * self.window.kw + off.kx,
                      where=v > y_part)
            xp.maximum(y_part, v, out=y_part)
        self.save_for_backward(idx)
        return y

    def backward(self, indexes, gy):
        idx, = self.saved
        return MaxPooling2DGrad(self.window, self.inputs[0].shape).apply(gy, idx)[0]


class MaxPooling2DGrad(FunctionNode):
    """Routes each output gradient to its window's maximum: x-shaped from (gy, argmax)."""

    def __init__(self, window, shape):
        self.window = window
        self.shape = tuple(shape)

    def forward(self, gy, idx):
        self.save_for_backward(idx)
        gx = get_array_module(gy).zeros(self.shape, dtype=gy.dtype)
        for off in self.window.offsets(*self.shape[2:]):
            hit = idx[:, :, off.out[0], off.out[1]] == off.ky * self.window.kw + off.kx
            gx[:, :, off.inp[0], off.inp[1]] += gy[:, :, off.out[0], off.out[1]] * hit
        return gx

    def backward(self, indexes, ggx):
        idx, = self.saved
        return MaxPooling2DGather(self.window).apply(ggx, idx)[0], None


class MaxPooling2DGather(FunctionNode):
    """Reads an x-shaped array at each window's maximum: the adjoint of MaxPooling2DGrad."""

    def __init__(self, window):
        self.window = window

    def forward(self, x, idx):
        self.save_for_backward(idx)
        y = get_array_module(x).zeros(idx.shape, dtype=x.dtype)
        for off in self.window.offsets(*x.shape[2:]):
            hit = idx[:, :, off.out[0], off.out[1]] == off.ky * self.window.kw + off.kx
            y[:, :, off.out[0], off.out[1]] += x[:, :, off.inp[0], off.inp[1]] * hit
        return y

    def backward(self, indexes, gy):
        idx, = self.saved
        return MaxPooling2DGrad(self.window, self.inputs[0].shape).apply(gy, idx)[0], None


class AveragePooling2D(FunctionNode):
    """Window mean, padding counted as zeros; linear, so it keeps nothing."""

    def __init__(self, window):
        self.window = window

    def forward(self, x):
        y = get_array_module(x).zeros(_out_shape(x.shape, self.window), dtype=x.dtype)
        for off in self.window.offsets(*x.shape[2:]):
            y[:, :, off.out[0], off.out[1]] += x[:, :, off.inp[0], off.inp[1]]
        y /= x.dtype.type(self.window.kh * self.window.kw)
        return y

    def backward(self, indexes, gy):
        return AveragePooling2DGrad(self.window, self.inputs[0].shape).apply(gy)[0]


class AveragePooling2DGrad(FunctionNode):
    """Spreads each output gradient evenly over its window: the adjoint of AveragePooling2D."""

    def __init__(self, window, shape):
        self.window = window
        self.shape = tuple(shape)

    def forward(self, gy):
        gx = get_array_module(gy).zeros(self.shape, dtype=gy.dtype)
        for off in self.window.offsets(*self.shape[2:]):
            gx[:, :, off.inp[0], off.inp[1]] += gy[:, :, off.out[0], off.out[1]]
        gx /= gy.dtype.type(self.window.kh * self.window.kw)
        return gx

    def backward(self, indexes, ggx):
        return AveragePooling2D(self.window).apply(ggx)[0]


def _window(name: str, x: Any, ksize: Any, stride: Any, pad: Any) -> Window:
    if len(x.shape) != 4:
        raise ShapeError(f"{name} needs x of shape (N, C, H, W), got {tuple(x.shape)}")
    win = Window.make(ksize, ksize if stride is None else stride, pad)
    oh, ow = win.out_size(*x.shape[2:])
    if oh < 1 or ow < 1:
        raise ShapeError(f"{name}: input of spatial size {tuple(x.shape[2:])} is smaller than "
                         f"the window {(win.kh, win.kw)} with pad {(win.ph, win.pw)}")
    return win


def max_pooling_2d(x: Any, ksize: Any, stride: Any = None, pad: Any = 0) -> Variable:
    """Maximum over ``ksize`` windows of ``x`` (N, C, H, W); ``stride`` defaults to ``ksize``.

    Padding never wins (it is -inf); ``pad`` must be smaller than ``ksize``.

    >>> import numpy as np
    >>> x = Variable(np.array([[[[1.0, 3.0, 2.0]]]]))
    >>> max_pooling_2d(x, (1, 2), stride=1).array
    array([[[[3., 3.]]]])
    """
    win = _window("max_pooling_2d", x, ksize, stride, pad)
    if win.ph >= win.kh or win.pw >= win.kw:
        raise ValueError(f"max_pooling_2d: pad {(win.ph, win.pw)} must be smaller than ksize "
                         f"{(win.kh, win.kw)}, or some windows would hold only padding")
    return MaxPooling2D(win).apply(x)[0]


def average_pooling_2d(x: Any, ksize: Any, stride: Any = None, pad: Any = 0) -> Variable:
    """Mean over ``ksize`` windows of ``x`` (N, C, H, W); padding counts as zeros (as in
    Chainer), so a window is always divided by kh * kw.  ``stride`` defaults to ``ksize``.

    >>> import numpy as np
    >>> x = Variable(np.array([[[[1.0, 3.0, 2.0, 6.0]]]]))
    >>> average_pooling_2d(x, (1, 2)).array
    array([[[[2., 4.]]]])
    """
    win = _window("average_pooling_2d", x, ksize, stride, pad)
    return AveragePooling2D(win).apply(x)[0]
