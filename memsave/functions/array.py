"""Shape and indexing ops: reshape, transpose, sum, sum_to, broadcast_to, get_item.

``sum_to`` is the one place where broadcast gradients are reduced; the engine
calls it whenever an op's gradient is larger than its input.

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.arange(6.0).reshape(2, 3))
>>> sum_to(x, (1, 3)).array
array([[3., 5., 7.]])
"""
from __future__ import annotations

from typing import Any

from memsave.backend import get_array_module
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable
from memsave.errors import ShapeError

__all__ = ["reshape", "transpose", "sum", "sum_to", "broadcast_to", "get_item"]


def _normalize_axis(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(a % ndim if ndim else a for a in axes)


class Reshape(FunctionNode):
    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        return x.reshape(self.shape)

    def backward(self, indexes, gy):
        return reshape(gy, self.inputs[0].shape)


class Transpose(FunctionNode):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        return x.transpose(self.axes)

    def backward(self, indexes, gy):
        if self.axes is None:
            return transpose(gy)
        inverse = tuple(sorted(range(len(self.axes)), key=lambda i: self.axes[i]))
        return transpose(gy, inverse)


class Sum(FunctionNode):
    def __init__(self, axis, keepdims):
        self.axis = axis
        self.keepdims = keepdims

    def forward(self, x):
        return x.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, indexes, gy):
        shape = self.inputs[0].shape
        if not self.keepdims and self.axis is not None:
            kept = list(gy.shape)
            for a in sorted(_normalize_axis(self.axis, len(shape))):
                kept.insert(a, 1)
            gy = reshape(gy, tuple(kept))
        return broadcast_to(gy, shape)


class SumTo(FunctionNode):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        lead = x.ndim - len(self.shape)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, n in enumerate(self.shape) if n == 1 and x.shape[lead + i] != 1)
        y = x.sum(axis=axes, keepdims=True)
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


class GetItem(FunctionNode):
    def __init__(self, index):
        self.index = index

    def forward(self, x):
        return x[self.index]

    def backward(self, indexes, gy):
        x = self.inputs[0]
        return GetItemGrad(self.index, x.shape, x.dtype).apply(gy)[0]


class GetItemGrad(FunctionNode):
    """Scatter-add of a gradient back into the shape ``x[index]`` was taken from."""

    def __init__(self, index, shape, dtype):
        self.index = index
        self.shape = shape
        self.dtype = dtype

    def forward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.shape, dtype=gy.dtype)
        if xp.__name__ == "numpy":
            xp.add.at(gx, self.index, gy)
        else:
            gx.scatter_add(self.index, gy)
        return gx

    def backward(self, indexes, ggx):
        return get_item(ggx, self.index)


def reshape(x: Any, shape: tuple[int, ...]) -> Variable:
    """Same data, new shape (one dimension may be -1).

    >>> import numpy as np
    >>> reshape(Variable(np.arange(6.0)), (2, 3)).shape
    (2, 3)
    """
    if tuple(x.shape) == tuple(shape):
        return x if isinstance(x, Variable) else Variable(x, requires_grad=False)
    return Reshape(tuple(shape)).apply(x)[0]


def transpose(x: Any, axes: Any = None) -> Variable:
    """Permute axes (reverse them by default).

    >>> import numpy as np
    >>> transpose(Variable(np.zeros((2, 3)))).shape
    (3, 2)
    """
    return Transpose(None if axes is None else tuple(axes)).apply(x)[0]


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001
    """Sum over ``axis`` (an int, a tuple, or None for all).

    >>> import numpy as np
    >>> sum(Variable(np.ones((2, 3))), axis=0).array
    array([2., 2., 2.])
    """
    return Sum(axis, keepdims).apply(x)[0]


def sum_to(x: Any, shape: tuple[int, ...]) -> Variable:
    """Sum ``x`` down to ``shape``, the inverse of broadcasting to ``x.shape``.

    >>> import numpy as np
    >>> sum_to(Variable(np.ones((2, 3))), (3,)).array
    array([2., 2., 2.])
    """
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        return x
    lead = len(x.shape) - len(shape)
    if lead < 0 or any(n not in (1, m) for n, m in zip(shape, x.shape[lead:])):
        raise ShapeError(f"cannot sum shape {tuple(x.shape)} to shape {shape}")
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
    return BroadcastTo(shape).apply(x)[0]


def get_item(x: Any, index: Any) -> Variable:
    """``x[index]`` with basic or advanced (integer / boolean array) indexing.

    >>> import numpy as np
    >>> get_item(Variable(np.arange(5.0)), np.array([0, 0, 3])).array
    array([0., 0., 3.])
    """
    if isinstance(index, Variable):
        index = index.array
    if isinstance(index, tuple):
        index = tuple(i.array if isinstance(i, Variable) else i for i in index)
    return GetItem(index).apply(x)[0]
