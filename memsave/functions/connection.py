"""Connections with parameters: linear.

>>> import numpy as np, memsave as ms
>>> x, W = ms.Variable(np.ones((4, 3))), ms.Parameter(np.ones((2, 3)))
>>> linear(x, W).shape
(4, 2)
"""
from __future__ import annotations

from typing import Any

from memsave.core.function import FunctionNode
from memsave.core.variable import Variable
from memsave.errors import ShapeError

__all__ = ["linear"]


class Linear(FunctionNode):
    """``y = x @ W.T + b`` over the last axis of ``x``; ``W`` has shape (out, in)."""

    def forward(self, x, W, b=None):
        self.retain_inputs(0, 1)
        y = x @ W.T
        if b is not None:
            y += b
        return y

    def backward(self, indexes, gy):
        from memsave.functions.array import reshape, sum as sum_
        from memsave.functions.math import matmul

        x, W = self.retained_inputs()
        gx = matmul(gy, W) if 0 in indexes else None
        gy2 = reshape(gy, (-1, gy.shape[-1]))
        gW = matmul(gy2.T, reshape(x, (-1, x.shape[-1]))) if 1 in indexes else None
        if len(self.inputs) == 2:
            return gx, gW
        gb = sum_(gy2, axis=0) if 2 in indexes else None
        return gx, gW, gb


def linear(x: Any, W: Any, b: Any = None) -> Variable:
    """Affine map ``x @ W.T + b`` (PyTorch/Chainer layout: ``W`` is (out, in)).

    >>> import numpy as np
    >>> linear(Variable(np.ones((1, 2))), np.ones((3, 2)), np.zeros(3)).array
    array([[2., 2., 2.]])
    """
    if x.shape[-1] != W.shape[-1] or len(W.shape) != 2:
        raise ShapeError(f"linear: x has shape {tuple(x.shape)} but W has shape {tuple(W.shape)}; "
                         f"expected W of shape (out, {x.shape[-1]})")
    if b is not None and tuple(b.shape) != (W.shape[0],):
        raise ShapeError(f"linear: b has shape {tuple(b.shape)}, expected ({W.shape[0]},)")
    args = (x, W) if b is None else (x, W, b)
    return Linear().apply(*args)[0]
