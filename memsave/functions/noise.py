"""Stochastic regularization: dropout.

The keep-mask is drawn from :func:`memsave.random.get_generator` only, so a
checkpoint that restores :func:`memsave.random.get_state` replays it exactly.
Backward keeps the mask as a bool array (one byte an element), not x.

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.ones(4))
>>> dropout(x, 0.5, train=False) is x
True
"""
from __future__ import annotations

from typing import Any

from memsave import random
from memsave.backend import get_array_module
from memsave.config import config
from memsave.core.backprop import handed_over
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable, as_variable
from memsave.errors import DTypeError

__all__ = ["dropout"]


class Dropout(FunctionNode):
    """Zeroes each element with probability ``ratio`` and scales the rest by 1 / (1 - ratio)."""

    overwritable_grads = (0,)

    def __init__(self, ratio):
        self.ratio = ratio

    def forward(self, x):
        xp = get_array_module(x)
        dtype = "float64" if x.dtype == "float64" else "float32"  # what generators draw
        # asarray: on a 0-d x the comparison gives a NumPy bool, not an array.
        mask = xp.asarray(random.get_generator(xp).random(x.shape, dtype=dtype) >= self.ratio)
        self.save_for_backward(mask)
        return _apply_mask(x, mask, self.ratio)

    def backward(self, indexes, gy):
        mask, = self.saved
        return DropoutGrad(self.ratio, handed_over(gy)).apply(gy, mask)[0]


class DropoutGrad(FunctionNode):
    """Multiplies by a fixed keep-mask and 1 / (1 - ratio): linear, its own adjoint.  With
    ``in_place`` the result is written into gy's buffer."""

    overwritable_grads = (0,)

    def __init__(self, ratio, in_place=False):
        self.ratio = ratio
        self.in_place = in_place

    def forward(self, gy, mask):
        self.save_for_backward(mask)
        return _apply_mask(gy, mask, self.ratio, out=gy if self.in_place else None)

    def backward(self, indexes, ggx):
        mask, = self.saved
        return DropoutGrad(self.ratio, handed_over(ggx)).apply(ggx, mask)[0], None


def _apply_mask(x: Any, mask: Any, ratio: float, out: Any = None) -> Any:
    """``x * mask / (1 - ratio)`` in one buffer (``out``, which may be x, or a new one)."""
    y = get_array_module(x).multiply(x, mask, out=out)
    y *= x.dtype.type(1.0 / (1.0 - ratio))
    return y


def dropout(x: Any, ratio: float = 0.5, train: bool | None = None) -> Variable:
    """In training mode (``train``, default ``config.train``) zero each element of ``x`` with
    probability ``ratio`` and scale the survivors by ``1 / (1 - ratio)``, so the expectation
    is ``x``; in evaluation mode, or with ``ratio == 0``, return ``x`` unchanged.

    >>> import numpy as np, memsave as ms
    >>> ms.random.seed(0)
    >>> y = dropout(Variable(np.ones(6)), 0.5)
    >>> sorted(set(y.array.tolist()))
    [0.0, 2.0]
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"dropout: ratio must be in [0, 1), got {ratio!r}")
    if x.dtype.kind != "f":
        raise DTypeError(f"dropout needs a floating-point x, got dtype {x.dtype}")
    train = config.train if train is None else train
    if not train or ratio == 0:
        return as_variable(x)
    return Dropout(float(ratio)).apply(x)[0]
