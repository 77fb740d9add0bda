"""Turning Python scalars into arrays that match the other operand (shared by op families)."""
from __future__ import annotations

from numbers import Number
from typing import Any

from memsave import backend
from memsave.core.variable import Variable


def operand(value: Any, like: Any) -> Any:
    """``value`` as a Variable or array; a Python scalar takes ``like``'s float dtype and module.

    NumPy 2 would promote float32 + float64(0-d) to float64; an op with a scalar
    keeps the Variable's dtype instead, as PyTorch and Chainer do.
    """
    if isinstance(value, (Variable,)) or backend.is_array(value):
        return value
    if isinstance(value, Number):
        array = like.array if isinstance(like, Variable) else like
        xp = backend.get_array_module(array)
        dtype = array.dtype if array.dtype.kind in "fc" else None
        return xp.asarray(value, dtype=dtype)
    raise TypeError(f"unsupported operand type {type(value).__name__}; "
                    "expected a Variable, an ndarray or a Python number")
