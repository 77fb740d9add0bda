"""Activations: tanh, sigmoid, relu, leaky_relu, gelu, softmax, log_softmax, logsumexp.

Each needs a floating-point input: a bool or integer array raises DTypeError (NumPy
would return float16 for bool and int8, float64 for int64).

>>> import numpy as np, memsave as ms
>>> relu(ms.Variable(np.array([-1.0, 2.0]))).array
array([0., 2.])
"""
from __future__ import annotations

import math
from typing import Any

import numpy

from memsave.backend import get_array_module
from memsave.core.backprop import handed_over
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable
from memsave.errors import DTypeError
from memsave.functions.array import _check_axes, _kept_shape, reshape
from memsave.functions.array import sum as sum_
from memsave.functions.math import exp

__all__ = ["tanh", "sigmoid", "relu", "leaky_relu", "gelu", "softmax", "log_softmax", "logsumexp"]


_CHUNK = 1 << 16
"""Elements per pass of a fused elementwise kernel on the CPU: its temporaries stay small
(and in cache) instead of being x-sized."""


def _elementwise(kernel: Any, x: Any, *others: Any, out: Any = None) -> Any:
    """``kernel(x, *others)`` (a function of same-shaped arrays returning a new array) written
    into ``out`` (default: a new array like x), chunk by chunk on the CPU.  ``out`` may be one
    of the operands: each chunk is computed before it is written."""
    xp = get_array_module(x)
    if xp is numpy and x.ndim and x.size <= _CHUNK:   # one chunk: the kernel on the arrays
        y = kernel(x, *others)
        if out is None and y.dtype == x.dtype:
            return y
        out = xp.empty(x.shape, dtype=x.dtype) if out is None else out
        out[...] = y
        return out
    flat = [a.reshape(-1) for a in (x, *others)]
    if xp is not numpy:
        if out is None:
            return kernel(*flat).reshape(x.shape)
        out[...] = kernel(*flat).reshape(x.shape)
        return out
    if out is None:
        out = xp.empty(x.shape, dtype=x.dtype)
    target = out.reshape(-1)
    for i in range(0, target.size, _CHUNK):
        target[i:i + _CHUNK] = kernel(*(a[i:i + _CHUNK] for a in flat))
    return out


class Tanh(FunctionNode):
    overwritable_grads = (0,)

    def forward(self, x):
        self.retain_outputs(0)
        return get_array_module(x).tanh(x)

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return TanhGrad(handed_over(gy)).apply(y, gy)[0]


def _times_tanh_slope(y: Any, gy: Any) -> Any:
    gx = y * y
    get_array_module(gx).subtract(1, gx, out=gx)
    gx *= gy
    return gx


class TanhGrad(FunctionNode):
    """``gy * (1 - y**2)`` in one buffer (gy's own when ``in_place``): the backward of tanh,
    itself differentiable."""

    def __init__(self, in_place=False):
        self.in_place = in_place

    def forward(self, y, gy):
        self.retain_inputs(0, 1)
        return _elementwise(_times_tanh_slope, y, gy, out=gy if self.in_place else None)

    def backward(self, indexes, ggx):
        y, gy = self.retained_inputs()
        g_y = -2 * y * gy * ggx if 0 in indexes else None
        g_gy = ggx * (1 - y * y) if 1 in indexes else None
        return g_y, g_gy


class Sigmoid(FunctionNode):
    overwritable_grads = (0,)

    def forward(self, x):
        self.retain_outputs(0)
        xp = get_array_module(x)
        y = xp.multiply(x, 0.5, out=xp.empty_like(x))   # tanh(x / 2) / 2 + 1/2 in one buffer:
        xp.tanh(y, out=y)                               # the overflow-free logistic
        y *= 0.5
        y += 0.5
        return y

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return SigmoidGrad(handed_over(gy)).apply(y, gy)[0]


def _times_sigmoid_slope(y: Any, gy: Any) -> Any:
    gx = 1 - y
    gx *= y
    gx *= gy
    return gx


