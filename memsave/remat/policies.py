"""Policies: per op output, what a checkpoint keeps and what it recomputes (JAX's names).

A policy is a function ``policy(out: OpOutput) -> Decision`` called for every output
of every op run inside a checkpoint (or a :func:`saved_arrays` block).  ``OpOutput``
tells the producing op (``out.op``, ``out.label`` such as ``"Linear"``), which output
it is, the array (``shape``, ``dtype``, ``nbytes``) and the name given with
:func:`checkpoint_name`, if any.  The decision is one of:

- ``RECOMPUTE``: drop the output; the recomputation re-runs its op (the default).
- ``SAVE``: keep it from forward; the recomputation does *not* re-run the op (torch's
  MUST_SAVE): the kept output stands in for it.
- ``OFFLOAD``: keep a copy in host memory (GPU arrays; on the CPU it is SAVE), brought back
  to the device when backward needs it.
- ``COMPRESS(s)``: keep a compressed copy, ``"float16"`` (scaled by ``max(abs(x))``, then rounded:
  error at most ``abs(x) * 2**-11 + max(abs(x)) * 2**-25`` per element) or ``"int8"`` (one scale per
  array, absolute error at most ``max(abs(x)) / 254``).  Gradients computed from it are approximate,
  within those bounds propagated through the backward pass.

An op with several outputs is kept only when the policy keeps all of them.  A policy is
asked when the op runs; an output tagged later with :func:`checkpoint_name` is asked about
again, with its name.  ``True``
and ``False`` are read as SAVE and RECOMPUTE, so JAX-style predicates work too.

>>> import numpy as np, memsave as ms, memsave.functions as F
>>> W = ms.Parameter(np.eye(4))
>>> y = ms.checkpoint(lambda x: F.linear(F.gelu(F.linear(x, W)), W), np.ones((2, 4)),
...                   policy=dots_saveable)
>>> y.sum().backward()   # the recomputation re-runs gelu only, not the two Linear ops
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy

from memsave import backend
from memsave.core import hooks
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable

__all__ = ["Decision", "RECOMPUTE", "SAVE", "OFFLOAD", "COMPRESS", "OpOutput", "Policy",
           "nothing_saveable", "everything_saveable", "dots_saveable", "save_only_these_names",
           "save_any_names_but_these", "offload_dots_to_host", "compress", "combine",
           "checkpoint_name", "saved_arrays", "DOT_OPS"]

#: Ops whose outputs ``dots_saveable`` keeps: matrix products and convolutions.
DOT_OPS = frozenset({"Linear", "MatMul", "Convolution2D", "Deconvolution2D",
                     "ScaledDotProductAttention"})


@dataclass(frozen=True)
class Decision:
    """What to do with one op output: ``kind`` is RECOMPUTE, SAVE, OFFLOAD or COMPRESS."""

    kind: str
    dtype: str | None = None   # COMPRESS only: "float16" or "int8"

    def __repr__(self) -> str:
        return f"COMPRESS({self.dtype!r})" if self.kind == "COMPRESS" else self.kind


RECOMPUTE = Decision("RECOMPUTE")
SAVE = Decision("SAVE")
OFFLOAD = Decision("OFFLOAD")
_COMPRESSIONS = ("float16", "int8")


def COMPRESS(dtype: str = "int8") -> Decision:  # noqa: N802 - reads like the other decisions
    """Keep a compressed copy: ``"int8"`` (per-array scale) or ``"float16"``.

    >>> COMPRESS("float16")
    COMPRESS('float16')
    """
    if dtype not in _COMPRESSIONS:
        raise ValueError(f"COMPRESS dtype must be one of {_COMPRESSIONS}, got {dtype!r}")
    return Decision("COMPRESS", dtype)


@dataclass(frozen=True)
class OpOutput:
    """What a policy sees: one output of one op."""

    op: FunctionNode
    index: int
    array: Any
    name: str | None

    @property
    def label(self) -> str:
        return self.op.label

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def dtype(self) -> Any:
        return self.array.dtype

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)


Policy = Callable[[OpOutput], Any]


def decide(policy: Policy, out: OpOutput) -> Decision:
    """Ask ``policy`` about ``out``; a non-decision is an error that names the policy and op.

    >>> decide(everything_saveable, None)
    SAVE
    """
    decision = policy(out)
    if decision is True:
        return SAVE
    if decision is False:
        return RECOMPUTE
    if not isinstance(decision, Decision):
        name = getattr(policy, "__qualname__", type(policy).__name__)
        label = out.label if out is not None else "?"
        raise TypeError(
            f"policy {name} returned {decision!r} for an output of {label}; a policy must "
            "return RECOMPUTE, SAVE, OFFLOAD or COMPRESS(...) from memsave.policies (or a bool)")
    return decision


# ----- built-in policies ----------------------------------------------------------------
def nothing_saveable(out: OpOutput) -> Decision:
    """Keep nothing: recompute every op (the default).

    >>> nothing_saveable(None)
    RECOMPUTE
    """
    return RECOMPUTE


def everything_saveable(out: OpOutput) -> Decision:
    """Keep every output: the recomputation re-runs nothing a kept output stands for.

    >>> everything_saveable(None)
    SAVE
    """
    return SAVE


def dots_saveable(out: OpOutput) -> Decision:
    """Keep the outputs of matrix products and convolutions (``DOT_OPS``); recompute the cheap
    elementwise ops around them.

    >>> import numpy as np, memsave.functions as F
    >>> from memsave.functions.math import MatMul
    >>> dots_saveable(OpOutput(MatMul(), 0, np.ones(2), None))
    SAVE
    """
    return SAVE if out.label in DOT_OPS else RECOMPUTE


def offload_dots_to_host(out: OpOutput) -> Decision:
    """Like :func:`dots_saveable`, but keep those outputs in host memory (GPU→host copies).

    >>> import numpy as np
    >>> from memsave.functions.math import MatMul
    >>> offload_dots_to_host(OpOutput(MatMul(), 0, np.ones(2), None))
    OFFLOAD
    """
    return OFFLOAD if out.label in DOT_OPS else RECOMPUTE


def save_only_these_names(*names: str) -> Policy:
    """Keep the outputs tagged with one of ``names`` by :func:`checkpoint_name`.

    >>> import numpy as np
    >>> save_only_these_names("h")(OpOutput(FunctionNode(), 0, np.ones(2), "h"))
    SAVE
    """
    wanted = _check_names(names, "save_only_these_names")

    def policy(out: OpOutput) -> Decision:
        return SAVE if out.name in wanted else RECOMPUTE

    policy.__qualname__ = f"save_only_these_names{tuple(names)!r}"
    return policy


def save_any_names_but_these(*names: str) -> Policy:
    """Keep every output tagged by :func:`checkpoint_name` except those named in ``names``.

    >>> import numpy as np
    >>> save_any_names_but_these("h")(OpOutput(FunctionNode(), 0, np.ones(2), "g"))
    SAVE
    """
    unwanted = _check_names(names, "save_any_names_but_these")

    def policy(out: OpOutput) -> Decision:
        return SAVE if out.name is not None and out.name not in unwanted else RECOMPUTE

    policy.__qualname__ = f"save_any_names_but_these{tuple(names)!r}"
    return policy


def compress(dtype: str = "int8", *, min_bytes: int = 0) -> Policy:
    """Keep every floating-point output of at least ``min_bytes`` compressed (see COMPRESS).

    >>> import numpy as np
    >>> compress("float16")(OpOutput(FunctionNode(), 0, np.ones(2), None))
    COMPRESS('float16')
    """
    decision = COMPRESS(dtype)

    def policy(out: OpOutput) -> Decision:
        if out.dtype.kind == "f" and out.nbytes >= min_bytes:
            return decision
        return RECOMPUTE

    policy.__qualname__ = f"compress({dtype!r})"
    return policy


def combine(*policies: Policy) -> Policy:
    """The first decision other than RECOMPUTE among ``policies`` wins.

    >>> import numpy as np
    >>> from memsave.functions.math import MatMul
    >>> combine(nothing_saveable, dots_saveable)(OpOutput(MatMul(), 0, np.ones(2), None))
    SAVE
    """
    for p in policies:
        check_policy(p)

    def policy(out: OpOutput) -> Decision:
        for p in policies:
            decision = decide(p, out)
            if decision != RECOMPUTE:
                return decision
        return RECOMPUTE

    policy.__qualname__ = "combine(" + ", ".join(
        getattr(p, "__qualname__", type(p).__name__) for p in policies) + ")"
    return policy


def check_policy(policy: Any) -> None:
    """Reject what cannot be a policy (a string, a Decision, a number) with a clear error.

    >>> check_policy("dots")
    Traceback (most recent call last):
    ...
    TypeError: policy must be a callable such as memsave.policies.dots_saveable, got str 'dots'
    """
    if isinstance(policy, Decision) or not callable(policy):
        raise TypeError(f"policy must be a callable such as memsave.policies.dots_saveable, got "
                        f"{type(policy).__name__} {policy!r}")


def _check_names(names: tuple, where: str) -> frozenset[str]:
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"{where} takes names (str), got {type(n).__name__} {n!r}")
    return frozenset(names)


# ----- names --------------------------------------------------------------------------------
class Name(FunctionNode):
    """Identity that tags its input's array with a name a policy can see."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def label(self) -> str:
        return f"Name({self.name!r})"

    def forward(self, x):
        return x

    def backward(self, indexes, gy):
        return gy


