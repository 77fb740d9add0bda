"""Keeping freed memory in the process, so that large NumPy arrays stop costing page faults.

glibc's malloc gives each large array (from 128 KiB, rising to the largest freed so far)
pages of its own from the kernel and hands them back when the array is freed, and shrinks
the heap when its top is free.  A training step allocates and frees the same large arrays
every time, so every step faults all of them in again: about 13,000 minor faults and a
quarter of the time of ``memsave bench cnn``'s step on a 2-core machine.  PyTorch's CPU
step barely pays this; memsave, built on NumPy, does.

:func:`keep_freed_memory` asks malloc to serve arrays up to 32 MiB from its heap and to
keep freed memory there for reuse, as PyTorch's caching allocator does on the GPU.  The
cost: the process keeps the memory of its peak (its RSS does not shrink after it); live
bytes, which :func:`memsave.memory.measure` reports, are unchanged.  It applies to the
whole process and cannot be undone; it is opt-in.  The same holds for a process started
with ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`` in its
environment, which works for any program.

>>> keep_freed_memory() in (True, False)
True
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["keep_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

MMAP_THRESHOLD = 32 << 20
"""Arrays up to this size come from malloc's heap (glibc's largest allowed value)."""
TRIM_THRESHOLD = 1 << 30
"""Free memory at the heap's top kept up to this size before it is returned."""

_M_TRIM_THRESHOLD = -1   # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (see the module's docstring).

    Returns True when it took effect, False where malloc is not glibc's (macOS, Windows,
    musl), where it does nothing.

    >>> import memsave
    >>> memsave.allocator.keep_freed_memory() in (True, False)
    True
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