class SigmoidGrad(FunctionNode):
    """``gy * y * (1 - y)`` in one buffer (gy's own when ``in_place``): the backward of
    sigmoid, itself differentiable."""

    def __init__(self, in_place=False):
        self.in_place = in_place

    def forward(self, y, gy):
        self.retain_inputs(0, 1)
        return _elementwise(_times_sigmoid_slope, y, gy, out=gy if self.in_place else None)

    def backward(self, indexes, ggx):
        y, gy = self.retained_inputs()
        g_y = ggx * gy * (1 - 2 * y) if 0 in indexes else None
        g_gy = SigmoidGrad().apply(y, ggx)[0] if 1 in indexes else None
        return g_y, g_gy


class ReLU(FunctionNode):
    overwritable_grads = (0,)

    def forward(self, x):
        self.retain_outputs(0)
        return get_array_module(x).maximum(x, 0)

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return ReLUGrad(0.0, handed_over(gy)).apply(y, gy)[0]


class LeakyReLU(FunctionNode):
    overwritable_grads = (0,)

    def __init__(self, slope):
        self.slope = slope

    def forward(self, x):
        # With slope >= 0 the output's sign is the input's: keep the output, as ReLU does.
        if self.slope >= 0:
            self.retain_outputs(0)
        else:
            self.retain_inputs(0)
        return get_array_module(x).where(x > 0, x, x * self.slope)

    def backward(self, indexes, gy):
        kept, = self.retained_outputs() if self.slope >= 0 else self.retained_inputs()
        return ReLUGrad(self.slope, handed_over(gy)).apply(kept, gy)[0]


class ReLUGrad(FunctionNode):
    """``gy`` times a (leaky) ReLU's slope, 1 where ``kept > 0`` and ``slope`` elsewhere, in
    one buffer (gy's own when ``in_place``).  Linear in gy, constant in kept: its backward
    is itself."""

    def __init__(self, slope, in_place=False):
        self.slope = slope
        self.in_place = in_place

    def forward(self, kept, gy):
        self.retain_inputs(0)
        slope = gy.dtype.type(self.slope)

        # Multiplying by the mask k > 0, or where() between two arrays, is vectorized;
        # where(k > 0, 1, slope) with scalar branches is not (9x and 2x slower on NumPy 2).
        def kernel(k, g):
            if not slope:
                return g * (k > 0)
            return get_array_module(k).where(k > 0, g, g * slope)

        return _elementwise(kernel, kept, gy, out=gy if self.in_place else None)

    def backward(self, indexes, ggx):
        kept, = self.retained_inputs()
        return None, ReLUGrad(self.slope).apply(kept, ggx)[0]


# ----- the Gaussian CDF, for the exact GELU ---------------------------------------------
# W. J. Cody, "Rational Chebyshev approximation for the error function", Math. Comp. 23
# (1969), the coefficients of SPECFUN's CALERF.  Relative error ~1e-16 in float64: the
# result agrees with math.erfc to rounding, so GELU's analytic derivative (which uses the
# exact Gaussian density) matches its forward to machine precision.
_ERF_A = (3.16112374387056560e0, 1.13864154151050156e2, 3.77485237685302021e2,
          3.20937758913846947e3, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e1, 2.44024637934444173e2, 1.28261652607737228e3,
          2.84423683343917062e3)
_ERFC_C = (5.64188496988670089e-1, 8.88314979438837594e0, 6.61191906371416295e1,
           2.98635138197400131e2, 8.81952221241769090e2, 1.71204761263407058e3,
           2.05107837782607147e3, 1.23033935479799725e3, 2.15311535474403846e-8)
_ERFC_D = (1.57449261107098347e1, 1.17693950891312499e2, 5.37181101862009858e2,
           1.62138957456669019e3, 3.29079923573345963e3, 4.36261909014324716e3,
           3.43936767414372164e3, 1.23033935480374942e3)
