"""Numerical gradient checks: numerical_grad, gradcheck, gradgradcheck.

Use float64 inputs; the default tolerances are meant for it.

>>> import numpy as np, memsave.functions as F
>>> gradcheck(F.tanh, [np.array([0.1, -0.4])])
True
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from memsave import backend
from memsave.config import no_grad
from memsave.core.backprop import grad
from memsave.core.variable import Variable


class GradcheckError(AssertionError):
    """Analytic and numerical derivatives disagree (the message says where)."""


def _as_outputs(y: Any) -> list[Variable]:
    return [y] if isinstance(y, Variable) else [v for v in y if isinstance(v, Variable)]


def _weighted_sum(fn: Callable, arrays: Sequence[Any], weights: Sequence[Any]) -> float:
    # The graph is built on purpose: gradgradcheck's fn itself calls grad().
    ys = _as_outputs(fn(*[Variable(a) for a in arrays]))
    return float(sum((y.array * w).sum() for y, w in zip(ys, weights)))


def numerical_grad(fn: Callable, inputs: Sequence[Any], grad_outputs: Sequence[Any],
                   eps: float = 1e-6) -> list[Any]:
    """Central differences of ``sum(fn(*inputs) * grad_outputs)`` w.r.t. each floating input.

    >>> import numpy as np
    >>> g, = numerical_grad(lambda x: x * x, [np.array([3.0])], [np.ones(1)])
    >>> round(float(g[0]), 6)
    6.0
    """
    arrays = [backend.to_cpu(a).copy() for a in inputs]
    weights = [backend.to_cpu(g) for g in grad_outputs]
    grads = []
    for a in arrays:
        g = np.zeros_like(a, dtype=np.float64)
        if a.dtype.kind == "f":
            flat, gflat = a.reshape(-1), g.reshape(-1)
            for i in range(flat.size):
                orig = flat[i]
                flat[i] = orig + eps
                up = _weighted_sum(fn, arrays, weights)
                flat[i] = orig - eps
                down = _weighted_sum(fn, arrays, weights)
                flat[i] = orig
                gflat[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def _compare(name: str, analytic: Any, numeric: Any, atol: float, rtol: float) -> None:
    analytic = np.zeros_like(numeric) if analytic is None else backend.to_cpu(analytic)
    if analytic.shape != numeric.shape:
        raise GradcheckError(f"{name}: analytic gradient has shape {analytic.shape}, "
                             f"expected {numeric.shape}")
    bad = ~np.isclose(analytic, numeric, atol=atol, rtol=rtol)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise GradcheckError(
            f"{name}: gradient mismatch at index {idx}: analytic {float(analytic[idx])!r} vs "
            f"numeric {float(numeric[idx])!r} ({int(bad.sum())} of {bad.size} elements differ; "
            f"atol={atol}, rtol={rtol})")


def _random_like(arrays: Sequence[Any], seed: int) -> list[Any]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(np.shape(a)) for a in arrays]


def gradcheck(fn: Callable, inputs: Sequence[Any], grad_outputs: Sequence[Any] | None = None,
              eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4, seed: int = 0) -> bool:
    """Check ``fn``'s analytic first derivatives against central differences.

    Integer inputs (labels, indices) are passed through and not differentiated.
    Raises :class:`GradcheckError` naming the input and index that disagree.

    >>> import numpy as np
    >>> gradcheck(lambda x, y: x * y, [np.array([1.0, 2.0]), np.array([3.0, 4.0])])
    True
    """
    arrays = [np.asarray(a) if not backend.is_array(a) else a for a in inputs]
    xs = [Variable(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    ys = _as_outputs(fn(*xs))
    gys = grad_outputs or _random_like([y.array for y in ys], seed)
    positions = [i for i, x in enumerate(xs) if x.requires_grad]
    analytic = grad(ys, [xs[i] for i in positions],
                    [backend.asarray(g, y.xp) for g, y in zip(gys, ys)], allow_unused=True)
    numeric = numerical_grad(fn, arrays, gys, eps)
    for i, a in zip(positions, analytic):
        _compare(f"input {i}", None if a is None else a.array, numeric[i], atol, rtol)
    return True


def gradgradcheck(fn: Callable, inputs: Sequence[Any], eps: float = 1e-6, atol: float = 1e-4,
                  rtol: float = 1e-3, seed: int = 0) -> bool:
    """Check second derivatives: gradcheck of ``(x, gy) -> grad(fn(x), x, gy, create_graph=True)``.

    The output gradients ``gy`` are inputs of the check too, so a backward that
    treats them as constants (``gy.array``) is caught, not only one that treats
    retained inputs as constants.

    >>> import numpy as np, memsave.functions as F
    >>> gradgradcheck(F.tanh, [np.array([0.3, -0.2])])
    True
    """
    arrays = [np.asarray(a) if not backend.is_array(a) else a for a in inputs]
    with no_grad():
        probe = _as_outputs(fn(*[Variable(a) for a in arrays]))
    gys = [backend.asarray(g, y.xp) for g, y in zip(_random_like([y.array for y in probe], seed), probe)]
    float_idx = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    n = len(arrays)

    def first_grad(*xs_and_gys: Variable) -> tuple[Variable, ...]:
        xs, gy_vars = xs_and_gys[:n], xs_and_gys[n:]
        ys = _as_outputs(fn(*xs))
        wrt = [xs[i] for i in float_idx]
        gs = grad(ys, wrt, list(gy_vars), create_graph=True, allow_unused=True)
        return tuple(g if g is not None else 0 * x for g, x in zip(gs, wrt))

    return gradcheck(first_grad, arrays + gys, eps=eps, atol=atol, rtol=rtol, seed=seed + 1)
