"""Differentiable operations, one module per family, re-exported here.

>>> import numpy as np, memsave.functions as F, memsave as ms
>>> F.tanh(ms.Variable(np.zeros(2))).array
array([0., 0.])
"""
from memsave.functions._operators import install_variable_operators
from memsave.functions.activation import *  # noqa: F401,F403
from memsave.functions.array import *  # noqa: F401,F403
from memsave.functions.attention import *  # noqa: F401,F403
from memsave.functions.connection import *  # noqa: F401,F403
from memsave.functions.loss import *  # noqa: F401,F403
from memsave.functions.math import *  # noqa: F401,F403
from memsave.functions.noise import *  # noqa: F401,F403
from memsave.functions.normalization import *  # noqa: F401,F403
from memsave.functions.pooling import *  # noqa: F401,F403

install_variable_operators()
