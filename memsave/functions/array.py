"""Shape, indexing and selection ops: reshape, transpose, sum, get_item, concat, split, stack,
expand_dims, squeeze, where, clip, max, min; and, re-exported from :mod:`memsave.core.fit`,
sum_to, broadcast_to and cast (the engine fits every gradient to its variable with them).

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.arange(6.0).reshape(2, 3))
>>> sum_to(x, (1, 3)).array
array([[3., 5., 7.]])
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy

from memsave import backend
from memsave.backend import get_array_module, scatter_add
from memsave.core.fit import broadcast_to, cast, sum_to
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable
from memsave.errors import DTypeError, ShapeError
from memsave.functions._operands import operand

__all__ = ["reshape", "transpose", "sum", "sum_to", "broadcast_to", "cast", "get_item", "concat", "split",
           "stack", "expand_dims", "squeeze", "where", "clip", "max", "min"]


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
        scatter_add(gx, self.index, gy)
        return gx

    def backward(self, indexes, ggx):
        return get_item(ggx, self.index)


def _check_axes(axis: Any, ndim: int, what: str, shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """``axis`` (None, an int or a tuple) as sorted non-negative axes, checked against ``ndim``
    (errors name ``shape`` when it is given)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    for a in axes:
        if isinstance(a, bool) or not isinstance(a, (int, numpy.integer)):
            raise TypeError(f"{what}: axis must be an int, a tuple of ints or None, got {axis!r} "
                            f"({type(a).__name__})")
    axes = tuple(int(a) for a in axes)
    for a in axes:
        if not -ndim <= a < ndim:
            of_shape = f" (shape {tuple(shape)})" if shape is not None else ""
            valid = f"use an axis in [{-ndim}, {ndim - 1}]" if ndim else "a 0-d array has no axis"
            raise ShapeError(f"{what}: axis {a} is out of range for an array of rank {ndim}{of_shape}; "
                             f"{valid}")
    normalized = tuple(sorted(a % ndim for a in axes))
    if len(set(normalized)) != len(normalized):
        raise ShapeError(f"{what}: repeated axis in {axis}")
    return normalized


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """``shape`` with the reduced ``axes`` set to 1 (the ``keepdims=True`` shape)."""
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Concat(FunctionNode):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        return get_array_module(*xs).concatenate(xs, axis=self.axis)

    def backward(self, indexes, gy):
        bounds = list(itertools.accumulate(x.shape[self.axis] for x in self.inputs))[:-1]
        pieces = split(gy, bounds, self.axis)
        return tuple(p if i in indexes else None for i, p in enumerate(pieces))


class Split(FunctionNode):
    def __init__(self, indices_or_sections, axis):
        self.indices_or_sections = indices_or_sections
        self.axis = axis

    def forward(self, x):
        ys = get_array_module(x).split(x, self.indices_or_sections, axis=self.axis)
        self.out_shapes = tuple(y.shape for y in ys)
        return tuple(ys)

    def backward(self, indexes, *gys):
        like = next(g for g in gys if g is not None)
        gys = [Variable(like.xp.zeros(shape, dtype=like.dtype), requires_grad=False)
               if g is None else g for g, shape in zip(gys, self.out_shapes)]
        return concat(gys, self.axis)


class Stack(FunctionNode):
    def __init__(self, axis):
        self.axis = axis

    def forward(self, *xs):
        return get_array_module(*xs).stack(xs, axis=self.axis)

    def backward(self, indexes, gy):
        pieces = split(gy, len(self.inputs), self.axis)
        return tuple(reshape(p, self.inputs[i].shape) if i in indexes else None
                     for i, p in enumerate(pieces))


class Where(FunctionNode):
    """Inputs: (condition, x, y); the boolean condition is a constant."""

    def forward(self, condition, x, y):
        self.save_for_backward(condition)
        return get_array_module(condition, x, y).where(condition, x, y)

    def backward(self, indexes, gy):
        condition, = self.saved
        gx = where(condition, gy, 0.0) if 1 in indexes else None
        gy_ = where(condition, 0.0, gy) if 2 in indexes else None
        return None, gx, gy_


