"""Attention: a fused, memory-efficient scaled_dot_product_attention.

One op computes ``softmax(q @ k^T * scale + masking) @ v`` one block of queries at a
time: a block's scores (..., block, Lk) are formed, turned into probabilities, used and
dropped, so the transient memory is O(block x Lk) per head and the Lq x Lk score matrix
never exists.  Rows are independent, so a block sees all its keys at once and needs no
running rescaling.  The op keeps q, k, v, its output and the per-row log-sum-exp of the
scores; backward rebuilds each block's probabilities as ``exp(scores - lse)`` (the
FlashAttention backward).  Under ``create_graph=True`` the gradient is instead written
with differentiable memsave ops on the whole score matrix, so higher derivatives work.

Masked scores are set to a large negative finite number, so a query that may attend to
no key at all gets the plain average of the values (never NaN), and a constant gradient.
Attention dropout draws one seed per call from :func:`memsave.random.get_generator` and
regenerates each block's mask from (seed, first row of the block) whenever it is needed:
a checkpoint's recomputation replays memsave's stream and so draws the same seed, and
backward, which visits the blocks again after other draws may have happened, needs no
Lq x Lk mask stored (which would defeat the point of the fused op).

>>> import numpy as np, memsave as ms
>>> q = k = v = ms.Variable(np.eye(2))
>>> scaled_dot_product_attention(q, k, v, causal=True).array[0]
array([1., 0.])
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy

from memsave import random
from memsave.backend import get_array_module
from memsave.config import config, is_grad_enabled
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable, as_variable
from memsave.errors import DTypeError, ShapeError

__all__ = ["scaled_dot_product_attention", "DEFAULT_BLOCK_SIZE"]

DEFAULT_BLOCK_SIZE = 64
"""Queries per block when ``block_size`` is not given.  The transient memory of forward and
backward is a few (at most about four) blocks of ``block * Lk`` scores per head: the
probabilities, their gradient and the products made from them."""


def _swap(a: Any) -> Any:
    return a.swapaxes(-1, -2)


def _masked_value(dtype: Any) -> Any:
    """What a masked score becomes: large and negative, finite so that sums stay finite."""
    return dtype.type(numpy.finfo(dtype).min / 2)


class ScaledDotProductAttention(FunctionNode):
    """Inputs q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv) and optionally a boolean mask
    broadcastable to (..., Lq, Lk); the output is (..., Lq, dv)."""

    def __init__(self, scale, causal, dropout, block_size):
        self.scale = scale
        self.causal = causal
        self.dropout = dropout
        self.block_size = block_size
        self.seed = None

    # ----- the blocks, shared by forward and backward ---------------------------------
    def _blocks(self, lq: int, lk: int, masked: bool) -> Iterator[tuple[int, int, int]]:
        """``(i0, i1, kend)``: query rows i0:i1 and the keys :kend they can see.

        Under ``causal`` alone a block never sees keys past its last row, so they are
        skipped; with a mask every key is kept, so that a fully masked row averages all
        the values exactly as the unfused composition does.
        """
        for i0 in range(0, lq, self.block_size):
            i1 = min(i0 + self.block_size, lq)
            yield i0, i1, (min(i1, lk) if self.causal and not masked else lk)

    def _blocked(self, mask: Any, i0: int, i1: int, kend: int, xp: Any) -> Any:
        """Boolean (..., i1 - i0, kend): True where query i may not see key j (or None)."""
        blocked = None
        if self.causal:
            blocked = xp.arange(kend)[None, :] > xp.arange(i0, i1)[:, None]
        if mask is not None:
            rows = mask if mask.shape[-2] == 1 else mask[..., i0:i1, :]
            blocked = ~rows if blocked is None else blocked | ~rows
        return blocked

    def _scores(self, q: Any, k: Any, mask: Any, i0: int, i1: int, kend: int) -> tuple[Any, Any]:
        """Scaled scores of queries i0:i1 against keys :kend, masked entries set very low."""
        xp = get_array_module(q, k)
        s = xp.matmul(q[..., i0:i1, :] * self.scale, _swap(k[..., :kend, :]))
        blocked = self._blocked(mask, i0, i1, kend, xp)
        if blocked is not None:
            xp.copyto(s, _masked_value(s.dtype), where=blocked)
        return s, blocked

    def _keep(self, shape: tuple[int, ...], i0: int, dtype: Any, xp: Any) -> Any:
        """The dropout keep-mask of the block starting at row ``i0``: one bool per score."""
        dtype = "float64" if dtype == "float64" else "float32"  # what generators draw
        draws = numpy.random.default_rng([self.seed, i0]).random(shape, dtype=dtype)
        return xp.asarray(draws >= self.dropout)

    # ----- forward -----------------------------------------------------------------------
    def forward(self, q, k, v, mask=None):
        xp = get_array_module(q, k, v)
        self.retain_inputs(*range(3 if mask is None else 4))
        self.retain_outputs(0)
        if self.dropout:
            self.seed = int(random.get_generator(numpy).integers(2 ** 63))
        lead = numpy.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        lq, lk = q.shape[-2], k.shape[-2]
        out = _heads_last_empty(xp, (*lead, lq, v.shape[-1]), q.dtype)
        lse = xp.empty((*lead, lq, 1), dtype=q.dtype)
        for i0, i1, kend in self._blocks(lq, lk, mask is not None):
            s, _ = self._scores(q, k, mask, i0, i1, kend)
            m = s.max(axis=-1, keepdims=True)
            s -= m
            xp.exp(s, out=s)
            total = s.sum(axis=-1, keepdims=True)
            s /= total
            lse[..., i0:i1, :] = xp.log(total) + m
            if self.dropout:
                s *= self._keep(s.shape, i0, s.dtype, xp)
                s *= s.dtype.type(1 / (1 - self.dropout))
            out[..., i0:i1, :] = xp.matmul(s, v[..., :kend, :])
        self.save_for_backward(lse)
        return out

    # ----- backward ----------------------------------------------------------------------
    def backward(self, indexes, gy):
        q, k, v, *mask = self.retained_inputs()
        mask = mask[0].array if mask else None
        if is_grad_enabled():  # create_graph: a differentiable gradient
            gq, gk, gv = self._differentiable_grads(q, k, v, mask, gy)
        else:
            gq, gk, gv = (as_variable(g) for g in self._fused_grads(q.array, k.array, v.array,
                                                                      mask, gy.array))
        return (gq, gk, gv) + ((None,) if mask is not None else ())

    def _fused_grads(self, q: Any, k: Any, v: Any, mask: Any, gy: Any) -> tuple[Any, Any, Any]:
        """dq, dk, dv block by block, from the kept output and log-sum-exp."""
        xp = get_array_module(q, k, v)
        out, = (y.array for y in self.retained_outputs())
        lse, = self.saved
        lead, lq, lk = gy.shape[:-2], q.shape[-2], k.shape[-2]
        rowdot = (gy * out).sum(axis=-1, keepdims=True)  # rowsum(dP * P) = rowsum(dO * O)
        gq = xp.empty((*lead, lq, q.shape[-1]), dtype=q.dtype)
        gk = xp.zeros((*lead, lk, k.shape[-1]), dtype=k.dtype)
        gv = xp.zeros((*lead, lk, v.shape[-1]), dtype=v.dtype)
        for i0, i1, kend in self._blocks(lq, lk, mask is not None):
            p, blocked = self._scores(q, k, mask, i0, i1, kend)
            p -= lse[..., i0:i1, :]
            xp.exp(p, out=p)
            if mask is not None:  # a fully masked row's lse absorbed log(Lk): it is uniform
                xp.copyto(p, p.dtype.type(1 / kend), where=blocked.all(axis=-1, keepdims=True))
            g_out = gy[..., i0:i1, :]
            if self.dropout:
                keep = self._keep(p.shape, i0, p.dtype, xp)
                g_out = g_out * g_out.dtype.type(1 / (1 - self.dropout))
                gv[..., :kend, :] += xp.matmul(_swap(p * keep), g_out)
            else:
                gv[..., :kend, :] += xp.matmul(_swap(p), g_out)
            ds = xp.matmul(g_out, _swap(v[..., :kend, :]))
            if self.dropout:
                ds *= keep
            ds -= rowdot[..., i0:i1, :]
            ds *= p
            if mask is not None:  # a fully masked row is constant in q and k
                xp.copyto(ds, ds.dtype.type(0), where=blocked)
            gq[..., i0:i1, :] = xp.matmul(ds, k[..., :kend, :])
            gk[..., :kend, :] += xp.matmul(_swap(ds), q[..., i0:i1, :])
        gq *= self.scale
        gk *= self.scale
        return gq, gk, gv

    def _differentiable_grads(self, q: Variable, k: Variable, v: Variable, mask: Any,
                              gy: Variable) -> tuple[Variable, Variable, Variable]:
        """The same gradients written with memsave ops (on the full score matrix)."""
        from memsave.functions.activation import softmax
        from memsave.functions.array import sum as sum_
        from memsave.functions.array import where
        from memsave.functions.math import matmul

        xp = q.xp
        lq, lk = q.shape[-2], k.shape[-2]
        s = matmul(q * self.scale, _swap_var(k))
        blocked = self._blocked(mask, 0, lq, lk, xp)
        if blocked is not None:
            s = where(blocked, xp.asarray(_masked_value(s.dtype)), s)
        p = softmax(s, axis=-1)
        dp = matmul(gy, _swap_var(v))
        if self.dropout:
            keep = xp.zeros(s.shape, dtype=bool)
            for i0, i1, kend in self._blocks(lq, lk, mask is not None):
                keep[..., i0:i1, :kend] = self._keep((*s.shape[:-2], i1 - i0, kend), i0, s.dtype, xp)
            keep = keep * s.dtype.type(1 / (1 - self.dropout))
            gv = matmul(_swap_var(p * keep), gy)
            dp = dp * keep
        else:
            gv = matmul(_swap_var(p), gy)
        ds = p * (dp - sum_(dp * p, axis=-1, keepdims=True))
        if mask is not None:  # a fully masked row is constant in q and k
            ds = where(blocked, 0.0, ds)
        return matmul(ds, k) * self.scale, matmul(_swap_var(ds), q) * self.scale, gv


def _swap_var(x: Variable) -> Variable:
    from memsave.functions.array import transpose

    axes = list(range(len(x.shape)))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    return transpose(x, axes)


def _heads_last_empty(xp: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """An empty (..., H, L, d) array laid out in memory as (..., L, H, d).

    Multi-head attention merges heads with a transpose to (..., L, H, d) and a reshape;
    with this layout both are views, so the output is not copied (and not kept twice).
    """
    if len(shape) < 3:
        return xp.empty(shape, dtype=dtype)
    *lead, heads, length, width = shape
    return xp.empty((*lead, length, heads, width), dtype=dtype).swapaxes(-3, -2)


def _check(q: Any, k: Any, v: Any, mask: Any, xp: Any) -> Any:
    """Validate shapes and dtypes; return the mask as a boolean array with the scores' rank."""
    if len(q.shape) < 2 or len(k.shape) < 2 or len(v.shape) < 2:
        raise ShapeError(f"scaled_dot_product_attention needs rank >= 2 operands, got q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"scaled_dot_product_attention: expected q (..., Lq, d), k (..., Lk, d), "
                         f"v (..., Lk, dv); got q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    try:
        lead = numpy.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ShapeError(f"scaled_dot_product_attention: the leading dimensions of q "
                         f"{tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not "
                         f"broadcast together") from None
    dtypes = {numpy.dtype(x.dtype) for x in (q, k, v)}
    if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
        raise DTypeError(f"scaled_dot_product_attention needs q, k and v of one floating dtype, "
                         f"got {q.dtype}, {k.dtype} and {v.dtype}; cast them with .astype first")
    if mask is None:
        return None
    mask = mask.array if isinstance(mask, Variable) else xp.asarray(mask)
    if mask.dtype != bool:
        raise DTypeError(f"scaled_dot_product_attention: mask must be boolean "
                         f"(True = attend), got dtype {mask.dtype}")
    scores = (*lead, q.shape[-2], k.shape[-2])
    try:
        fits = numpy.broadcast_shapes(mask.shape, scores) == scores
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"scaled_dot_product_attention: mask of shape {mask.shape} does "
                         f"not broadcast to the scores' shape {scores} (..., Lq, Lk)")
    return mask.reshape((1,) * (len(scores) - mask.ndim) + mask.shape)


