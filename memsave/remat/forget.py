"""forget(func, *xs): chainer.functions.forget's signature on memsave's checkpointing.

Unlike Chainer's, it replays random draws (dropout works) and supports double
backprop.

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.ones(5)); y = ms.Variable(np.ones(5))
>>> z = forget(lambda a, b: a + b + a, x, y)
>>> z.array
array([3., 3., 3., 3., 3.])
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from memsave import backend
from memsave.core.variable import Variable
from memsave.remat.recompute import run_checkpointed


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def forget(func: Callable[..., Any], *xs: Any) -> Variable | tuple[Variable, ...]:
    """Call ``func(*xs)`` without storing its intermediates; recompute them in backward.

    ``xs`` are Variables or ndarrays (converted to Variables so the call joins the graph).
    ``func`` must return a Variable or a tuple of Variables; a 1-tuple comes back as its
    Variable, as in Chainer.  A non-Variable result raises RuntimeError (Chainer's error).

    >>> import numpy as np, memsave.functions as F
    >>> y = forget(F.tanh, np.zeros(3))
    >>> type(y).__name__
    'Variable'
    """
    for i, x in enumerate(xs):
        if not isinstance(x, Variable) and not backend.is_array(x):
            raise TypeError(f"forget: argument {i} must be a Variable or an ndarray, "
                            f"got {type(x).__name__}")
    ys = run_checkpointed(_checked_returns(func), xs, {})
    if isinstance(ys, tuple) and len(ys) == 1:
        return ys[0]
    return ys


def _checked_returns(func: Callable[..., Any]) -> Callable[..., Any]:
    def call(*xs: Any) -> Any:
        ys = func(*xs)
        if isinstance(ys, tuple):
            for i, y in enumerate(ys):
                if not isinstance(y, Variable):
                    raise RuntimeError(
                        f"forget: the {_ordinal(i + 1)} element of the tuple returned by func is "
                        f"not a Variable but {type(y).__name__}")
        elif not isinstance(ys, Variable):
            raise RuntimeError(f"forget: func must return a Variable or a tuple of Variables, "
                               f"got {type(ys).__name__}")
        return ys

    call.__qualname__ = getattr(func, "__qualname__", type(func).__name__)
    return call
