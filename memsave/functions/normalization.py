"""Normalization: layer_norm, batch_norm.

Each op keeps ``x``, ``gamma`` and the per-row (per-channel) mean and 1 / std for
backward, never a normalized copy.  Backward is one fused pass over raw arrays;
under ``create_graph=True`` it is written with differentiable ops instead (the
statistics recomputed from ``x``), so double backprop works.

Batch norm in training mode updates the running statistics in place, once per
call, and never while a checkpoint re-runs its forward (``config.in_recompute``).

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.array([[1.0, 3.0], [2.0, 6.0]]))
>>> layer_norm(x, np.ones(2), np.zeros(2), eps=0.0).array
array([[-1.,  1.],
       [-1.,  1.]])
"""
from __future__ import annotations

from typing import Any

from memsave.backend import get_array_module
from memsave.config import config, is_grad_enabled
from memsave.core.backprop import handed_over
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable, as_variable
from memsave.errors import ShapeError

__all__ = ["layer_norm", "batch_norm"]


def _normalized_grad(x: Variable, gamma: Variable, gy: Variable, axes: tuple[int, ...],
                     eps: float) -> tuple[Variable, Variable]:
    """``(gx, x_hat)`` of ``y = x_hat * gamma + beta`` with statistics over ``axes``.

    Built from memsave ops on ``x`` so that it is differentiable again.
    """
    from memsave.functions.math import mean, sqrt

    xc = x - mean(x, axes, keepdims=True)
    inv_std = 1.0 / sqrt(mean(xc * xc, axes, keepdims=True) + eps)
    x_hat = xc * inv_std
    g_hat = gy * gamma
    gx = inv_std * (g_hat - mean(g_hat, axes, keepdims=True)
                    - x_hat * mean(g_hat * x_hat, axes, keepdims=True))
    return gx, x_hat


