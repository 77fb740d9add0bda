"""Arithmetic and elementwise math: add, sub, mul, div, pow, neg, exp, log, sqrt, abs, square,
matmul, mean.

Broadcasting is NumPy's; the engine reduces broadcast gradients (see ``sum_to``).

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.array([1.0, 4.0]))
>>> sqrt(x).array
array([1., 2.])
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memsave.backend import get_array_module
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable
from memsave.errors import ShapeError
from memsave.functions._operands import operand
from memsave.functions.array import reshape, transpose

__all__ = ["add", "sub", "mul", "div", "pow", "neg", "exp", "log", "sqrt", "absolute", "abs",
           "square", "matmul", "mean"]


class Add(FunctionNode):
    def forward(self, a, b):
        return a + b

    def backward(self, indexes, gy):
        return gy, gy


class Sub(FunctionNode):
    def forward(self, a, b):
        return a - b

    def backward(self, indexes, gy):
        return gy, -gy


class Mul(FunctionNode):
    def forward(self, a, b):
        self.retain_inputs(0, 1)
        return a * b

    def backward(self, indexes, gy):
        a, b = self.retained_inputs()
        return (gy * b if 0 in indexes else None), (gy * a if 1 in indexes else None)


class Div(FunctionNode):
    def forward(self, a, b):
        self.retain_inputs(0, 1)
        return a / b

    def backward(self, indexes, gy):
        a, b = self.retained_inputs()
        ga = gy / b
        return ga, (-ga * a / b if 1 in indexes else None)


# ----- ops with a Python number: the number is part of the op, not an input -------------
# ``x * 0.5``, ``loss / batch``, ``1 - x``: nothing is wrapped as a Variable, nothing is
# kept for backward, and the results are those of the two-input ops (the number takes x's
# dtype first, as there).

class AddConstant(FunctionNode):
    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x + self.c

    def backward(self, indexes, gy):
        return gy


class SubFromConstant(FunctionNode):
    """``c - x``."""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return self.c - x

    def backward(self, indexes, gy):
        return neg(gy)


class MulConstant(FunctionNode):
    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x * self.c

    def backward(self, indexes, gy):
        return MulConstant(self.c).apply(gy)[0]


class DivByConstant(FunctionNode):
    """``x / c``."""

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x / self.c

    def backward(self, indexes, gy):
        return DivByConstant(self.c).apply(gy)[0]


def _number(value: Any, other: Any) -> Any:
    """``value`` as a scalar of ``other``'s dtype when it is a Python int or float and ``other``
    a floating-point Variable (then the op can hold it as a constant), else None."""
    if type(value) is float or type(value) is int:
        if isinstance(other, Variable) and other._array.dtype.kind == "f":
            return other._array.dtype.type(value)
    return None


class Pow(FunctionNode):
    def forward(self, a, b):
        self.retain_inputs(0, 1)
        return a ** b

    def backward(self, indexes, gy):
        a, b = self.retained_inputs()
        ga = gy * b * a ** (b - 1) if 0 in indexes else None
        gb = gy * a ** b * log(a) if 1 in indexes else None
        return ga, gb


class Neg(FunctionNode):
    def forward(self, x):
        return -x

    def backward(self, indexes, gy):
        return -gy


class Exp(FunctionNode):
    def forward(self, x):
        self.retain_outputs(0)
        return get_array_module(x).exp(x)

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return gy * y


class Log(FunctionNode):
    def forward(self, x):
        self.retain_inputs(0)
        return get_array_module(x).log(x)

    def backward(self, indexes, gy):
        x, = self.retained_inputs()
        return gy / x


class Sqrt(FunctionNode):
    def forward(self, x):
        self.retain_outputs(0)
        return get_array_module(x).sqrt(x)

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return gy / (2 * y)


class Absolute(FunctionNode):
    def forward(self, x):
        xp = get_array_module(x)
        self.save_for_backward(xp.sign(x))
        return xp.abs(x)

    def backward(self, indexes, gy):
        sign, = self.saved
        return gy * sign


class Square(FunctionNode):
    def forward(self, x):
        self.retain_inputs(0)
        return x * x

    def backward(self, indexes, gy):
        x, = self.retained_inputs()
        return 2 * x * gy


def _swap_last(x: Variable) -> Variable:
    axes = list(range(x.ndim))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    return transpose(x, axes)


class MatMul(FunctionNode):
    """Batched matrix product of two arrays of rank >= 2 (batch dims broadcast)."""

    def forward(self, a, b):
        self.retain_inputs(0, 1)
        return get_array_module(a, b).matmul(a, b)

    def backward(self, indexes, gy):
        a, b = self.retained_inputs()
        ga = matmul(gy, _swap_last(b)) if 0 in indexes else None
        gb = matmul(_swap_last(a), gy) if 1 in indexes else None
        return ga, gb


def _commutative(op: type[FunctionNode], with_constant: Callable[[Any], FunctionNode], a: Any,
                 b: Any) -> Variable:
    """``op`` on ``a`` and ``b``, or ``with_constant(number)`` on the other operand when one
    side is a Python number (``op`` commutes, so either side will do)."""
    c = _number(b, a)
    if c is not None:
        return with_constant(c).apply(a)[0]
    c = _number(a, b)
    if c is not None:
        return with_constant(c).apply(b)[0]
    return op().apply(operand(a, b), operand(b, a))[0]


def add(a: Any, b: Any) -> Variable:
    """``a + b`` with broadcasting.

    >>> import numpy as np
    >>> add(Variable(np.ones(2)), 1.0).array
    array([2., 2.])
    """
    return _commutative(Add, AddConstant, a, b)


def sub(a: Any, b: Any) -> Variable:
    """``a - b`` with broadcasting.

    >>> import numpy as np
    >>> sub(Variable(np.ones(2)), 1.0).array
    array([0., 0.])
    """
    c = _number(b, a)
    if c is not None:
        return AddConstant(-c).apply(a)[0]          # x - c is x + (-c), exactly
    c = _number(a, b)
    if c is not None:
        return SubFromConstant(c).apply(b)[0]
    return Sub().apply(operand(a, b), operand(b, a))[0]


def mul(a: Any, b: Any) -> Variable:
    """``a * b`` with broadcasting.

    >>> import numpy as np
    >>> mul(Variable(np.ones(2)), 3.0).array
    array([3., 3.])
    """
    return _commutative(Mul, MulConstant, a, b)


def div(a: Any, b: Any) -> Variable:
    """``a / b`` with broadcasting.

    >>> import numpy as np
    >>> div(Variable(np.ones(2)), 4.0).array
    array([0.25, 0.25])
    """
    c = _number(b, a)
    if c is not None:
        return DivByConstant(c).apply(a)[0]
    return Div().apply(operand(a, b), operand(b, a))[0]


def pow(a: Any, b: Any) -> Variable:  # noqa: A001 - mirrors the operator's name
    """``a ** b``; either operand may be a Variable, array or Python number.

    >>> import numpy as np
    >>> pow(Variable(np.array([2.0, 3.0])), 2).array
    array([4., 9.])
    """
    return Pow().apply(operand(a, b), operand(b, a))[0]


def neg(x: Any) -> Variable:
    """``-x``.

    >>> import numpy as np
    >>> neg(Variable(np.ones(1))).array
    array([-1.])
    """
    return Neg().apply(x)[0]


def exp(x: Any) -> Variable:
    """Elementwise ``e ** x``.

    >>> import numpy as np
    >>> exp(Variable(np.zeros(1))).array
    array([1.])
    """
    return Exp().apply(x)[0]


def log(x: Any) -> Variable:
    """Elementwise natural logarithm.

    >>> import numpy as np
    >>> log(Variable(np.ones(1))).array
    array([0.])
    """
    return Log().apply(x)[0]


def sqrt(x: Any) -> Variable:
    """Elementwise square root.

    >>> import numpy as np
    >>> sqrt(Variable(np.array([9.0]))).array
    array([3.])
    """
    return Sqrt().apply(x)[0]


def absolute(x: Any) -> Variable:
    """Elementwise ``|x|`` (gradient ``sign(x)``, 0 at 0).

    >>> import numpy as np
    >>> absolute(Variable(np.array([-2.0]))).array
    array([2.])
    """
    return Absolute().apply(x)[0]


abs = absolute  # noqa: A001 - the familiar name


def square(x: Any) -> Variable:
    """Elementwise ``x * x``.

    >>> import numpy as np
    >>> square(Variable(np.array([3.0]))).array
    array([9.])
    """
    return Square().apply(x)[0]


def matmul(a: Any, b: Any) -> Variable:
    """Matrix product ``a @ b``; 1-D operands are treated like NumPy does.

    >>> import numpy as np
    >>> matmul(Variable(np.eye(2)), np.ones((2, 3))).shape
    (2, 3)
    """
    a_shape, b_shape = a.shape, b.shape
    if len(a_shape) == 0 or len(b_shape) == 0:
        raise ShapeError(f"matmul needs operands of rank >= 1, got shapes {a_shape} and {b_shape}")
    if a_shape[-1] != b_shape[-2 if len(b_shape) > 1 else 0]:
        raise ShapeError(f"matmul shape mismatch: {a_shape} @ {b_shape} "
                         f"(inner dimensions {a_shape[-1]} and "
                         f"{b_shape[-2 if len(b_shape) > 1 else 0]} differ)")
    if len(a_shape) == 1 and len(b_shape) == 1:
        return reshape(matmul(reshape(a, (1,) + a_shape), reshape(b, b_shape + (1,))), ())
    if len(a_shape) == 1:
        return reshape(matmul(reshape(a, (1,) + a_shape), b), b_shape[:-2] + b_shape[-1:])
    if len(b_shape) == 1:
        return reshape(matmul(a, reshape(b, b_shape + (1,))), a_shape[:-1])
    return MatMul().apply(a, b)[0]


def mean(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:
    """Mean over ``axis`` (all axes by default).

    >>> import numpy as np
    >>> mean(Variable(np.array([1.0, 3.0]))).array
    array(2.)
    """
    from memsave.functions.array import _check_axes
    from memsave.functions.array import sum as sum_

    if axis is not None:
        shape = tuple(x.shape)
        _check_axes(axis, len(shape), "mean", shape)
    total = sum_(x, axis, keepdims)
    return total * (total.size / x.size)
