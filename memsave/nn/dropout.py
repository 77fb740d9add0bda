"""Dropout: zero each element with probability ``ratio`` in training, identity in eval.

>>> import numpy as np
>>> Dropout(0.5).eval()(np.ones(3, dtype=np.float32)).array
array([1., 1., 1.], dtype=float32)
"""
from __future__ import annotations

from typing import Any

import memsave.functions as F
from memsave.core.variable import Variable
from memsave.nn.module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """Inverted dropout (kept elements scaled by ``1 / (1 - ratio)``), drawn from memsave.random.

    A checkpoint replays the same mask on recompute because it restores memsave's RNG.

    >>> import numpy as np
    >>> y = Dropout(0.5)(np.ones(1000, dtype=np.float32)).array
    >>> sorted(set(y.tolist()))
    [0.0, 2.0]
    """

    def __init__(self, ratio: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"Dropout ratio must be in [0, 1), got {ratio}")
        self.ratio = float(ratio)

    def forward(self, x: Any) -> Variable:
        return F.dropout(x, ratio=self.ratio, train=self.training)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}"
