"""Optimizers: SGD (momentum, Nesterov), Adam and AdamW.

>>> import numpy as np, memsave as ms
>>> from memsave import nn, optim
>>> model = nn.Linear(3, 1)
>>> opt = optim.Adam(model.parameters(), lr=1e-2)
>>> for _ in range(3):
...     opt.zero_grad()
...     (model(np.ones((4, 3), dtype=np.float32)) ** 2).mean().backward()
...     opt.step()
"""
from memsave.optim.adam import Adam, AdamW
from memsave.optim.optimizer import Optimizer
from memsave.optim.sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW"]