def scaled_dot_product_attention(q: Any, k: Any, v: Any, mask: Any = None, causal: bool = False,
                                 scale: float | None = None, dropout: float = 0.0,
                                 train: bool | None = None,
                                 block_size: int | None = None) -> Variable:
    """``softmax(q @ k^T * scale + masking) @ v`` for q (..., Lq, d), k (..., Lk, d) and
    v (..., Lk, dv); leading dimensions broadcast.  ``scale`` defaults to ``1 / sqrt(d)``.

    ``mask`` is a boolean array broadcastable to (..., Lq, Lk), True where a query may
    attend to a key; ``causal=True`` also forbids query i to see key j > i.  ``dropout``
    zeroes each attention probability with that probability in training mode (``train``,
    default ``config.train``) and scales the rest by ``1 / (1 - dropout)``.  Work is done
    ``block_size`` queries at a time (default :data:`DEFAULT_BLOCK_SIZE`); the op keeps
    only q, k, v, the output and one log-sum-exp per query for backward.

    >>> import numpy as np
    >>> q, k = Variable(np.ones((2, 1, 3, 4))), Variable(np.ones((2, 1, 5, 4)))
    >>> scaled_dot_product_attention(q, k, np.ones((2, 1, 5, 6))).shape
    (2, 1, 3, 6)
    """
    xp = get_array_module(*(x.array if isinstance(x, Variable) else x for x in (q, k, v)))
    mask = _check(q, k, v, mask, xp)
    if not 0 <= dropout < 1:
        raise ValueError(f"scaled_dot_product_attention: dropout must be in [0, 1), "
                         f"got {dropout!r}")
    block_size = DEFAULT_BLOCK_SIZE if block_size is None else block_size
    if isinstance(block_size, bool) or not isinstance(block_size, (int, numpy.integer)) \
            or block_size < 1:
        raise ValueError(f"scaled_dot_product_attention: block_size must be a positive int, "
                         f"got {block_size!r}")
    train = config.train if train is None else train
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    node = ScaledDotProductAttention(scale, bool(causal), float(dropout) if train else 0.0,
                                     int(block_size))
    inputs = (q, k, v) if mask is None else (q, k, v, mask)
    return node.apply(*inputs)[0]
