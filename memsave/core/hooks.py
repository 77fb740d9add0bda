"""Saved-array hooks: the one mechanism behind checkpointing, policies, offload and compression.

Every array an op keeps for its backward pass goes through ``pack`` when it is
saved and through ``unpack`` when backward reads it.  Hooks stack; the innermost
one applies.  ``pack(array, function)`` receives the array and the FunctionNode
saving it and returns anything; ``unpack(packed)`` must return an array equal to
the one packed.  An optional ``run_op(function, inputs, forward)`` sees each op
run inside the block: it gets the FunctionNode, its input Variables and a
callable computing its output arrays, and returns those arrays (a checkpoint
uses it to see what an op reads and produces, and to skip an op whose outputs
it kept).

>>> import numpy as np, memsave as ms
>>> seen = []
>>> def pack(a, fn):
...     seen.append(type(fn).__name__)
...     return a
>>> with saved_array_hooks(pack, lambda a: a):
...     y = ms.functions.tanh(ms.Variable(np.ones(2)))
>>> seen
['Tanh']
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, NamedTuple

Pack = Callable[[Any, Any], Any]
Unpack = Callable[[Any], Any]
RunOp = Callable[[Any, Any, Callable[[], Any]], Any]


class Hooks(NamedTuple):
    """One level of the hook stack."""

    pack: Pack
    unpack: Unpack
    run_op: RunOp | None = None


_stack: ContextVar[tuple[Hooks, ...]] = ContextVar("memsave.saved_array_hooks", default=())


@contextlib.contextmanager
def saved_array_hooks(pack: Pack, unpack: Unpack, run_op: RunOp | None = None) -> Iterator[None]:
    """Route every array saved for backward inside the block through ``pack``/``unpack``.

    >>> with saved_array_hooks(lambda a, fn: a, lambda a: a):
    ...     current_hooks() is not None
    True
    """
    token = _stack.set(_stack.get() + (Hooks(pack, unpack, run_op),))
    try:
        yield
    finally:
        _stack.reset(token)


@contextlib.contextmanager
def disable_saved_array_hooks() -> Iterator[None]:
    """Save arrays as they are inside the block, whatever hooks are active outside.

    >>> with saved_array_hooks(lambda a, fn: a, lambda a: a), disable_saved_array_hooks():
    ...     current_hooks() is None
    True
    """
    token = _stack.set(())
    try:
        yield
    finally:
        _stack.reset(token)


def stack() -> tuple[Hooks, ...]:
    """The active hooks, innermost last (read once per op by ``FunctionNode.apply``).

    >>> stack()
    ()
    """
    return _stack.get()


def current_hooks() -> Hooks | None:
    """The innermost active hooks, or None.

    >>> current_hooks() is None
    True
    """
    stack = _stack.get()
    return stack[-1] if stack else None
