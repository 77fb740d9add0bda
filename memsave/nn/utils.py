"""Training utilities: clip_grad_norm_.

>>> import numpy as np, memsave as ms
>>> p = ms.Parameter(np.array([3.0, 4.0])); p.grad = np.array([3.0, 4.0])
>>> clip_grad_norm_([p], max_norm=1.0)
5.0
>>> np.round(p.grad, 6)
array([0.6, 0.8])
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from memsave import backend
from memsave.core.variable import Variable

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters: Iterable[Variable] | Variable, max_norm: float,
                    norm_type: float = 2.0, eps: float = 1e-6) -> float:
    """Scale all gradients together so that their joint norm is at most ``max_norm``.

    The norm is taken over every gradient as if concatenated into one vector
    (parameters without a gradient are skipped).  Gradients are scaled by
    ``max_norm / (norm + eps)`` when that is below 1 (PyTorch's rule); the scaled
    gradient is a new array, so arrays shared with anything else are never touched.
    Returns the norm before clipping.

    >>> import numpy as np, memsave as ms
    >>> p = ms.Parameter(np.ones(4)); p.grad = np.full(4, 0.1)
    >>> round(clip_grad_norm_(p, 1.0), 6), p.grad.tolist()   # below max_norm: unchanged
    (0.2, [0.1, 0.1, 0.1, 0.1])
    """
    params = [parameters] if isinstance(parameters, Variable) else list(parameters)
    params = [p for p in params if p.grad is not None]
    if not params:
        return 0.0
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        total = max(float(abs(p.grad).max()) for p in params)
    else:
        total = sum(float((abs(p.grad) ** norm_type).sum()) for p in params) ** (1.0 / norm_type)
    coef = float(max_norm) / (total + eps)
    if coef < 1.0:
        for p in params:
            grad = p.grad
            p.grad = grad * backend.get_array_module(grad).asarray(coef, dtype=grad.dtype)
    return total
