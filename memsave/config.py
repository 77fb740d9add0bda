"""Run-time configuration held in context variables (thread- and asyncio-safe).

Each thread and each asyncio task sees its own values; a new thread starts from
the defaults.

>>> from memsave.config import config, no_grad
>>> with no_grad():
...     config.enable_backprop
False
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

_DEFAULTS = {
    "enable_backprop": True,       # build the graph and keep what backward needs
    "train": True,                 # training-mode behaviour (dropout, batch norm statistics)
    "checkpointing_enabled": True, # False turns every checkpoint into a plain call
    "in_recompute": False,         # True while a checkpoint re-runs its function
    "conv_chunk_bytes": None,      # a convolution's column-chunk cap; None: its output's size
}

_VARS = {name: ContextVar(f"memsave.{name}", default=value) for name, value in _DEFAULTS.items()}
ENABLE_BACKPROP = _VARS["enable_backprop"]
"""The context variable behind ``config.enable_backprop``, read directly by the engine's hot
path (``FunctionNode.apply``)."""


class _Config:
    """Attribute view of the context variables: ``config.train = False``."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return _var(name).get()

    def __setattr__(self, name: str, value: Any) -> None:
        _var(name).set(value)

    def __repr__(self) -> str:
        return "config(" + ", ".join(f"{n}={v.get()!r}" for n, v in _VARS.items()) + ")"


config = _Config()


def _var(name: str) -> ContextVar:
    try:
        return _VARS[name]
    except KeyError:
        raise AttributeError(f"memsave.config has no field {name!r}; fields: {list(_VARS)}") from None


@contextlib.contextmanager
def using_config(name: str, value: Any) -> Iterator[None]:
    """Set one config field inside a ``with`` block.

    >>> with using_config("train", False):
    ...     config.train
    False
    """
    var = _var(name)
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


def no_grad() -> contextlib.AbstractContextManager:
    """Build no graph and save nothing for backward.

    >>> with no_grad():
    ...     is_grad_enabled()
    False
    """
    return using_config("enable_backprop", False)


def enable_grad() -> contextlib.AbstractContextManager:
    """Re-enable graph building inside a :func:`no_grad` block.

    >>> with no_grad(), enable_grad():
    ...     is_grad_enabled()
    True
    """
    return using_config("enable_backprop", True)


def is_grad_enabled() -> bool:
    """Whether operations currently build a graph.

    >>> is_grad_enabled()
    True
    """
    return bool(_VARS["enable_backprop"].get())
