"""Linear: the fully connected layer ``y = x @ W.T + b``.

>>> import numpy as np
>>> Linear(3, 2)(np.ones((5, 3), dtype=np.float32)).shape
(5, 2)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

import memsave.functions as F
from memsave.core.variable import Parameter, Variable
from memsave.nn import init
from memsave.nn.module import Module

__all__ = ["Linear"]


class Linear(Module):
    """Affine map over the last axis; ``W`` is (out_features, in_features) as in PyTorch/Chainer.

    ``W`` is Kaiming-uniform (PyTorch's default, bound 1/sqrt(in_features)); ``b`` is zero.

    >>> import numpy as np
    >>> fc = Linear(4, 3, bias=False, dtype=np.float64)
    >>> fc.W.shape, fc.b, fc(np.ones((2, 7, 4))).shape
    ((3, 4), None, (2, 7, 3))
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        shape = (self.out_features, self.in_features)
        self.W = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5), dtype=dtype))
        self.register_parameter(
            "b", Parameter(init.zeros((self.out_features,), dtype)) if bias else None)

    def forward(self, x: Any) -> Variable:
        return F.linear(x, self.W, self.b)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.b is not None}")
