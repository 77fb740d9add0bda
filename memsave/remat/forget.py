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


def forget(func: Callable[..., Any], *xs: Any) -> Variable | tuple[Variable, ...]:
    """Call ``func(*xs)`` without storing its intermediates; recompute them in backward.

    ``xs`` are Variables or ndarrays (converted to Variables so the call joins the graph).
    ``func`` must return a Variable or a tuple of Variables.

    >>> import numpy as np, memsave.functions as F
    >>> y = forget(F.tanh, np.zeros(3))
    >>> type(y).__name__
    'Variable'
    """
    for i, x in enumerate(xs):
        if not isinstance(x, Variable) and not backend.is_array(x):
            raise TypeError(f"forget: argument {i} must be a Variable or an ndarray, "
                            f"got {type(x).__name__}")
    ys = run_checkpointed(func, xs, {})
    if isinstance(ys, Variable):
        return ys
    if isinstance(ys, tuple) and all(isinstance(y, Variable) for y in ys):
        return ys
    raise TypeError(f"forget: func must return a Variable or a tuple of Variables, "
                    f"got {type(ys).__name__}")
