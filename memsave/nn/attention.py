"""MultiHeadAttention: fused q/k/v projection, scaled dot-product attention, output projection.

>>> import numpy as np
>>> MultiHeadAttention(8, heads=2)(np.ones((2, 5, 8), dtype=np.float32)).shape
(2, 5, 8)
"""
from __future__ import annotations

from typing import Any

import numpy as np

import memsave.functions as F
from memsave.core.variable import Variable
from memsave.nn.dropout import Dropout
from memsave.nn.linear import Linear
from memsave.nn.module import Module

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(Module):
    """Self-attention over (..., L, dim) inputs with ``heads`` heads of size ``dim // heads``.

    ``qkv`` is one Linear(dim, 3 * dim) (q, k, v in that order along its output),
    ``proj`` the output Linear(dim, dim).  ``mask`` goes to
    :func:`memsave.functions.scaled_dot_product_attention` unchanged; ``causal=True``
    lets position i attend only to positions <= i.  ``dropout`` is applied to the
    projected output (residual dropout, as in GPT-2), ``attention_dropout`` to the attention
    probabilities inside the fused op; both in training mode only.

    >>> import numpy as np
    >>> mha = MultiHeadAttention(4, heads=2, causal=True, dtype=np.float64)
    >>> [name for name, _ in mha.named_parameters()]
    ['qkv.W', 'qkv.b', 'proj.W', 'proj.b']
    >>> mha(np.ones((3, 4))).shape
    (3, 4)
    """

    def __init__(self, dim: int, heads: int, causal: bool = False, dropout: float = 0.0,
                 bias: bool = True, dtype: Any = np.float32, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"MultiHeadAttention: dim ({dim}) must be divisible by "
                             f"heads ({heads})")
        self.dim = int(dim)
        self.heads = int(heads)
        self.causal = bool(causal)
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"MultiHeadAttention: attention_dropout must be in [0, 1), "
                             f"got {attention_dropout}")
        self.attention_dropout = float(attention_dropout)
        self.qkv = Linear(dim, 3 * dim, bias=bias, dtype=dtype)
        self.proj = Linear(dim, dim, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)

    def forward(self, x: Any, mask: Any = None) -> Variable:
        *lead, length, dim = x.shape
        if dim != self.dim:
            raise ValueError(f"MultiHeadAttention({self.dim}): input has last axis {dim}")
        n = len(lead)
        qkv = F.reshape(self.qkv(x), (*lead, length, 3, self.heads, dim // self.heads))
        # (..., L, 3, H, d) -> 3 x (..., L, H, d) -> (..., H, L, d): views; split's gradient
        # is one concatenation (indexing would scatter into three zeroed copies and add them)
        q, k, v = (F.transpose(F.squeeze(part, n + 1), (*range(n), n + 1, n, n + 2))
                   for part in F.split(qkv, 3, axis=n + 1))
        out = F.scaled_dot_product_attention(q, k, v, mask=mask, causal=self.causal,
                                             dropout=self.attention_dropout, train=self.training)
        # (..., H, L, d) -> (..., L, H, d) -> (..., L, dim)
        out = F.transpose(out, (*range(n), n + 1, n, n + 2))
        out = F.reshape(out, (*lead, length, dim))
        return self.dropout(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, causal={self.causal}"