_ERFC_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
           1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERFC_Q = (2.56852019228982242e0, 1.87295284992346047e0, 5.27905102951428412e-1,
           6.05183413124413191e-2, 2.33520497626869185e-3)
_INV_SQRT_PI = 1 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _exp_minus_square(y: Any, xp: Any) -> Any:
    """``exp(-y * y)`` without the cancellation of forming ``y * y`` (Cody's split)."""
    head = xp.trunc(y * 16) / 16
    return xp.exp(-head * head) * xp.exp(-(y - head) * (y + head))


def _erfc_array(z: Any) -> Any:
    """Complementary error function of an array (CALERF's three rational approximations)."""
    xp = get_array_module(z)
    y = xp.abs(z)
    out = xp.empty_like(y)
    small, large = y <= 0.46875, y > 4.0
    middle = ~(small | large)

    s = y[small]
    t = s * s
    num, den = _ERF_A[4] * t, t
    for a, b in zip(_ERF_A[:3], _ERF_B[:3]):
        num, den = (num + a) * t, (den + b) * t
    out[small] = 1 - s * (num + _ERF_A[3]) / (den + _ERF_B[3])

    m = y[middle]
    num, den = _ERFC_C[8] * m, m
    for c, d in zip(_ERFC_C[:7], _ERFC_D[:7]):
        num, den = (num + c) * m, (den + d) * m
    out[middle] = _exp_minus_square(m, xp) * (num + _ERFC_C[7]) / (den + _ERFC_D[7])

    g = xp.minimum(y[large], 30.0)  # erfc(30) underflows to 0 anyway; keeps inf out
    t = 1 / (g * g)
    num, den = _ERFC_P[5] * t, t
    for p, q in zip(_ERFC_P[:4], _ERFC_Q[:4]):
        num, den = (num + p) * t, (den + q) * t
    tail = t * (num + _ERFC_P[4]) / (den + _ERFC_Q[4])
    out[large] = _exp_minus_square(g, xp) * (_INV_SQRT_PI - tail) / g
    return xp.where(z < 0, 2 - out, out)


def _normal_cdf_array(x: Any) -> Any:
    """``P(N(0, 1) <= x)``, accurate in the lower tail too (erfc, not ``1 + erf``)."""
    return 0.5 * _erfc_array(x * -math.sqrt(0.5))


_GELU_CUBIC = 0.044715


def _square(x: Any) -> Any:
    """``x * x`` as a new array (also for 0-d ``x``, where NumPy would return a scalar)."""
    return get_array_module(x).multiply(x, x, out=get_array_module(x).empty_like(x))


def _gelu_tanh_inner(x: Any) -> Any:
    """``tanh(sqrt(2/pi) * (x + 0.044715 x^3))`` in one new buffer."""
    xp = get_array_module(x)
    t = _square(x)
    t *= _GELU_CUBIC
    t += 1
    t *= x
    t *= _SQRT_2_OVER_PI
    return xp.tanh(t, out=t)


def _gelu_slope(x: Any, approximate: str) -> Any:
    """GELU's derivative at ``x`` as a new array."""
    xp = get_array_module(x)
    if approximate == "none":  # P(X <= x) + x * density(x)
        d = _square(x)
        d *= -0.5
        xp.exp(d, out=d)
        d *= x * _INV_SQRT_2PI
        d += _normal_cdf_array(x)
        return d
    # 0.5 (1 + t) + 0.5 x (1 - t^2) u' = (1 + t) (0.5 x u' (1 - t) + 0.5),
    # with u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    d = _square(x)
    d *= 3 * _GELU_CUBIC
    d += 1
    d *= x
    d *= 0.5 * _SQRT_2_OVER_PI
    t = _gelu_tanh_inner(x)
    xp.subtract(1, t, out=t)
    d *= t
    d += 0.5
    xp.subtract(2, t, out=t)
    d *= t
    return d


def _gelu_tanh(x: Any) -> Any:
    y = _gelu_tanh_inner(x)
    y += 1
    y *= x
    y *= 0.5
    return y