class Clip(FunctionNode):
    def __init__(self, x_min, x_max):
        self.x_min = x_min
        self.x_max = x_max

    def forward(self, x):
        self.save_for_backward((x >= self.x_min) & (x <= self.x_max))
        return get_array_module(x).clip(x, self.x_min, self.x_max)

    def backward(self, indexes, gy):
        inside, = self.saved
        return gy * inside.astype(gy.dtype)


class _Extreme(FunctionNode):
    """Max or min over axes; the gradient is shared evenly by the elements equal to the result."""

    reduction = ""

    def __init__(self, axes, keepdims):
        self.axes = axes
        self.keepdims = keepdims

    def forward(self, x):
        y = getattr(x, self.reduction)(axis=self.axes, keepdims=True)
        self.save_for_backward(x == y)  # a boolean mask: one byte per element
        return y if self.keepdims else y.reshape(
            tuple(n for i, n in enumerate(x.shape) if i not in self.axes))

    def backward(self, indexes, gy):
        winners, = self.saved
        share = (winners / winners.sum(axis=self.axes, keepdims=True)).astype(gy.dtype)
        return reshape(gy, _kept_shape(self.inputs[0].shape, self.axes)) * share


class Max(_Extreme):
    reduction = "max"


class Min(_Extreme):
    reduction = "min"



def reshape(x: Any, shape: tuple[int, ...]) -> Variable:
    """Same data, new shape (one dimension may be -1).

    >>> import numpy as np
    >>> reshape(Variable(np.arange(6.0)), (2, 3)).shape
    (2, 3)
    """
    old = numpy.shape(x.array if isinstance(x, Variable) else x)
    shape = _checked_shape(shape, old)
    if old == shape:
        return x if isinstance(x, Variable) else Variable(x, requires_grad=False)
    return Reshape(shape).apply(x)[0]


def _checked_shape(shape: Any, old: tuple[int, ...]) -> tuple[int, ...]:
    """``reshape``'s target (an int or a sequence of ints, one of them maybe -1) as a tuple of
    ints holding as many elements as ``old``."""
    dims = (shape,) if isinstance(shape, (int, numpy.integer)) else tuple(shape)
    for n in dims:
        if isinstance(n, (bool, numpy.bool_)) or not isinstance(n, (int, numpy.integer)):
            raise TypeError(f"reshape: shape must be an int or a tuple of ints, got {shape!r} "
                            f"({type(n).__name__})")
    dims = tuple(int(n) for n in dims)
    size, known = math.prod(old), math.prod(n for n in dims if n != -1)
    free = dims.count(-1)
    fits = (free == 0 and known == size) or (free == 1 and known > 0 and size % known == 0)
    if free > 1 or any(n < -1 for n in dims) or not fits:
        raise ShapeError(f"reshape: cannot reshape an array of shape {old} ({size} elements) into "
                         f"shape {dims}; the new shape must hold {size} elements (at most one -1)")
    return dims


