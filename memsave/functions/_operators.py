"""Variable's operators and array methods, installed by the function families (as Chainer does),
so that core never imports the functions built on it.

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.array([1.0, 2.0]))
>>> (2 * x + 1).array, x.T.shape, bool((x < 2)[0])
(array([3., 5.]), (2,), True)
"""
from __future__ import annotations

from typing import Any

from memsave.core.variable import Variable
from memsave.functions import array, math


def _raw(x: Any) -> Any:
    return x.array if isinstance(x, Variable) else x


def _shape_arguments(args: tuple) -> Any:
    return tuple(args[0]) if len(args) == 1 and isinstance(args[0], (tuple, list)) else args


def _reshape(self: Variable, *shape: Any) -> Variable:
    return array.reshape(self, _shape_arguments(shape))


def _transpose(self: Variable, *axes: Any) -> Variable:
    return array.transpose(self, _shape_arguments(axes) or None)


def _sum(self: Variable, axis: Any = None, keepdims: bool = False) -> Variable:
    return array.sum(self, axis, keepdims)


def _mean(self: Variable, axis: Any = None, keepdims: bool = False) -> Variable:
    return math.mean(self, axis, keepdims)


def _astype(self: Variable, dtype: Any) -> Variable:
    return array.cast(self, dtype)


def install_variable_operators() -> None:
    """Give Variable its arithmetic operators and array methods (called once, on import).

    >>> install_variable_operators()
    """
    methods = {
        "T": property(lambda self: array.transpose(self)),
        "reshape": _reshape, "transpose": _transpose, "sum": _sum, "mean": _mean,
        "astype": _astype,
        # The functions themselves where the operands keep their order (no extra call).
        "__getitem__": array.get_item,
        "__neg__": math.neg,
        "__abs__": math.absolute,
        "__add__": math.add,
        "__radd__": lambda self, other: math.add(other, self),
        "__sub__": math.sub,
        "__rsub__": lambda self, other: math.sub(other, self),
        "__mul__": math.mul,
        "__rmul__": lambda self, other: math.mul(other, self),
        "__truediv__": math.div,
        "__rtruediv__": lambda self, other: math.div(other, self),
        "__pow__": math.pow,
        "__rpow__": lambda self, other: math.pow(other, self),
        "__matmul__": math.matmul,
        "__rmatmul__": lambda self, other: math.matmul(other, self),
        # Comparisons are not differentiable: they return plain arrays, as in Chainer.
        "__lt__": lambda self, other: self.array < _raw(other),
        "__le__": lambda self, other: self.array <= _raw(other),
        "__gt__": lambda self, other: self.array > _raw(other),
        "__ge__": lambda self, other: self.array >= _raw(other),
        "__eq__": lambda self, other: self.array == _raw(other),
        "__ne__": lambda self, other: self.array != _raw(other),
    }
    for name, method in methods.items():
        setattr(Variable, name, method)
    Variable.__hash__ = object.__hash__
