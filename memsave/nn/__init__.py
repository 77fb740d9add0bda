"""Neural-network building blocks: Module, layers, containers, initialisers.

>>> import numpy as np, memsave as ms, memsave.functions as F
>>> from memsave import nn
>>> ms.random.seed(0)
>>> model = nn.Sequential(nn.Linear(4, 8), F.relu, nn.Linear(8, 2))
>>> loss = (model(np.ones((3, 4), dtype=np.float32)) ** 2).sum()
>>> loss.backward()
>>> [p.grad.shape for p in model.parameters()]
[(8, 4), (8,), (2, 8), (2,)]
"""
from memsave.core.variable import Parameter
from memsave.nn import init
from memsave.nn.attention import MultiHeadAttention
from memsave.nn.containers import MLP, Sequential
from memsave.nn.conv import Conv2d
from memsave.nn.dropout import Dropout
from memsave.nn.embedding import Embedding
from memsave.nn.linear import Linear
from memsave.nn.module import LoadResult, Module, StateDictError
from memsave.nn.normalization import BatchNorm, LayerNorm
from memsave.nn.transformer import TransformerBlock
from memsave.nn.utils import clip_grad_norm_

__all__ = [
    "Module", "Parameter", "StateDictError", "LoadResult",
    "Linear", "Conv2d", "LayerNorm", "BatchNorm", "Dropout", "Embedding",
    "MultiHeadAttention", "TransformerBlock", "Sequential", "MLP",
    "init", "clip_grad_norm_",
]