def transpose(x: Any, axes: Any = None) -> Variable:
    """Permute axes (reverse them by default).

    >>> import numpy as np
    >>> transpose(Variable(np.zeros((2, 3)))).shape
    (3, 2)
    """
    if axes is None:
        return Transpose(None).apply(x)[0]
    shape = numpy.shape(x.array if isinstance(x, Variable) else x)
    for a in axes:
        if isinstance(a, (bool, numpy.bool_)) or not isinstance(a, (int, numpy.integer)):
            raise TypeError(f"transpose: axes must be ints, got {axes!r} ({type(a).__name__})")
    axes = tuple(int(a) for a in axes)
    ndim = len(shape)
    if sorted(a % ndim if -ndim <= a < ndim else a for a in axes) != list(range(ndim)):
        raise ShapeError(f"transpose: axes {axes} are not a permutation of the axes of an array of "
                         f"shape {shape}; give each of 0..{ndim - 1} once")
    return Transpose(tuple(a % ndim for a in axes)).apply(x)[0]


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001
    """Sum over ``axis`` (an int, a tuple, or None for all).

    >>> import numpy as np
    >>> sum(Variable(np.ones((2, 3))), axis=0).array
    array([2., 2., 2.])
    """
    shape = numpy.shape(x.array if isinstance(x, Variable) else x)
    axes = None if axis is None else _check_axes(axis, len(shape), "sum", shape)
    return Sum(axes, bool(keepdims)).apply(x)[0]


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


def _rank_and_shapes(xs: Sequence[Any], what: str) -> list[tuple[int, ...]]:
    if isinstance(xs, (Variable,)) or backend.is_array(xs) or len(xs) == 0:
        raise TypeError(f"{what} needs a non-empty sequence of Variables or arrays")
    return [tuple(x.shape) for x in xs]


def concat(xs: Sequence[Any], axis: int = 0) -> Variable:
    """Join Variables along an existing ``axis``; the other dimensions must agree.

    >>> import numpy as np
    >>> concat([Variable(np.zeros((2, 3))), np.ones((1, 3))]).shape
    (3, 3)
    """
    shapes = _rank_and_shapes(xs, "concat")
    ndim = len(shapes[0])
    if ndim == 0:
        raise ShapeError("concat cannot join 0-d arrays; use stack")
    axis, = _check_axes(axis, ndim, "concat", shapes[0])
    rest = [s[:axis] + s[axis + 1:] for s in shapes]
    if any(len(s) != ndim for s in shapes) or any(r != rest[0] for r in rest):
        raise ShapeError(f"concat along axis {axis} needs shapes that agree on every other axis, "
                         f"got {', '.join(map(str, shapes))}")
    return Concat(axis).apply(*xs)[0]


def split(x: Any, indices_or_sections: Any, axis: int = 0) -> tuple[Variable, ...]:
    """Cut ``x`` along ``axis`` into equal sections (an int) or at the given indices (a list).

    >>> import numpy as np
    >>> a, b = split(Variable(np.arange(6.0)), [2])
    >>> a.array, b.array
    (array([0., 1.]), array([2., 3., 4., 5.]))
    """
    shape = tuple(x.shape)
    axis, = _check_axes(axis, len(shape), "split", shape)
    if isinstance(indices_or_sections, (int, numpy.integer)):
        indices_or_sections = int(indices_or_sections)
        if indices_or_sections <= 0 or shape[axis] % indices_or_sections:
            raise ShapeError(f"split: axis {axis} of shape {shape} (length {shape[axis]}) cannot be "
                             f"cut into {indices_or_sections} equal sections")
    else:
        indices_or_sections = [int(i) for i in indices_or_sections]
    return Split(indices_or_sections, axis).apply(x)


def stack(xs: Sequence[Any], axis: int = 0) -> Variable:
    """Join same-shaped Variables along a new ``axis``.

    >>> import numpy as np
    >>> stack([Variable(np.zeros(3)), np.ones(3)], axis=1).shape
    (3, 2)
    """
    shapes = _rank_and_shapes(xs, "stack")
    if any(s != shapes[0] for s in shapes):
        raise ShapeError(f"stack needs arrays of one shape, got {', '.join(map(str, shapes))}")
    axis, = _check_axes(axis, len(shapes[0]) + 1, "stack")
    return Stack(axis).apply(*xs)[0]


