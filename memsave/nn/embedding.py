"""Embedding: a lookup table of ``vocab`` vectors of size ``dim``.

>>> import numpy as np
>>> Embedding(10, 4)(np.array([[1, 2, 3]])).shape
(1, 3, 4)
"""
from __future__ import annotations

from typing import Any

import numpy as np

import memsave.functions as F
from memsave.core.variable import Parameter, Variable
from memsave.nn import init
from memsave.nn.module import Module

__all__ = ["Embedding"]


class Embedding(Module):
    """Row ``i`` of ``W`` (vocab, dim) for each integer id; ``W`` ~ N(0, std**2), std=1 by default.

    Pass ``std=0.02`` for the GPT-2 convention.

    >>> import numpy as np
    >>> emb = Embedding(5, 3, std=0.02, dtype=np.float64)
    >>> bool((emb(np.array([4])).array == emb.W.array[4]).all())
    True
    """

    def __init__(self, vocab: int, dim: int, std: float = 1.0, dtype: Any = np.float32) -> None:
        super().__init__()
        self.vocab = int(vocab)
        self.dim = int(dim)
        self.W = Parameter(init.normal((self.vocab, self.dim), std=std, dtype=dtype))

    def forward(self, ids: Any) -> Variable:
        return F.embed_id(ids, self.W)

    def extra_repr(self) -> str:
        return f"{self.vocab}, {self.dim}"
