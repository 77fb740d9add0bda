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

from memsave import _callsite, backend
from memsave.core import hooks

MiB = 1 << 20


@dataclass
class Measurement:
    """Bytes above the level at entry: ``peak`` so far and ``current``.  Read inside the
    ``with`` block they are live readings; after it, the block's final figures.

    >>> with measure() as m:
    ...     keep = bytearray(1 << 16)
    ...     inside = m.current
    >>> inside >= 1 << 16 and m.peak >= inside
    True
    """

    _final_peak: int = 0
    _final_current: int = 0
    _base: int = field(default=0, repr=False)
    _peak_abs: int = field(default=0, repr=False)
    _live: bool = field(default=False, repr=False)
    _tracker: Any = field(default=None, repr=False)     # the GPU pool tracker while live

    @property
    def peak(self) -> int:
        if self._tracker is not None:
            return int(self._tracker.peak)
        if self._live:
            return max(self._peak_abs, tracemalloc.get_traced_memory()[1]) - self._base
        return self._final_peak

    @property
    def current(self) -> int:
        if self._tracker is not None:
            return int(self._tracker.current)
        if self._live:
            return tracemalloc.get_traced_memory()[0] - self._base
        return self._final_current

    @property
    def peak_mib(self) -> float:
        return self.peak / MiB

    def __repr__(self) -> str:
        return f"Measurement(peak={self.peak}, current={self.current})"


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
    m._live = True
    _active.append(m)
    try:
        yield m
    finally:
        current, peak = tracemalloc.get_traced_memory()
        _active.remove(m)
        m._live = False
        m._peak_abs = max(m._peak_abs, peak)
        _raise_outer_peaks(m._peak_abs)
        m._final_peak, m._final_current = m._peak_abs - m._base, current - m._base
        if started:
            tracemalloc.stop()


@contextlib.contextmanager
def _measure_gpu() -> Iterator[Measurement]:
    m = Measurement()
    with backend.GpuMemoryTracker() as tracker:
        m._tracker = tracker
        try:
            yield m
        finally:
            m._tracker = None
    m._final_peak, m._final_current = tracker.peak, tracker.current


def measure(device: str = "cpu") -> contextlib.AbstractContextManager[Measurement]:
    """Peak and final live bytes of a block, relative to its start (``device``: cpu or gpu).

    Blocks nest: an outer measure still sees the peaks reached inside an inner one.
    On the CPU, tracemalloc only sees arrays allocated while it traces: an array created
    before the outermost ``measure`` started and freed inside it does not lower the
    figures.  To measure a backward pass alone, open an outer ``measure`` before the
    forward and an inner one around ``backward()``.

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
    """One array kept for backward: the op that saved it, its shape, dtype and bytes (``nbytes``
    is the array's own size, ``shape`` x itemsize, also for a view), what is done with it
    (``decision``: SAVE, RECOMPUTE, OFFLOAD or COMPRESS), the bytes that stay in memory for it
    (``kept``) and the user-code line whose op saved it (``site``)."""

    op: str
    shape: tuple[int, ...]
    dtype: Any
    nbytes: int
    decision: str = "SAVE"
    kept: int = 0
    site: str = ""

    def __str__(self) -> str:
        return (f"{self.op:<24} {str(self.shape):<18} {str(self.dtype):<8} {self.decision:<18} "
                f"{self.kept / MiB:9.3f} MiB  {self.site}")


def saved_residuals(fn: Callable[..., Any], *args: Any, policy: Any = None,
                    **kwargs: Any) -> list[Residual]:
    """What ``fn(*args, **kwargs)`` keeps for backward, array by array, from one forward pass.

    Without ``policy``: a plain call, where everything saved is kept.  With ``policy``: the
    call checkpointed under that policy, each array marked with its decision.  Leaves
    (inputs passed in as Variables, parameters) are alive anyway and are not listed; an array
    saved by several ops is listed once.  A checkpoint inside ``fn`` shows up as the inputs
    it keeps for recomputation.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> [r.op for r in saved_residuals(lambda x: F.tanh(F.tanh(x)), ms.Variable(np.ones(3)))]
    ['Tanh', 'Tanh']
    """
    if policy is not None:
        return _checkpoint_residuals(fn, args, kwargs, policy)
    found: dict[int, Residual] = {}

    def record(array: Any, op: Any) -> Any:
        owner = backend.memory_owner(array)
        if id(owner) not in found:
            found[id(owner)] = Residual(op.label, tuple(array.shape), array.dtype, int(array.nbytes),
                                        "SAVE", int(owner.nbytes), _callsite.user_site())
        return array

    with hooks.saved_array_hooks(record, lambda a: a):
        fn(*args, **kwargs)
    return list(found.values())


def _checkpoint_residuals(fn: Callable, args: tuple, kwargs: dict, policy: Any) -> list[Residual]:
    from memsave.remat import policies
    from memsave.remat.recompute import RecomputeNode, wrap_arguments

    policies.check_policy(policy)
    node = RecomputeNode(fn, *wrap_arguments(args, kwargs),
                         policy, True, "none", True, report=True)
    node.run_forward()
    rows: dict[int, Residual] = {}
    for label, site, array, stored in node.residuals:
        owner = backend.memory_owner(array)
        if id(owner) in rows:
            continue
        if stored is None:
            decision, kept = "RECOMPUTE", 0
        elif isinstance(stored, policies.Stored):
            decision, kept = repr(stored.decision), stored.nbytes
        else:                                    # kept through an enclosing checkpoint's hooks
            decision, kept = "SAVE", int(owner.nbytes)
        rows[id(owner)] = Residual(label, tuple(array.shape), array.dtype, int(array.nbytes),
                                   decision, kept, site or "")
    return list(rows.values())


def saved_bytes(fn: Callable[..., Any], *args: Any, policy: Any = None, **kwargs: Any) -> int:
    """Total bytes :func:`saved_residuals` reports as kept.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> saved_bytes(lambda x: F.tanh(x) * 2.0, ms.Variable(np.ones(4)))
    32
    """
    return sum(r.kept for r in saved_residuals(fn, *args, policy=policy, **kwargs))


def print_saved_residuals(fn: Callable[..., Any], *args: Any, policy: Any = None,
                          **kwargs: Any) -> None:
    """Print :func:`saved_residuals` as a table, with the total bytes kept.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> print_saved_residuals(lambda x: F.tanh(x), ms.Variable(np.ones(4)))  # doctest: +ELLIPSIS
    op                       shape              dtype    decision                    kept  created at
    Tanh                     (4,)               float64  SAVE                   0.000 MiB  <doctest ...>:1
    total kept: 32 bytes (0.000 MiB)
    """
    rows = saved_residuals(fn, *args, policy=policy, **kwargs)
    print(f"{'op':<24} {'shape':<18} {'dtype':<8} {'decision':<18} {'kept':>13}  created at")
    for row in rows:
        print(row)
    total = sum(r.kept for r in rows)
    print(f"total kept: {total} bytes ({total / MiB:.3f} MiB)")