def expand_dims(x: Any, axis: Any) -> Variable:
    """Insert length-1 axes at ``axis`` (an int or a tuple), positions in the result.

    >>> import numpy as np
    >>> expand_dims(Variable(np.zeros((2, 3))), -1).shape
    (2, 3, 1)
    """
    count = 1 if isinstance(axis, (int, numpy.integer)) else len(tuple(axis))
    shape = tuple(x.shape)
    axes = _check_axes(axis, len(shape) + count, "expand_dims")
    rest = iter(shape)
    return reshape(x, tuple(1 if i in axes else next(rest) for i in range(len(shape) + count)))


def squeeze(x: Any, axis: Any = None) -> Variable:
    """Remove length-1 axes: all of them, or those in ``axis`` (each must have length 1).

    >>> import numpy as np
    >>> squeeze(Variable(np.zeros((1, 3, 1)))).shape
    (3,)
    """
    shape = tuple(x.shape)
    if axis is None:
        axes = tuple(i for i, n in enumerate(shape) if n == 1)
    else:
        axes = _check_axes(axis, len(shape), "squeeze", shape)
        wide = [a for a in axes if shape[a] != 1]
        if wide:
            raise ShapeError(f"squeeze: axis {wide[0]} of shape {shape} has length "
                             f"{shape[wide[0]]}, not 1")
    return reshape(x, tuple(n for i, n in enumerate(shape) if i not in axes))


def where(condition: Any, x: Any, y: Any) -> Variable:
    """Elementwise ``x if condition else y``, broadcasting all three.

    ``condition`` is a boolean array (or a Variable holding one); it is not differentiated.

    >>> import numpy as np
    >>> where(np.array([True, False]), Variable(np.ones(2)), 0.0).array
    array([1., 0.])
    """
    if not (isinstance(x, Variable) or backend.is_array(x)
            or isinstance(y, Variable) or backend.is_array(y)):
        raise TypeError("where needs x or y to be a Variable or an array")
    xp = get_array_module(x, y)
    condition = condition.array if isinstance(condition, Variable) else xp.asarray(condition)
    if condition.dtype != bool:
        raise DTypeError(f"where: condition must be a boolean array, got dtype {condition.dtype}")
    x, y = operand(x, y), operand(y, x)
    try:
        numpy.broadcast_shapes(condition.shape, x.shape, y.shape)
    except ValueError:
        raise ShapeError(f"where: condition {condition.shape}, x {tuple(x.shape)} and "
                         f"y {tuple(y.shape)} do not broadcast together") from None
    return Where().apply(condition, x, y)[0]


def clip(x: Any, x_min: float | None, x_max: float | None) -> Variable:
    """Limit values to ``[x_min, x_max]`` (None: no bound on that side).

    The gradient is 1 inside the interval, bounds included, and 0 outside.

    >>> import numpy as np
    >>> clip(Variable(np.array([-2.0, 0.5, 3.0])), 0.0, 1.0).array
    array([0. , 0.5, 1. ])
    """
    if x_min is None and x_max is None:
        raise ValueError("clip needs at least one of x_min and x_max")
    x_min = -float("inf") if x_min is None else float(x_min)
    x_max = float("inf") if x_max is None else float(x_max)
    if x_min > x_max:
        raise ValueError(f"clip: x_min {x_min} is larger than x_max {x_max}")
    return Clip(x_min, x_max).apply(x)[0]


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001
    """Largest element over ``axis`` (all axes by default).

    Ties share the gradient evenly, as ``torch.amax`` does.

    >>> import numpy as np
    >>> max(Variable(np.array([[1.0, 5.0], [7.0, 2.0]])), axis=1).array
    array([5., 7.])
    """
    return Max(_check_axes(axis, len(x.shape), "max", tuple(x.shape)), keepdims).apply(x)[0]


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001
    """Smallest element over ``axis`` (all axes by default); ties share the gradient evenly.

    >>> import numpy as np
    >>> min(Variable(np.array([[1.0, 5.0], [7.0, 2.0]])), axis=0).array
    array([1., 2.])
    """
    return Min(_check_axes(axis, len(x.shape), "min", tuple(x.shape)), keepdims).apply(x)[0]
