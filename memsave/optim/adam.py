"""Adam and AdamW (PyTorch's formulas, bias-corrected moments).

>>> import numpy as np, memsave as ms
>>> w = ms.Parameter(np.array([1.0])); w.grad = np.array([123.0])
>>> Adam([w], lr=0.1).step(); w.array   # the first step moves by lr, whatever the gradient's size
array([0.9])
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from memsave.backend import get_array_module
from memsave.core.variable import Variable
from memsave.optim.optimizer import Optimizer, checked_hyperparameter

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015); ``weight_decay`` is an L2 term added to the gradient.

    Per step t (from 1)::

        g = grad + weight_decay * p
        m = b1 * m + (1 - b1) * g;   v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)

    >>> import numpy as np, memsave as ms
    >>> w = ms.Parameter(np.array([0.0, 0.0]))
    >>> opt = Adam([w], lr=0.01)
    >>> w.grad = np.array([1.0, -1.0]); opt.step(); w.array
    array([-0.01,  0.01])
    """

    hyperparameters = ("lr", "betas", "eps", "weight_decay")
    decoupled_weight_decay = False

    def __init__(self, params: Iterable[Variable], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        owner = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{owner}: betas must be a pair (beta1, beta2) such as (0.9, 0.999), "
                            f"got {betas!r}")
        b1 = checked_hyperparameter(owner, "betas[0]", betas[0], high=1.0)
        b2 = checked_hyperparameter(owner, "betas[1]", betas[1], high=1.0)
        lr = checked_hyperparameter(owner, "lr", lr)
        eps = checked_hyperparameter(owner, "eps", eps)
        weight_decay = checked_hyperparameter(owner, "weight_decay", weight_decay)
        super().__init__(params)
        self.lr = lr
        self.betas = (b1, b2)
        self.eps = eps
        self.weight_decay = weight_decay

    def update_one(self, param: Variable, grad: Any, state: dict[str, Any]) -> None:
        xp = get_array_module(param.array)
        p = param.array
        b1, b2 = self.betas
        if not state:
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        if self.weight_decay:
            if self.decoupled_weight_decay:
                p *= 1.0 - self.lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * p
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += (1.0 - b1) * grad
        v *= b2
        v += (1.0 - b2) * grad * grad
        denom = xp.sqrt(v) / math.sqrt(1.0 - b2 ** t) + self.eps
        p -= (self.lr / (1.0 - b1 ** t)) * m / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): ``p *= 1 - lr * wd`` first.

    >>> import numpy as np, memsave as ms
    >>> w = ms.Parameter(np.array([1.0])); w.grad = np.array([0.0])
    >>> AdamW([w], lr=0.1, weight_decay=0.5).step(); w.array   # zero gradient: decay only
    array([0.95])
    """

    decoupled_weight_decay = True

    def __init__(self, params: Iterable[Variable], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
