"""Measuring memory: peak live bytes of a block, and what a call keeps for backward.

On the CPU, tracemalloc sees every NumPy buffer, so figures are exact and do not
depend on the allocator (process RSS does, and is noisy).  On the GPU, a CuPy
memory hook counts live pool allocations.

>>> import numpy as np
>>> with measure() as m:
...     a = np.ones(1_000_000)
...     del a
>>> m.peak >= 8_000_000, m.current < 100_000
(True, True)
"""
from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from memsave import backend
from memsave.core import hooks

MiB = 1 << 20


@dataclass
class Measurement:
    """Bytes above the level at entry: ``peak`` during the block, ``current`` at its end."""

    peak: int = 0
    current: int = 0
    _base: int = field(default=0, repr=False)
    _peak_abs: int = field(default=0, repr=False)

    @property
    def peak_mib(self) -> float:
        return self.peak / MiB


_active: list[Measurement] = []


def _raise_outer_peaks(peak_abs: int) -> None:
    for outer in _active:
        outer._peak_abs = max(outer._peak_abs, peak_abs)


@contextlib.contextmanager
def _measure_cpu() -> Iterator[Measurement]:
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    else:  # an enclosing measure(): hand it the peak so far before resetting
        _raise_outer_peaks(tracemalloc.get_traced_memory()[1])
    tracemalloc.reset_peak()
    m = Measurement()
    m._base = m._peak_abs = tracemalloc.get_traced_memory()[0]
    _active.append(m)
    try:
        yield m
    finally:
        current, peak = tracemalloc.get_traced_memory()
        _active.remove(m)
        m._peak_abs = max(m._peak_abs, peak)
        _raise_outer_peaks(m._peak_abs)
        m.peak, m.current = m._peak_abs - m._base, current - m._base
        if started:
            tracemalloc.stop()


@contextlib.contextmanager
def _measure_gpu() -> Iterator[Measurement]:
    m = Measurement()
    with backend.GpuMemoryTracker() as tracker:
        yield m
    m.peak, m.current = tracker.peak, tracker.current


def measure(device: str = "cpu") -> contextlib.AbstractContextManager[Measurement]:
    """Peak and final live bytes of a block, relative to its start (``device``: cpu or gpu).

    Blocks nest: an outer measure still sees the peaks reached inside an inner one.

    >>> with measure() as m:
    ...     keep = bytearray(4096)
    >>> m.current >= 4096
    True
    """
    if device == "cpu":
        return _measure_cpu()
    if device == "gpu":
        return _measure_gpu()
    raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


@dataclass(frozen=True)
class Residual:
    """One array kept for backward: the op that saved it, its shape, dtype and size."""

    op: str
    shape: tuple[int, ...]
    dtype: Any
    nbytes: int

    def __str__(self) -> str:
        return f"{self.op:<28} {str(self.shape):<20} {str(self.dtype):<8} {self.nbytes / MiB:9.3f} MiB"


def saved_residuals(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Residual]:
    """What ``fn(*args, **kwargs)`` keeps for backward, array by array, without running backward.

    Leaves (inputs passed in as Variables, parameters) are alive anyway and are not
    listed; an array saved by several ops is listed once.  A checkpointed call shows
    up as the inputs it keeps for recomputation.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> [r.op for r in saved_residuals(lambda x: F.tanh(F.tanh(x)), ms.Variable(np.ones(3)))]
    ['Tanh', 'Tanh']
    """
    found: dict[int, tuple[Any, Residual]] = {}

    def record(array: Any, op: Any) -> Any:
        owner = backend.memory_owner(array)
        if id(owner) not in found:
            found[id(owner)] = (owner, Residual(op.label, tuple(array.shape), array.dtype, owner.nbytes))
        return array

    with hooks.saved_array_hooks(record, lambda a: a):
        fn(*args, **kwargs)
    return [residual for _, residual in found.values()]


def saved_bytes(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Total bytes :func:`saved_residuals` reports.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> saved_bytes(lambda x: F.tanh(x) * 2.0, ms.Variable(np.ones(4)))
    32
    """
    return sum(r.nbytes for r in saved_residuals(fn, *args, **kwargs))
