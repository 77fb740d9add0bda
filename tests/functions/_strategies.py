"""Hypothesis strategies and checks shared by the op tests: small float64 arrays (numerical
gradients cost two evaluations per element, so every array has at most 60 elements)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import memsave as ms

MAX_ELEMENTS = 60


def shapes(min_dims: int = 0, max_dims: int = 3, min_side: int = 1, max_side: int = 4) -> Any:
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side).filter(lambda s: math.prod(s) <= MAX_ELEMENTS)


def floats(lo: float = -2.0, hi: float = 2.0, away_from: Sequence[float] = ()) -> Any:
    """Finite float64 values in [lo, hi], at least 1e-3 from each point in ``away_from`` (kinks)."""
    values = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    if away_from:
        values = values.filter(lambda v: all(abs(v - k) > 1e-3 for k in away_from))
    return values


def arrays(shape: Any = None, lo: float = -2.0, hi: float = 2.0,
           away_from: Sequence[float] = ()) -> Any:
    return hnp.arrays(np.float64, shapes() if shape is None else shape,
                      elements=floats(lo, hi, away_from))


@st.composite
def distinct_arrays(draw: Any, shape: Any = None) -> np.ndarray:
    """Values 0.1 apart in random order: no ties, no crossing within gradcheck's eps."""
    shape = draw(shapes(min_dims=1) if shape is None else shape)
    n = math.prod(shape)
    order = draw(st.permutations(range(n)))
    return (np.asarray(order, dtype=np.float64) * 0.1 - 0.05 * n).reshape(shape)


def check_grads(fn: Callable, *inputs: Any, second: bool = True) -> None:
    """gradcheck and (by default) gradgradcheck of ``fn`` at ``inputs``.

    The second-order check runs on ``fn``'s outputs times ``1 + sum(x0 ** 2) / 2`` (x0: the
    first float input), so the gradient reaching ``fn``'s backward depends on the inputs:
    a backward that treats its incoming gradient as a constant fails it.
    """
    assert ms.gradcheck(fn, list(inputs))
    if second:
        assert ms.gradgradcheck(_times_input_dependent_scale(fn), list(inputs))


def _times_input_dependent_scale(fn: Callable) -> Callable:
    def scaled(*xs: ms.Variable) -> Any:
        first = next(x for x in xs if x.dtype.kind == "f")
        scale = (first * first).sum() * 0.5 + 1.0
        out = fn(*xs)
        if isinstance(out, ms.Variable):
            return out * scale
        return tuple(y * scale for y in out)
    return scaled


def var(a: Any) -> ms.Variable:
    return ms.Variable(np.asarray(a, dtype=np.float64))
