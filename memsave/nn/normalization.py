"""Normalisation layers: LayerNorm (last axis) and BatchNorm (channel axis 1).

>>> import numpy as np
>>> LayerNorm(4)(np.arange(8, dtype=np.float32).reshape(2, 4)).shape
(2, 4)
"""
from __future__ import annotations

from typing import Any

import numpy as np

import memsave.functions as F
from memsave.core.variable import Parameter, Variable
from memsave.nn import init
from memsave.nn.module import Module

__all__ = ["LayerNorm", "BatchNorm"]


class LayerNorm(Module):
    """Normalise over the last axis, then scale by ``gamma`` (ones) and shift by ``beta`` (zeros).

    >>> import numpy as np
    >>> y = LayerNorm(3, dtype=np.float64)(np.array([[1.0, 2.0, 3.0]]))
    >>> np.round(y.array, 3)
    array([[-1.225,  0.   ,  1.225]])
    """

    def __init__(self, dim: int, eps: float = 1e-5, dtype: Any = np.float32) -> None:
        super().__init__()
        self.dim = int(dim)
        self.eps = float(eps)
        self.gamma = Parameter(init.ones((self.dim,), dtype))
        self.beta = Parameter(init.zeros((self.dim,), dtype))

    def forward(self, x: Any) -> Variable:
        return F.layer_norm(x, self.gamma, self.beta, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class BatchNorm(Module):
    """Batch normalisation over every axis but 1 (channels), for (N, C) or (N, C, H, W) inputs.

    In training mode it normalises with the batch statistics and updates the buffers
    ``running_mean`` / ``running_var`` in place (``r = decay * r + (1 - decay) * batch``);
    in eval mode it normalises with them.  Under a checkpoint the running statistics
    move once per step: :func:`memsave.functions.batch_norm` skips the update while
    ``config.in_recompute`` is set.

    >>> import numpy as np
    >>> bn = BatchNorm(2)
    >>> _ = bn(np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32))
    >>> bn.running_mean
    array([0.1, 0.2], dtype=float32)
    """

    def __init__(self, channels: int, decay: float = 0.9, eps: float = 2e-5,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        self.channels = int(channels)
        self.decay = float(decay)
        self.eps = float(eps)
        self.gamma = Parameter(init.ones((self.channels,), dtype))
        self.beta = Parameter(init.zeros((self.channels,), dtype))
        self.register_buffer("running_mean", init.zeros((self.channels,), dtype))
        self.register_buffer("running_var", init.ones((self.channels,), dtype))

    def forward(self, x: Any) -> Variable:
        return F.batch_norm(x, self.gamma, self.beta, running_mean=self.running_mean,
                            running_var=self.running_var, decay=self.decay, eps=self.eps,
                            train=self.training)

    def extra_repr(self) -> str:
        return f"{self.channels}, decay={self.decay}, eps={self.eps}"