def _gelu_exact(x: Any) -> Any:
    return x * _normal_cdf_array(x)


class GELU(FunctionNode):
    overwritable_grads = (0,)

    def __init__(self, approximate):
        self.approximate = approximate

    def forward(self, x):
        self.retain_inputs(0)
        return _elementwise(_gelu_tanh if self.approximate == "tanh" else _gelu_exact, x)

    def backward(self, indexes, gy):
        x, = self.retained_inputs()
        return GELUGrad(self.approximate, handed_over(gy)).apply(x, gy)[0]


class GELUGrad(FunctionNode):
    """``gy * gelu'(x)`` in one buffer (gy's own when ``in_place``): the backward of GELU,
    itself differentiable."""

    def __init__(self, approximate, in_place=False):
        self.approximate = approximate
        self.in_place = in_place

    def forward(self, x, gy):
        self.retain_inputs(0, 1)
        return _elementwise(self._kernel, x, gy, out=gy if self.in_place else None)

    def _kernel(self, x, gy):
        gx = _gelu_slope(x, self.approximate)
        gx *= gy
        return gx

    def backward(self, indexes, ggx):
        x, gy = self.retained_inputs()
        g_x = ggx * gy * _gelu_curvature(x, self.approximate) if 0 in indexes else None
        g_gy = GELUGrad(self.approximate).apply(x, ggx)[0] if 1 in indexes else None
        return g_x, g_gy


def _gelu_curvature(x: Variable, approximate: str) -> Variable:
    """GELU's second derivative, written with differentiable ops."""
    x2 = x * x
    if approximate == "none":  # density(x) * (2 - x^2)
        return exp(x2 * -0.5) * _INV_SQRT_2PI * (2 - x2)
    # (1 - t^2) (u' - x t u'^2 + 0.5 x u''),  u'' = 6 * 0.044715 sqrt(2/pi) x
    t = tanh(_SQRT_2_OVER_PI * x * (1 + _GELU_CUBIC * x2))
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x2)
    return (1 - t * t) * (du - x * t * du * du + 3 * _GELU_CUBIC * _SQRT_2_OVER_PI * x2)


# ----- softmax family -------------------------------------------------------------------
def _stable_max(x: Any, axes: tuple[int, ...]) -> Any:
    """Max over ``axes`` (kept), 0 where it is not finite, so ``x - max`` never makes NaN."""
    xp = get_array_module(x)
    m = x.max(axis=axes, keepdims=True)
    return xp.where(xp.isfinite(m), m, 0)


def _logsumexp_array(x: Any, axes: tuple[int, ...]) -> Any:
    xp = get_array_module(x)
    m = _stable_max(x, axes)
    return xp.log(xp.exp(x - m).sum(axis=axes, keepdims=True)) + m


class Softmax(FunctionNode):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        self.retain_outputs(0)
        y = get_array_module(x).exp(x - _stable_max(x, self.axes))
        y /= y.sum(axis=self.axes, keepdims=True)
        return y

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        gx = y * gy
        return gx - y * sum_(gx, self.axes, keepdims=True)


class LogSoftmax(FunctionNode):
    def __init__(self, axes):
        self.axes = axes

    def forward(self, x):
        self.retain_outputs(0)
        return x - _logsumexp_array(x, self.axes)

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return gy - exp(y) * sum_(gy, self.axes, keepdims=True)


class LogSumExp(FunctionNode):
    def __init__(self, axes, keepdims):
        self.axes = axes
        self.keepdims = keepdims

    def forward(self, x):
        self.retain_inputs(0)
        self.retain_outputs(0)  # the reduced output is small; d/dx = exp(x - y)
        y = _logsumexp_array(x, self.axes)
        return y if self.keepdims else y.reshape(
            tuple(n for i, n in enumerate(x.shape) if i not in self.axes))

    def backward(self, indexes, gy):
        x, = self.retained_inputs()
        y, = self.retained_outputs()
        kept = _kept_shape(x.shape, self.axes)
        return reshape(gy, kept) * exp(x - reshape(y, kept))


