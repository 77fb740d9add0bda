"""Fitting a gradient to its variable: ``sum_to`` (the one place broadcast gradients are reduced)
and ``cast`` (a gradient keeps its variable's dtype).  The engine calls both; they live in core
so that core needs nothing from the function families above it.

>>> import numpy as np
>>> x = Variable(np.arange(6.0).reshape(2, 3))
>>> sum_to(x, (1, 3)).array
array([[3., 5., 7.]])
>>> cast(x, np.float32).dtype
dtype('float32')
"""
from __future__ import annotations

from typing import Any

import numpy

from memsave.backend import get_array_module
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable
from memsave.errors import ShapeError


class SumTo(FunctionNode):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        lead = x.ndim - len(self.shape)
        kept = tuple([lead + i for i, n in enumerate(self.shape) if n == 1 and x.shape[lead + i] != 1])
        if not kept:                               # leading axes only (a bias gradient)
            return x.sum(axis=tuple(range(lead)))
        y = x.sum(axis=tuple(range(lead)) + kept, keepdims=True)
        return y.reshape(self.shape) if lead else y

    def backward(self, indexes, gy):
        return broadcast_to(gy, self.inputs[0].shape)


class BroadcastTo(FunctionNode):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        return get_array_module(x).broadcast_to(x, self.shape)

    def backward(self, indexes, gy):
        return sum_to(gy, self.inputs[0].shape)


class Cast(FunctionNode):
    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        return x.astype(self.dtype)

    def backward(self, indexes, gy):
        return cast(gy, self.inputs[0].dtype)


def sum_to(x: Any, shape: tuple[int, ...]) -> Variable:
    """Sum ``x`` down to ``shape``, the inverse of broadcasting to ``x.shape``.

    >>> import numpy as np
    >>> sum_to(Variable(np.ones((2, 3))), (3,)).array
    array([2., 2., 2.])
    """
    shape, x_shape = tuple(shape), tuple(x.shape)
    if x_shape == shape:
        return x
    lead = len(x_shape) - len(shape)
    if lead < 0 or any([n != 1 and n != m for n, m in zip(shape, x_shape[lead:])]):
        raise ShapeError(f"cannot sum shape {x_shape} to shape {shape}")
    return SumTo(shape).apply(x)[0]


def broadcast_to(x: Any, shape: tuple[int, ...]) -> Variable:
    """Broadcast ``x`` to ``shape`` (NumPy rules).

    >>> import numpy as np
    >>> broadcast_to(Variable(np.ones(3)), (2, 3)).shape
    (2, 3)
    """
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        return x
    if len(x.shape) > len(shape) or any([n != 1 and n != m for n, m in zip(x.shape[::-1], shape[::-1])]):
        raise ShapeError(f"cannot broadcast shape {tuple(x.shape)} to shape {shape}")
    return BroadcastTo(shape).apply(x)[0]


def cast(x: Any, dtype: Any) -> Variable:
    """``x`` as ``dtype``; the gradient is cast back to ``x``'s dtype.

    >>> import numpy as np
    >>> cast(Variable(np.ones(2)), np.float32).array.dtype
    dtype('float32')
    """
    dtype = numpy.dtype(dtype)
    if x.dtype == dtype:
        return x
    return Cast(dtype).apply(x)[0]