def checkpoint_name(x: Any, name: str) -> Variable:
    """Tag ``x`` with ``name`` for policies such as :func:`save_only_these_names` (identity in
    value and gradient).  The tag goes to the op that produced ``x``: keeping it means that op
    is not re-run.

    >>> import numpy as np, memsave.functions as F
    >>> h = checkpoint_name(F.tanh(Variable(np.zeros(2))), "h")
    >>> h.array
    array([0., 0.])
    """
    if not isinstance(name, str):
        raise TypeError(f"checkpoint_name needs a str name, got {type(name).__name__}")
    return Name(name).apply(x)[0]


# ----- storing a kept output -----------------------------------------------------------------
class Stored:
    """An output kept according to a decision; ``get()`` gives the array back on its device."""

    __slots__ = ("decision", "data", "scale", "dtype", "device")

    def __init__(self, array: Any, decision: Decision) -> None:
        self.decision, self.dtype, self.scale = decision, array.dtype, None
        self.device = backend.get_array_module(array)
        kind = decision.kind
        if kind == "OFFLOAD":
            self.data = backend.to_cpu(array) if self.device is not numpy else array
        elif kind == "COMPRESS" and array.dtype.kind == "f":
            self.data, self.scale = _compressed(array, decision.dtype or "int8")
        else:
            self.data = array

    @property
    def nbytes(self) -> int:
        """Bytes held on the array's own device (0 for an offloaded GPU array)."""
        if self.decision.kind == "OFFLOAD" and self.device is not numpy:
            return 0
        return int(self.data.nbytes)

    def get(self) -> Any:
        data = self.data
        if self.device is not numpy and backend.get_array_module(data) is numpy:
            data = self.device.asarray(data)
        if self.scale is not None:
            return data.astype(self.dtype) * self.dtype.type(self.scale)
        return data.astype(self.dtype) if data.dtype != self.dtype else data


