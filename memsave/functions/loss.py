"""Losses: softmax_cross_entropy, mean_squared_error.

Both are single ops that keep only their inputs.  softmax_cross_entropy's plain
backward is one fused pass (one logits-sized buffer); under ``create_graph=True``
both backwards are written with differentiable functions, so second derivatives
(gradient penalties, Hessian-vector products) work.

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.zeros((2, 3)))
>>> float(softmax_cross_entropy(x, np.array([0, 2])).array) == float(np.log(3))
True
"""
from __future__ import annotations

from typing import Any

from memsave import backend
from memsave.backend import get_array_module
from memsave.config import is_grad_enabled
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable, as_variable
from memsave.errors import DTypeError, ShapeError
from memsave.functions.activation import softmax
from memsave.functions.array import expand_dims

__all__ = ["softmax_cross_entropy", "mean_squared_error"]


class SoftmaxCrossEntropy(FunctionNode):
    """Inputs: logits x (N, C, ...) and integer labels t (N, ...); the class axis is 1."""

    def __init__(self, ignore_label, reduce):
        self.ignore_label = ignore_label
        self.reduce = reduce

    def forward(self, x, t):
        xp = get_array_module(x)
        self.retain_inputs(0)
        self.save_for_backward(t)
        valid = t != self.ignore_label
        safe = xp.expand_dims(xp.where(valid, t, 0), 1)
        m = x.max(axis=1, keepdims=True)
        log_z = xp.log(xp.exp(x - m).sum(axis=1, keepdims=True)) + m
        nll = (log_z - xp.take_along_axis(x, safe, axis=1)).squeeze(1) * valid
        if self.reduce == "no":
            return nll
        return xp.asarray(nll.sum() / _count(valid), dtype=x.dtype)

    def backward(self, indexes, gy):
        x, = self.retained_inputs()
        t, = self.saved
        if not is_grad_enabled():
            return as_variable(self._fused_grad(x.array, t, gy.array)), None
        xp = x.xp
        valid = t != self.ignore_label
        classes = xp.arange(x.shape[1]).reshape((1, -1) + (1,) * (x.ndim - 2))
        # d nll / dx = softmax(x) - onehot(t), zero on ignored entries
        onehot = (classes == xp.expand_dims(t, 1)).astype(x.dtype)
        weight = xp.expand_dims(valid, 1).astype(x.dtype)
        if self.reduce == "no":
            return (softmax(x, axis=1) - onehot) * weight * expand_dims(gy, 1), None
        return (softmax(x, axis=1) - onehot) * (weight / _count(valid)) * gy, None


    def _fused_grad(self, x: Any, t: Any, gy: Any) -> Any:
        """``(softmax(x) - onehot(t)) * weight * gy`` in one x-sized buffer."""
        xp = get_array_module(x)
        gx = x - x.max(axis=1, keepdims=True)
        xp.exp(gx, out=gx)
        gx /= gx.sum(axis=1, keepdims=True)
        valid = t != self.ignore_label
        grid = [xp.arange(n).reshape((-1,) + (1,) * (t.ndim - 1 - i)) for i, n in enumerate(t.shape)]
        gx[(grid[0], xp.where(valid, t, 0), *grid[1:])] -= 1  # one class per entry: no repeats
        scale = valid.astype(x.dtype)
        scale *= gy if self.reduce == "no" else gy / _count(valid)
        gx *= xp.expand_dims(scale, 1)
        return gx


def _count(valid: Any) -> int:
    """How many labels count towards the mean (at least 1, so all-ignored gives loss 0)."""
    return max(int(valid.sum()), 1)


class MeanSquaredError(FunctionNode):
    def forward(self, x0, x1):
        self.retain_inputs(0, 1)  # the difference is recomputed in backward, not kept
        diff = x0 - x1
        return get_array_module(diff).asarray((diff * diff).sum() / diff.size, dtype=diff.dtype)

    def backward(self, indexes, gy):
        x0, x1 = self.retained_inputs()
        gx0 = (x0 - x1) * (2.0 / x0.size) * gy
        return (gx0 if 0 in indexes else None), (-gx0 if 1 in indexes else None)


def softmax_cross_entropy(x: Any, t: Any, ignore_label: int = -1, reduce: str = "mean") -> Variable:
    """Cross entropy of ``softmax(x, axis=1)`` against integer labels ``t``.

    ``x`` holds logits of shape (N, C) or (N, C, d1, ...); ``t`` has shape (N,) or
    (N, d1, ...).  Entries labelled ``ignore_label`` add nothing.  ``reduce="mean"``
    averages over the other entries (0 when every entry is ignored); ``reduce="no"``
    returns the per-entry losses, shape of ``t``, with 0 at ignored entries.

    >>> import numpy as np
    >>> x = Variable(np.array([[2.0, 0.0], [0.0, 0.0]]))
    >>> softmax_cross_entropy(x, np.array([0, -1]), reduce="no").array.round(4)
    array([0.1269, 0.    ])
    """
    t = t.array if isinstance(t, Variable) else t
    if not backend.is_array(t):
        raise TypeError(f"softmax_cross_entropy: t must be an integer array, got {type(t).__name__}")
    if t.dtype.kind not in "iu":
        raise DTypeError(f"softmax_cross_entropy: labels t must be an integer array, "
                         f"got dtype {t.dtype}")
    if reduce not in ("mean", "no"):
        raise ValueError(f'softmax_cross_entropy: reduce must be "mean" or "no", got {reduce!r}')
    shape = tuple(x.shape)
    expected = shape[:1] + shape[2:]
    if len(shape) < 2 or tuple(t.shape) != expected:
        raise ShapeError(f"softmax_cross_entropy: logits x of shape {shape} (N, C, ...) need "
                         f"labels t of shape {expected if len(shape) >= 2 else '(N, ...)'}, "
                         f"got t of shape {tuple(t.shape)}")
    bad = (t != ignore_label) & ((t < 0) | (t >= shape[1]))
    if bad.any():
        label = int(t[bad].ravel()[0])
        raise ValueError(f"softmax_cross_entropy: label {label} is out of range for {shape[1]} "
                         f"classes (expected 0 <= t < {shape[1]} or ignore_label={ignore_label})")
    return SoftmaxCrossEntropy(ignore_label, reduce).apply(x, t)[0]


def mean_squared_error(x0: Any, x1: Any) -> Variable:
    """Mean over all elements of ``(x0 - x1) ** 2``; the shapes must be equal.

    >>> import numpy as np
    >>> mean_squared_error(Variable(np.array([1.0, 3.0])), np.array([0.0, 1.0])).array
    array(2.5)
    """
    if tuple(x0.shape) != tuple(x1.shape):
        raise ShapeError(f"mean_squared_error needs equal shapes, got x0 {tuple(x0.shape)} "
                         f"and x1 {tuple(x1.shape)}")
    return MeanSquaredError().apply(x0, x1)[0]
