"""memsave: define-by-run autograd on NumPy/CuPy that recomputes instead of storing.

>>> import numpy as np, memsave as ms, memsave.functions as F
>>> x = ms.Variable(np.ones((2, 3)))
>>> y = F.tanh(x).sum()
>>> y.backward()
>>> x.grad.shape
(2, 3)
"""
# ruff: noqa: I001 - the order matters: core.variable first, since it pulls in the function
# families that define its operators (and they import core.function, which needs Variable).
from memsave.core.variable import Parameter, Variable, VariableNode, as_variable
from memsave import allocator, backend, functions, memory, random  # noqa: F401,E402
from memsave import nn, optim, testing  # noqa: F401,E402
from memsave.remat.decorator import checkpointed
from memsave.remat.auto import auto_checkpoint
from memsave.remat import planner, policies
from memsave.remat.policies import checkpoint_name, saved_arrays
from memsave.remat.forget import forget
from memsave.remat.recompute import checkpoint
from memsave.remat.sequential import checkpoint_sequential
from memsave.remat.switch import checkpointing
from memsave.config import config, enable_grad, is_grad_enabled, no_grad, using_config
from memsave.core.backprop import backward, grad
from memsave.core.function import FunctionNode
from memsave.core.hooks import saved_array_hooks
from memsave.errors import (CheckpointError, DTypeError, InPlaceError, ShapeError, StateDictError,
                            UselessCheckpointWarning)
from memsave.gradcheck import gradcheck, gradgradcheck, numerical_grad

__version__ = "0.1.0"

__all__ = [
    "checkpoint", "checkpointed", "auto_checkpoint", "forget", "checkpoint_sequential", "checkpointing",
    "policies", "checkpoint_name", "saved_arrays",
    "Variable", "Parameter", "VariableNode", "FunctionNode", "as_variable",
    "backward", "grad", "saved_array_hooks",
    "config", "using_config", "no_grad", "enable_grad", "is_grad_enabled",
    "CheckpointError", "InPlaceError", "ShapeError", "DTypeError", "StateDictError",
    "UselessCheckpointWarning",
    "gradcheck", "gradgradcheck", "numerical_grad",
    "allocator", "backend", "functions", "memory", "nn", "optim", "planner", "random", "testing",
    "__version__",
]
