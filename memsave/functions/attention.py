"""Attention: scaled_dot_product_attention, composed of matmul, softmax and friends.

Masking adds a constant (0 or a very large negative number) to the scores, an op
that keeps nothing for backward.  A query that may attend to no key at all gets
the plain average of the values (its scores are all equally "masked"), never NaN.

>>> import numpy as np, memsave as ms
>>> q = k = v = ms.Variable(np.eye(2))
>>> scaled_dot_product_attention(q, k, v, causal=True).array[0]
array([1., 0.])
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from memsave.backend import get_array_module
from memsave.core.variable import Variable
from memsave.errors import DTypeError, ShapeError

__all__ = ["scaled_dot_product_attention"]


def _masked_bias(mask: Any, dtype: Any, xp: Any) -> Any:
    """0 where attending, a large negative (finite, so that sums stay finite) elsewhere."""
    return xp.where(mask, dtype.type(0), dtype.type(xp.finfo(dtype).min / 2))


def scaled_dot_product_attention(q: Any, k: Any, v: Any, mask: Any = None, causal: bool = False,
                                 scale: float | None = None) -> Variable:
    """``softmax(q @ k^T * scale + masking) @ v`` for q (..., Lq, d), k (..., Lk, d) and
    v (..., Lk, dv); leading dimensions broadcast.  ``scale`` defaults to ``1 / sqrt(d)``.

    ``mask`` is a boolean array broadcastable to (..., Lq, Lk), True where a query may
    attend to a key; ``causal=True`` also forbids query i to see key j > i.

    >>> import numpy as np
    >>> q, k = Variable(np.ones((2, 1, 3, 4))), Variable(np.ones((2, 1, 5, 4)))
    >>> scaled_dot_product_attention(q, k, np.ones((2, 1, 5, 6))).shape
    (2, 1, 3, 6)
    """
    from memsave.functions.activation import softmax
    from memsave.functions.array import transpose
    from memsave.functions.math import matmul

    if len(q.shape) < 2 or len(k.shape) < 2 or len(v.shape) < 2:
        raise ShapeError(f"scaled_dot_product_attention needs rank >= 2 operands, got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"scaled_dot_product_attention: expected q (..., Lq, d), k (..., Lk, d), "
                         f"v (..., Lk, dv); got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    xp = get_array_module(q, k, v)
    lq, lk = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    axes = list(range(len(k.shape)))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    scores = matmul(q * scale, transpose(k, axes))  # scaling q: (Lq, d) is the smaller array
    if mask is not None:
        mask = mask.array if isinstance(mask, Variable) else xp.asarray(mask)
        if mask.dtype != bool:
            raise DTypeError(f"scaled_dot_product_attention: mask must be boolean "
                             f"(True = attend), got dtype {mask.dtype}")
        try:
            fits = numpy.broadcast_shapes(mask.shape, scores.shape) == scores.shape
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(f"scaled_dot_product_attention: mask of shape {mask.shape} does "
                             f"not broadcast to the scores' shape {scores.shape} (..., Lq, Lk)")
    if causal:
        allowed = xp.tril(xp.ones((lq, lk), dtype=bool))
        mask = allowed if mask is None else mask & allowed
    if mask is not None:
        scores = scores + _masked_bias(mask, scores.dtype, xp)
    return matmul(softmax(scores, axis=-1), v)
