"""TransformerBlock: a pre-norm transformer layer (attention, then a GELU MLP, both residual).

>>> import numpy as np
>>> TransformerBlock(8, heads=2)(np.ones((2, 5, 8), dtype=np.float32)).shape
(2, 5, 8)
"""
from __future__ import annotations

from typing import Any

import numpy as np

import memsave.functions as F
from memsave.core.variable import Variable
from memsave.nn.attention import MultiHeadAttention
from memsave.nn.dropout import Dropout
from memsave.nn.linear import Linear
from memsave.nn.module import Module
from memsave.nn.normalization import LayerNorm

__all__ = ["TransformerBlock"]


class TransformerBlock(Module):
    """``x = x + attn(ln1(x)); x = x + dropout(fc2(gelu(fc1(ln2(x)))))`` (GPT-2 layout).

    The MLP's hidden width is ``mlp_ratio * dim``; ``dropout`` is residual dropout,
    ``attention_dropout`` drops attention probabilities (see :class:`MultiHeadAttention`).
    A whole block is the natural unit to checkpoint:
    ``memsave.checkpointed(TransformerBlock(256, heads=4))``.

    >>> import numpy as np
    >>> block = TransformerBlock(4, heads=2, mlp_ratio=2, dtype=np.float64)
    >>> [name for name, _ in block.named_children()]
    ['ln1', 'attn', 'ln2', 'fc1', 'fc2', 'dropout']
    >>> block(np.ones((3, 4))).shape
    (3, 4)
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4, causal: bool = True,
                 dropout: float = 0.0, dtype: Any = np.float32,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.ln1 = LayerNorm(dim, dtype=dtype)
        self.attn = MultiHeadAttention(dim, heads, causal=causal, dropout=dropout, dtype=dtype,
                                       attention_dropout=attention_dropout)
        self.ln2 = LayerNorm(dim, dtype=dtype)
        self.fc1 = Linear(dim, hidden, dtype=dtype)
        self.fc2 = Linear(hidden, dim, dtype=dtype)
        self.dropout = Dropout(dropout)

    def forward(self, x: Any, mask: Any = None) -> Variable:
        x = x + self.attn(self.ln1(x), mask=mask)
        return x + self.dropout(self.fc2(F.gelu(self.fc1(self.ln2(x)))))
