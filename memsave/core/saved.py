"""SavedArray: one array kept for backward, and the check that nobody wrote into it since.

NumPy arrays carry no version counter, so an array is *stamped* when it is kept: a
copy of 16 evenly spaced elements, the first and last included (all of a smaller array).  Reading it back
compares them, and an array written in place in between (``x.array[...] = 0``, an
optimizer step before backward) raises :class:`~memsave.errors.InPlaceError` naming
the op and the array, instead of giving a wrong gradient.  Writes that touch none of
the sampled elements go unseen; every whole-array update is caught.

>>> import numpy as np
>>> a = np.arange(4.0)
>>> kept = SavedArray(a)
>>> a[...] = 7
>>> kept.get("Tanh", "output", 0)
Traceback (most recent call last):
...
memsave.errors.InPlaceError: Tanh: output 0 (shape (4,), float64), saved for backward, ...
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy

from memsave import backend
from memsave.errors import InPlaceError

_SAMPLES = 16


@functools.lru_cache(maxsize=512)
def _sample_positions(size: int) -> numpy.ndarray:
    return numpy.unique(numpy.linspace(0, size - 1, min(size, _SAMPLES)).astype(numpy.intp))


@functools.lru_cache(maxsize=512)
def _sample_index(shape: tuple[int, ...]) -> tuple[numpy.ndarray, ...]:
    """The sample positions as an index into an array of ``shape`` (C order)."""
    return numpy.unravel_index(_sample_positions(math.prod(shape)), shape)


def stamp(array: Any) -> Any:
    """A few elements of ``array``, enough to notice a later in-place write (None if nothing to see).

    >>> stamp(numpy.zeros(3)) == stamp(numpy.zeros(3))
    True
    """
    if type(array) is numpy.ndarray:                     # the common case, kept short
        size = array.size
        if size <= _SAMPLES:
            return array.tobytes() if size else None
        flags = array.flags
        if flags.c_contiguous:                       # take() samples C order in place
            return array.take(_sample_positions(size)).tobytes()
        if flags.f_contiguous:                       # ravel(order="K") is a view: sample it
            return array.ravel(order="K").take(_sample_positions(size)).tobytes()
        return array[_sample_index(array.shape)].tobytes()   # a strided view: never copied whole
    if not backend.is_array(array) or array.size == 0:
        return None
    flat = array.reshape(-1) if array.flags.c_contiguous else array.ravel(order="K")
    return backend.to_cpu(flat[_sample_positions(array.size)]).tobytes()


class SavedArray:
    """An array kept for backward: the array itself (stamped), or a saved-array hook's packed form.

    >>> SavedArray(numpy.ones(2)).get("Exp", "input", 0)
    array([1., 1.])
    """

    __slots__ = ("packed", "unpack", "stamp")

    def __init__(self, packed: Any, unpack: Any = None) -> None:
        self.packed = packed
        self.unpack = unpack
        self.stamp = stamp(packed) if unpack is None else None

    def get(self, owner: Any, role: str, index: int | None = None) -> Any:
        """The array.  If it was modified in place, the error names it as ``role`` (and
        ``index``) of ``owner``: a name, or an op or checkpoint with a ``label``.  Both are
        formatted only then, so reading stays cheap."""
        if self.unpack is not None:
            return self.unpack(self.packed)
        if self.stamp is not None and stamp(self.packed) != self.stamp:
            name = owner if isinstance(owner, str) else owner.label
            check_unmodified(self.packed, self.stamp, name,
                             role if index is None else f"{role} {index}")
        return self.packed


def check_unmodified(array: Any, expected: Any, owner: str, role: str) -> None:
    """Raise InPlaceError if ``array`` no longer matches the stamp taken when it was kept.

    >>> a = numpy.zeros(2); check_unmodified(a, stamp(a), "Mul", "input 0")
    """
    if expected is not None and stamp(array) != expected:
        # a reshaped view also names the array it was taken from (the one you hold)
        base_shape = getattr(getattr(array, "base", None), "shape", array.shape)
        view = f", a view of an array of shape {tuple(base_shape)}" \
            if base_shape != array.shape else ""
        raise InPlaceError(
            f"{owner}: {role} (shape {tuple(array.shape)}, {array.dtype}{view}), saved for backward, "
            "was modified in place after the forward pass; its gradient would be computed "
            "from the new values. Do not write into an array (`x.array[...] = ...`, "
            "an optimizer step) between forward and backward; write into a copy instead.")
