"""SGD with optional momentum, Nesterov momentum and L2 weight decay (PyTorch's formulas).

>>> import numpy as np, memsave as ms
>>> w = ms.Parameter(np.array([1.0])); w.grad = np.array([0.5])
>>> SGD([w], lr=0.1).step(); w.array
array([0.95])
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy

from memsave.core.variable import Variable
from memsave.optim.optimizer import Optimizer, checked_hyperparameter

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent, per step::

        g = grad + weight_decay * p
        buf = g (first step) | momentum * buf + g      (when momentum != 0)
        g = g + momentum * buf (nesterov) | buf
        p = p - lr * g

    >>> import numpy as np, memsave as ms
    >>> w = ms.Parameter(np.array([1.0]))
    >>> opt = SGD([w], lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     w.grad = np.array([1.0]); opt.step()
    >>> w.array   # 1 - 0.1 * 1 - 0.1 * 1.9
    array([0.71])
    """

    hyperparameters = ("lr", "momentum", "nesterov", "weight_decay")

    def __init__(self, params: Iterable[Variable], lr: float, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        lr = checked_hyperparameter("SGD", "lr", lr)
        momentum = checked_hyperparameter("SGD", "momentum", momentum)
        weight_decay = checked_hyperparameter("SGD", "weight_decay", weight_decay)
        if not isinstance(nesterov, (bool, numpy.bool_)):
            raise TypeError(f"SGD: nesterov must be True or False, got {nesterov!r}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(params)
        self.lr = lr
        self.momentum = momentum
        self.nesterov = bool(nesterov)
        self.weight_decay = weight_decay

    def update_one(self, param: Variable, grad: Any, state: dict[str, Any]) -> None:
        p = param.array
        if self.weight_decay:
            grad = grad + self.weight_decay * p
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= self.momentum
                buf += grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        p -= self.lr * grad
