"""Numerical gradient checks: numerical_grad, gradcheck, gradgradcheck.

Use float64 inputs.  Left unset, the step ``eps`` and the tolerances are picked for the
least precise floating input: float32 (or float16) gets a larger step and looser
tolerances, and a warning that such a check is weak (it only catches gross errors).

>>> import numpy as np, memsave.functions as F
>>> gradcheck(F.tanh, [np.array([0.1, -0.4])])
True
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from memsave import backend
from memsave.config import no_grad
from memsave.core.backprop import grad
from memsave.core.variable import Variable


class GradcheckError(AssertionError):
    """Analytic and numerical derivatives disagree (the message says where)."""


class _Tolerances(NamedTuple):
    """A finite-difference step and the tolerances a check compares with."""

    eps: float
    atol: float
    rtol: float


# By itemsize of the least precise floating input.  A central difference's error is about
# step**2 (truncation) plus the float's resolution / step (rounding); float32's best step is
# near 1e-3 and its derivatives are then good to about 1e-3 relative.
_GRADCHECK = {8: _Tolerances(1e-6, 1e-5, 1e-4), 4: _Tolerances(1e-3, 1e-3, 1e-2),
              2: _Tolerances(5e-2, 5e-2, 5e-2)}
_GRADGRADCHECK = {8: _Tolerances(1e-6, 1e-4, 1e-3), 4: _Tolerances(1e-3, 5e-3, 2e-2),
                  2: _Tolerances(5e-2, 1e-1, 1e-1)}


def _least_precise(arrays: Sequence[Any]) -> np.dtype | None:
    floats = [a.dtype for a in arrays if a.dtype.kind == "f"]
    return min(floats, key=lambda d: d.itemsize) if floats else None


def _tolerances(table: dict[int, _Tolerances], arrays: Sequence[Any], eps: float | None,
                atol: float | None, rtol: float | None, check: str) -> _Tolerances:
    """The given values, the others picked for the least precise floating input (warned about)."""
    dtype = _least_precise(arrays)
    itemsize = 8 if dtype is None else dtype.itemsize
    picked = table[itemsize if itemsize in table else 2]
    tol = _Tolerances(picked.eps if eps is None else eps, picked.atol if atol is None else atol,
                     picked.rtol if rtol is None else rtol)
    if itemsize < 8:
        warnings.warn(f"{check} on {dtype} inputs is weak: rounding errors hide small gradient "
                      f"mistakes (eps={tol.eps}, atol={tol.atol}, rtol={tol.rtol}); cast the "
                      f"inputs to float64 for a reliable check", UserWarning, stacklevel=3)
    return tol


def _as_outputs(y: Any) -> list[Variable]:
    return [y] if isinstance(y, Variable) else [v for v in y if isinstance(v, Variable)]


def _weighted_sum(fn: Callable, arrays: Sequence[Any], weights: Sequence[Any]) -> float:
    # The graph is built on purpose: gradgradcheck's fn itself calls grad().
    ys = _as_outputs(fn(*[Variable(a) for a in arrays]))
    # Summed in float64: a float32 sum would round away the difference being measured.
    return float(sum((backend.to_cpu(y.array).astype(np.float64) * w).sum()
                     for y, w in zip(ys, weights)))


def numerical_grad(fn: Callable, inputs: Sequence[Any], grad_outputs: Sequence[Any],
                   eps: float = 1e-6) -> list[Any]:
    """Central differences of ``sum(fn(*inputs) * grad_outputs)`` w.r.t. each floating input.

    The difference is divided by the step actually taken, ``x + eps`` and ``x - eps``
    rounded to the input's dtype.

    >>> import numpy as np
    >>> g, = numerical_grad(lambda x: x * x, [np.array([3.0])], [np.ones(1)])
    >>> round(float(g[0]), 6)
    6.0
    """
    arrays = [backend.to_cpu(a).copy() for a in inputs]
    weights = [backend.to_cpu(g).astype(np.float64) for g in grad_outputs]
    grads = []
    for a in arrays:
        g = np.zeros_like(a, dtype=np.float64)
        if a.dtype.kind == "f":
            flat, gflat = a.reshape(-1), g.reshape(-1)
            for i in range(flat.size):
                orig = flat[i]
                flat[i] = orig + eps
                high = float(flat[i])
                up = _weighted_sum(fn, arrays, weights)
                flat[i] = orig - eps
                low = float(flat[i])
                down = _weighted_sum(fn, arrays, weights)
                flat[i] = orig
                gflat[i] = (up - down) / (high - low)
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
    """Standard normal host arrays of the arrays' shapes and floating dtypes."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(np.shape(a)).astype(a.dtype if a.dtype.kind == "f" else np.float64)
            for a in arrays]


def gradcheck(fn: Callable, inputs: Sequence[Any], grad_outputs: Sequence[Any] | None = None,
              eps: float | None = None, atol: float | None = None, rtol: float | None = None,
              seed: int = 0) -> bool:
    """Check ``fn``'s analytic first derivatives against central differences.

    Integer inputs (labels, indices) are passed through and not differentiated.
    Raises :class:`GradcheckError` naming the input and index that disagree.
    ``eps``, ``atol`` and ``rtol`` default to 1e-6, 1e-5 and 1e-4 for float64 inputs
    and to looser values, with a warning, for float32 and float16.

    >>> import numpy as np
    >>> gradcheck(lambda x, y: x * y, [np.array([1.0, 2.0]), np.array([3.0, 4.0])])
    True
    """
    arrays = [np.asarray(a) if not backend.is_array(a) else a for a in inputs]
    tol = _tolerances(_GRADCHECK, arrays, eps, atol, rtol, "gradcheck")
    return _check_first_derivatives(fn, arrays, grad_outputs, tol, seed)


def _check_first_derivatives(fn: Callable, arrays: Sequence[Any], grad_outputs: Sequence[Any] | None,
                             tol: _Tolerances, seed: int) -> bool:
    xs = [Variable(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    ys = _as_outputs(fn(*xs))
    gys = grad_outputs or _random_like([y.array for y in ys], seed)
    positions = [i for i, x in enumerate(xs) if x.requires_grad]
    analytic = grad(ys, [xs[i] for i in positions],
                    [backend.asarray(g, y.xp) for g, y in zip(gys, ys)], allow_unused=True)
    numeric = numerical_grad(fn, arrays, gys, tol.eps)
    for i, a in zip(positions, analytic):
        _compare(f"input {i}", None if a is None else a.array, numeric[i], tol.atol, tol.rtol)
    return True


def gradgradcheck(fn: Callable, inputs: Sequence[Any], eps: float | None = None,
                  atol: float | None = None, rtol: float | None = None, seed: int = 0) -> bool:
    """Check second derivatives: gradcheck of ``(x, gy) -> grad(fn(x), x, gy, create_graph=True)``.

    The output gradients ``gy`` are inputs of the check too, so a backward that
    treats them as constants (``gy.array``) is caught, not only one that treats
    retained inputs as constants.  ``eps``, ``atol`` and ``rtol`` default to 1e-6,
    1e-4 and 1e-3 for float64 inputs and to looser values, with a warning, for
    float32 and float16.

    >>> import numpy as np, memsave.functions as F
    >>> gradgradcheck(F.tanh, [np.array([0.3, -0.2])])
    True
    """
    arrays = [np.asarray(a) if not backend.is_array(a) else a for a in inputs]
    tol = _tolerances(_GRADGRADCHECK, arrays, eps, atol, rtol, "gradgradcheck")
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

    return _check_first_derivatives(first_grad, arrays + gys, None, tol, seed + 1)