def _floating(x: Any, what: str) -> Any:
    """``x``, checked to hold floats: activations are float functions, and NumPy would give a
    bool or int8 input a float16 result."""
    dtype = getattr(x, "dtype", None)
    if dtype is not None and dtype.kind != "f":
        raise DTypeError(f"{what} needs a floating-point x, got dtype {dtype}; cast it first, "
                         f"e.g. x.astype(numpy.float32)")
    return x


def tanh(x: Any) -> Variable:
    """Elementwise hyperbolic tangent.

    >>> import numpy as np
    >>> tanh(Variable(np.zeros(1))).array
    array([0.])
    """
    return Tanh().apply(_floating(x, "tanh"))[0]


def sigmoid(x: Any) -> Variable:
    """Elementwise logistic function ``1 / (1 + exp(-x))``.

    >>> import numpy as np
    >>> sigmoid(Variable(np.zeros(1))).array
    array([0.5])
    """
    return Sigmoid().apply(_floating(x, "sigmoid"))[0]


def relu(x: Any) -> Variable:
    """Elementwise ``max(x, 0)``.

    >>> import numpy as np
    >>> relu(Variable(np.array([-3.0]))).array
    array([0.])
    """
    return ReLU().apply(_floating(x, "relu"))[0]


def leaky_relu(x: Any, slope: float = 0.2) -> Variable:
    """Elementwise ``x if x > 0 else slope * x``.

    >>> import numpy as np
    >>> leaky_relu(Variable(np.array([-2.0, 3.0]))).array
    array([-0.4,  3. ])
    """
    return LeakyReLU(float(slope)).apply(_floating(x, "leaky_relu"))[0]


def gelu(x: Any, approximate: str = "tanh") -> Variable:
    """Gaussian error linear unit ``x * P(N(0, 1) <= x)``.

    ``approximate="tanh"`` (the default, as in GPT-2 and BERT) uses
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; ``"none"`` is the exact
    function, computed with W. J. Cody's rational approximations of erfc (relative error
    about 1e-16 in float64, so forward and derivative agree to rounding).

    >>> import numpy as np
    >>> y = gelu(Variable(np.array([-1.0, 0.0, 1.0])), approximate="none")
    >>> np.round(y.array, 6)
    array([-0.158655,  0.      ,  0.841345])
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f'gelu: approximate must be "none" or "tanh", got {approximate!r}')
    return GELU(approximate).apply(_floating(x, "gelu"))[0]


def softmax(x: Any, axis: Any = -1) -> Variable:
    """``exp(x) / sum(exp(x))`` over ``axis``, computed after subtracting the max.

    >>> import numpy as np
    >>> softmax(Variable(np.array([0.0, np.log(3.0)]))).array
    array([0.25, 0.75])
    """
    _floating(x, "softmax")
    return Softmax(_check_axes(axis, len(x.shape), "softmax")).apply(x)[0]


def log_softmax(x: Any, axis: Any = -1) -> Variable:
    """``x - logsumexp(x)`` over ``axis``: the log of :func:`softmax`, without its underflow.

    >>> import numpy as np
    >>> np.exp(log_softmax(Variable(np.array([0.0, np.log(3.0)]))).array)
    array([0.25, 0.75])
    """
    _floating(x, "log_softmax")
    return LogSoftmax(_check_axes(axis, len(x.shape), "log_softmax")).apply(x)[0]


def logsumexp(x: Any, axis: Any = -1, keepdims: bool = False) -> Variable:
    """``log(sum(exp(x)))`` over ``axis`` (None: all axes), stable for large ``x``.

    >>> import numpy as np
    >>> logsumexp(Variable(np.array([1000.0, 1000.0]))).array
    array(1000.69314718)
    """
    _floating(x, "logsumexp")
    return LogSumExp(_check_axes(axis, len(x.shape), "logsumexp"), keepdims).apply(x)[0]