def _fused_grads(x: Any, gamma: Any, gy: Any, mu: Any, inv_std: Any, axes: tuple[int, ...],
                 param_axes: tuple[int, ...], indexes: tuple[int, ...],
                 in_place: bool = False) -> tuple[Any, Any, Any]:
    """``(gx, ggamma, gbeta)`` (None where not asked) on raw arrays.

    Statistics over ``axes``; ``gamma`` is already broadcastable to ``x``; the parameter
    gradients are summed over ``param_axes``.  Two passes over chunks of the first axis
    (an eighth of it at a time): the sums, then ``gx``.  Transient memory is ``gx`` plus a few
    chunk-sized buffers, not three x-sized ones; with ``in_place`` (and gy of x's dtype) gx
    is written into gy's buffer, whose rows the second pass reads just before.
    """
    xp = get_array_module(x)
    ndim, n = x.ndim, x.shape[0]
    axes = tuple(sorted(a % ndim for a in axes))
    param_axes = tuple(sorted(a % ndim for a in param_axes))
    per_row = mu.shape[0] == n and n > 1 and 0 not in axes   # statistics per row (layer norm)
    chunkable = 0 in param_axes and (per_row or 0 in axes)
    step = max(1, -(-n // 8)) if chunkable else max(n, 1)
    count = 1
    for a in axes:
        count *= x.shape[a]
    sum_g = xp.zeros(mu.shape, dtype=x.dtype)         # sum of gy * gamma over axes
    sum_gx = xp.zeros(mu.shape, dtype=x.dtype)        # sum of gy * gamma * x_hat over axes
    ggamma = gbeta = None
    for start in range(0, n, step):
        rows = slice(start, start + step)
        m, s = (mu[rows], inv_std[rows]) if per_row else (mu, inv_std)
        x_hat = x[rows] - m
        x_hat *= s
        g_hat = gy[rows] * gamma
        target = rows if per_row else slice(None)
        sum_g[target] += g_hat.sum(axis=axes, keepdims=True)
        g_hat *= x_hat
        sum_gx[target] += g_hat.sum(axis=axes, keepdims=True)
        del g_hat
        if 1 in indexes:
            x_hat *= gy[rows]
            part = x_hat.sum(axis=param_axes)
            ggamma = part if ggamma is None else ggamma + part
        if 2 in indexes:
            part = gy[rows].sum(axis=param_axes)
            gbeta = part if gbeta is None else gbeta + part
        del x_hat
    if 0 not in indexes:
        return None, ggamma, gbeta
    mean_g, mean_gx = sum_g / count, sum_gx / count
    gx = gy if in_place and gy.dtype == x.dtype else xp.empty_like(x)
    for start in range(0, n, step):
        rows = slice(start, start + step)
        m, s = (mu[rows], inv_std[rows]) if per_row else (mu, inv_std)
        a, b = (mean_g[rows], mean_gx[rows]) if per_row else (mean_g, mean_gx)
        out = gx[rows]
        xp.multiply(gy[rows], gamma, out=out)
        out -= a
        x_hat = x[rows] - m
        x_hat *= s
        x_hat *= b
        out -= x_hat
        out *= s
    return gx, ggamma, gbeta


def _variables(*arrays: Any) -> tuple[Variable | None, ...]:
    return tuple(None if a is None else as_variable(a) for a in arrays)


def _normalize(x: Any, mu: Any, inv_std: Any, gamma: Any, beta: Any) -> Any:
    """``(x - mu) * inv_std * gamma + beta`` in one new buffer."""
    y = x - mu
    y *= inv_std
    y *= gamma
    y += beta
    return y


def _moments(x: Any, axes: tuple[int, ...], eps: float) -> tuple[Any, Any, Any]:
    """Raw-array mean, biased variance and 1 / sqrt(var + eps) over ``axes`` (kept dims)."""
    xp = get_array_module(x)
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=axes, keepdims=True)
    return mu, var, x.dtype.type(1) / xp.sqrt(var + x.dtype.type(eps))


class LayerNormalization(FunctionNode):
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` over the last axis; keeps x and gamma."""

    overwritable_grads = (0,)

    def __init__(self, eps):
        self.eps = eps

    def forward(self, x, gamma, beta):
        self.retain_inputs(0, 1)
        mu, _, inv_std = _moments(x, (-1,), self.eps)
        self.save_for_backward(mu, inv_std)
        return _normalize(x, mu, inv_std, gamma, beta)

    def backward(self, indexes, gy):
        from memsave.functions.array import reshape
        from memsave.functions.array import sum as sum_

        x, gamma = self.retained_inputs()
        if not is_grad_enabled():
            mu, inv_std = self.saved
            lead = tuple(range(x.ndim - 1))
            return _variables(*_fused_grads(x.array, gamma.array, gy.array, mu, inv_std, (-1,),
                                            lead, indexes, handed_over(gy)))
        gx, x_hat = _normalized_grad(x, gamma, gy, (-1,), self.eps)
        d = x.shape[-1]
        ggamma = sum_(reshape(gy * x_hat, (-1, d)), axis=0) if 1 in indexes else None
        gbeta = sum_(reshape(gy, (-1, d)), axis=0) if 2 in indexes else None
        return (gx if 0 in indexes else None), ggamma, gbeta


class BatchNormalization(FunctionNode):
    """Training-mode batch norm over every axis but 1; keeps x and gamma.

    The running arrays, when given, are updated in place during forward and then
    dropped: the node holds no reference to them afterwards.
    """

    overwritable_grads = (0,)

    def __init__(self, eps, running_mean=None, running_var=None, decay=0.9):
        self.eps = eps
        self.running = (running_mean, running_var)
        self.decay = decay

    def forward(self, x, gamma, beta):
        self.retain_inputs(0, 1)
        axes = _batch_axes(x.ndim)
        mu, var, inv_std = _moments(x, axes, self.eps)
        self.save_for_backward(mu, inv_std)
        shape = _channel_shape(x)
        y = _normalize(x, mu, inv_std, gamma.reshape(shape), beta.reshape(shape))
        running_mean, running_var = self.running
        self.running = (None, None)
        if not config.in_recompute:
            m = x.size // x.shape[1]
            if running_mean is not None:
                running_mean *= self.decay
                running_mean += (1 - self.decay) * mu.reshape(-1)
            if running_var is not None:
                running_var *= self.decay
                running_var += (1 - self.decay) * (m / max(m - 1, 1)) * var.reshape(-1)
        return y

    def backward(self, indexes, gy):
        from memsave.functions.array import reshape
        from memsave.functions.array import sum as sum_

        x, gamma = self.retained_inputs()
        axes = _batch_axes(x.ndim)
        if not is_grad_enabled():
            mu, inv_std = self.saved
            return _variables(*_fused_grads(x.array, gamma.array.reshape(mu.shape), gy.array, mu,
                                            inv_std, axes, axes, indexes, handed_over(gy)))
        gx, x_hat = _normalized_grad(x, reshape(gamma, _channel_shape(x)), gy, axes, self.eps)
        ggamma = sum_(gy * x_hat, axis=axes) if 1 in indexes else None
        gbeta = sum_(gy, axis=axes) if 2 in indexes else None
        return (gx if 0 in indexes else None), ggamma, gbeta


class FixedBatchNormalization(FunctionNode):
    """Evaluation-mode batch norm with given (constant) mean and variance; keeps x and gamma."""

    def __init__(self, eps):
        self.eps = eps

    def forward(self, x, gamma, beta, mean, var):
        xp = get_array_module(x)
        self.retain_inputs(0, 1)
        shape = _channel_shape(x)
        mean = mean.reshape(shape).astype(x.dtype)  # a copy: later training steps
        inv_std = (1 / xp.sqrt(var.reshape(shape) + self.eps)).astype(x.dtype, copy=False)
        self.save_for_backward(mean, inv_std)  # update the running arrays in place
        return (x - mean) * (inv_std * gamma.reshape(shape)) + beta.reshape(shape)

    def backward(self, indexes, gy):
        from memsave.functions.array import reshape
        from memsave.functions.array import sum as sum_

        x, gamma = self.retained_inputs()
        mean, inv_std = self.saved
        axes = _batch_axes(x.ndim)
        gx = gy * (reshape(gamma, mean.shape) * inv_std) if 0 in indexes else None
        ggamma = sum_(gy * ((x - mean) * inv_std), axis=axes) if 1 in indexes else None
        gbeta = sum_(gy, axis=axes) if 2 in indexes else None
        return gx, ggamma, gbeta, None, None


def _batch_axes(ndim: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, ndim))


def _channel_shape(x: Any) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _raw(a: Any) -> Any:
    return a.array if isinstance(a, Variable) else a


def layer_norm(x: Any, gamma: Any, beta: Any, eps: float = 1e-5) -> Variable:
    """Normalize ``x`` over its last axis, then scale by ``gamma`` and shift by ``beta``
    (both of shape ``(x.shape[-1],)``).

    >>> import numpy as np
    >>> y = layer_norm(Variable(np.array([[0.0, 2.0, 4.0]])), np.ones(3), np.zeros(3))
    >>> np.round(y.array, 3)
    array([[-1.225,  0.   ,  1.225]])
    """
    d = x.shape[-1] if len(x.shape) else None
    for name, p in (("gamma", gamma), ("beta", beta)):
        if d is None or tuple(p.shape) != (d,):
            raise ShapeError(f"layer_norm: {name} has shape {tuple(p.shape)} but x has shape "
                             f"{tuple(x.shape)}; expected ({d},)")
    return LayerNormalization(eps).apply(x, gamma, beta)[0]


def batch_norm(x: Any, gamma: Any, beta: Any, running_mean: Any = None, running_var: Any = None,
               decay: float = 0.9, eps: float = 2e-5, train: bool | None = None) -> Variable:
    """Batch normalization of ``x`` (N, C) or (N, C, H, W) per channel (axis 1).

    In training mode (``train``, default ``config.train``) the batch statistics are
    used, and ``running_mean`` / ``running_var`` (arrays of shape (C,)), when given, are
    updated in place: ``running = decay * running + (1 - decay) * batch`` with the
    unbiased batch variance, as in Chainer, except while a checkpoint recomputes
    (``config.in_recompute``).  In evaluation mode the running statistics are used.

    >>> import numpy as np
    >>> x = Variable(np.array([[1.0], [3.0]]))
    >>> rm, rv = np.zeros(1), np.ones(1)
    >>> batch_norm(x, np.ones(1), np.zeros(1), rm, rv, eps=0.0).array
    array([[-1.],
           [ 1.]])
    >>> rm, rv
    (array([0.2]), array([1.1]))
    """
    if len(x.shape) not in (2, 4):
        raise ShapeError(f"batch_norm needs x of shape (N, C) or (N, C, H, W), "
                         f"got {tuple(x.shape)}")
    c = x.shape[1]
    running_mean, running_var = _raw(running_mean), _raw(running_var)
    named = (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
             ("running_var", running_var))
    for name, p in named:
        if p is not None and tuple(p.shape) != (c,):
            raise ShapeError(f"batch_norm: {name} has shape {tuple(p.shape)} but x has shape "
                             f"{tuple(x.shape)}; expected ({c},)")
    train = config.train if train is None else train
    if train:
        node = BatchNormalization(eps, running_mean, running_var, decay)
        return node.apply(x, gamma, beta)[0]
    if running_mean is None or running_var is None:
        raise ValueError("batch_norm in evaluation mode needs running_mean and running_var")
    return FixedBatchNormalization(eps).apply(x, gamma, beta, running_mean, running_var)[0]
