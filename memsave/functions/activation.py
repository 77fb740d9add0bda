"""Activations: tanh, sigmoid, relu.

>>> import numpy as np, memsave as ms
>>> relu(ms.Variable(np.array([-1.0, 2.0]))).array
array([0., 2.])
"""
from __future__ import annotations

from typing import Any

from memsave.backend import get_array_module
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable

__all__ = ["tanh", "sigmoid", "relu"]


class Tanh(FunctionNode):
    def forward(self, x):
        self.retain_outputs(0)
        return get_array_module(x).tanh(x)

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return gy * (1 - y * y)


class Sigmoid(FunctionNode):
    def forward(self, x):
        self.retain_outputs(0)
        xp = get_array_module(x)
        return xp.tanh(x * 0.5) * 0.5 + 0.5  # overflow-free logistic

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return gy * y * (1 - y)


class ReLU(FunctionNode):
    def forward(self, x):
        self.retain_outputs(0)
        return get_array_module(x).maximum(x, 0)

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return gy * (y.array > 0).astype(gy.dtype)


def tanh(x: Any) -> Variable:
    """Elementwise hyperbolic tangent.

    >>> import numpy as np
    >>> tanh(Variable(np.zeros(1))).array
    array([0.])
    """
    return Tanh().apply(x)[0]


def sigmoid(x: Any) -> Variable:
    """Elementwise logistic function ``1 / (1 + exp(-x))``.

    >>> import numpy as np
    >>> sigmoid(Variable(np.zeros(1))).array
    array([0.5])
    """
    return Sigmoid().apply(x)[0]


def relu(x: Any) -> Variable:
    """Elementwise ``max(x, 0)``.

    >>> import numpy as np
    >>> relu(Variable(np.array([-3.0]))).array
    array([0.])
    """
    return ReLU().apply(x)[0]