def _compressed(array: Any, dtype: str) -> tuple[Any, float | None]:
    xp = backend.get_array_module(array)
    if array.size == 0:
        return array, None
    peak = float(xp.abs(array).max())
    if not numpy.isfinite(peak) or peak == 0.0:
        return array, None                           # nothing to scale by: keep as is
    if dtype == "float16":
        # Scaled so the largest element is 1: tiny activations (deep nets decay to 1e-15)
        # keep float16's relative precision instead of flushing to zero.
        return (array / array.dtype.type(peak)).astype(numpy.float16), peak
    scale = peak / 127.0
    return xp.rint(array / array.dtype.type(scale)).astype(numpy.int8), scale


# ----- policies outside checkpoints ----------------------------------------------------------
class _PlainPolicy:
    """Hooks applying a policy to what plain ops save (no recomputation possible here)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.decided: dict[int, tuple[weakref.ref, Decision]] = {}
        self.stored: dict[int, tuple[weakref.ref, Stored]] = {}

    def run_op(self, op: FunctionNode, inputs: Any, forward: Callable[[], Any]) -> Any:
        ys = forward()
        outs = ys if isinstance(ys, tuple) else (ys,)
        if not isinstance(op, Name):
            for j, y in enumerate(outs):
                if backend.is_array(y):
                    decision = decide(self.policy, OpOutput(op, j, y, None))
                    self.decided[id(y)] = (weakref.ref(y), decision)
        else:
            x = inputs[0].array
            entry = self.decided.get(id(x))
            if entry is not None and entry[0]() is x:
                producer = entry[1]
                named = decide(self.policy, OpOutput(op, 0, x, op.name))
                self.decided[id(x)] = (entry[0], named if named != RECOMPUTE else producer)
        return ys

    def pack(self, array: Any, op: FunctionNode) -> Any:
        entry = self.decided.get(id(array))
        if entry is None or entry[0]() is not array or entry[1].kind in ("RECOMPUTE", "SAVE"):
            return array
        stored = self.stored.get(id(array))
        if stored is None or stored[0]() is not array:   # one copy per array, however many ops save it
            stored = (entry[0], Stored(array, entry[1]))
            self.stored[id(array)] = stored
        return stored[1]

    @staticmethod
    def unpack(packed: Any) -> Any:
        return packed.get() if isinstance(packed, Stored) else packed


@contextlib.contextmanager
def saved_arrays(policy: Policy) -> Iterator[None]:
    """Apply ``policy`` to what ops save for backward inside the block, without checkpointing:
    OFFLOAD moves saved outputs to host memory and COMPRESS compresses them (SAVE and
    RECOMPUTE both keep them as they are: nothing can be recomputed outside a checkpoint).

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> x = ms.Variable(np.linspace(-1, 1, 8))
    >>> with saved_arrays(compress("int8")):
    ...     y = F.tanh(F.tanh(x)).sum()
    >>> y.backward()
    >>> bool(np.allclose(x.grad, ms.grad(F.tanh(F.tanh(x)).sum(), x)[0].array, atol=2e-2))
    True
    """
    check_policy(policy)
    plain = _PlainPolicy(policy)
    with hooks.saved_array_hooks(plain.pack, plain.unpack, plain.run_op):
        yield
