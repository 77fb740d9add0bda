"""Sliding windows over (N, C, H, W) arrays, shared by convolution and pooling.

Nothing is padded: for each kernel offset (ky, kx), :meth:`Window.offsets` gives the
output positions whose input pixel lies inside the image and the matching input slice, so
padding costs no copy.  Zero padding is what the parts not written keep (convolution,
average pooling); max pooling never reads padding at all.

>>> import numpy as np
>>> win = Window.make((2, 2), 1, 1)
>>> win.out_size(3, 3)
(4, 4)
>>> first = win.offsets(3, 3)[0]
>>> first.ky, first.kx, first.out, first.inp
(0, 0, (slice(1, 4, None), slice(1, 4, None)), (slice(0, 3, 1), slice(0, 3, 1)))
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple


def pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints as a pair, each at least ``minimum``.

    >>> pair(3, "stride", 1)
    (3, 3)
    """
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(isinstance(v, int) or hasattr(v, "__index__") for v in values):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    values = tuple(int(v) for v in values)
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return values  # type: ignore[return-value]


class Offset(NamedTuple):
    """One kernel offset: output positions ``out`` read input pixels ``inp`` (slice pairs)."""

    ky: int
    kx: int
    out: tuple[slice, slice]
    inp: tuple[slice, slice]


def _span(o0: int, o1: int, k: int, pad: int, stride: int, dilation: int,
          size: int) -> tuple[slice, slice] | None:
    """Output indices in [o0, o1) (relative to o0) whose input ``o*stride + k*dilation - pad``
    lies in [0, size), and those inputs; None if there are none."""
    shift = k * dilation - pad
    lo = max(o0, -(shift // stride))            # first o with o*stride + shift >= 0
    hi = min(o1, (size - 1 - shift) // stride + 1)  # one past the last o inside the image
    if hi <= lo:
        return None
    i0 = lo * stride + shift
    return slice(lo - o0, hi - o0), slice(i0, i0 + (hi - lo - 1) * stride + 1, stride)


class Window(NamedTuple):
    """Kernel size, stride, padding and dilation of a 2-D sliding window."""

    kh: int
    kw: int
    sy: int
    sx: int
    ph: int
    pw: int
    dy: int = 1
    dx: int = 1

    @classmethod
    def make(cls, ksize: Any, stride: Any, pad: Any, dilation: Any = 1) -> Window:
        """A window from ints or (vertical, horizontal) pairs.

        >>> Window.make(3, 2, (1, 0))
        Window(kh=3, kw=3, sy=2, sx=2, ph=1, pw=0, dy=1, dx=1)
        """
        (kh, kw), (sy, sx) = pair(ksize, "ksize", 1), pair(stride, "stride", 1)
        (ph, pw), (dy, dx) = pair(pad, "pad", 0), pair(dilation, "dilation", 1)
        return cls(kh, kw, sy, sx, ph, pw, dy, dx)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """Output height and width for an (h, w) input (no partial windows)."""
        oh = (h + 2 * self.ph - self.dy * (self.kh - 1) - 1) // self.sy + 1
        ow = (w + 2 * self.pw - self.dx * (self.kw - 1) - 1) // self.sx + 1
        return oh, ow

    def offsets(self, h: int, w: int, rows: tuple[int, int] | None = None) -> tuple[Offset, ...]:
        """The kernel offsets, in row-major order, that touch the (h, w) image from output
        rows ``rows`` = [r0, r1) (default: all); ``out`` slices count from r0.  Offsets
        whose every pixel is padding are left out."""
        return _offsets(self, h, w, rows if rows is not None else (0, self.out_size(h, w)[0]))


@functools.lru_cache(maxsize=256)
def _offsets(win: Window, h: int, w: int, rows: tuple[int, int]) -> tuple[Offset, ...]:
    """:meth:`Window.offsets`, computed once per shape (kernels ask for it per chunk)."""
    ow = win.out_size(h, w)[1]
    found = []
    for ky in range(win.kh):
        ys = _span(*rows, ky, win.ph, win.sy, win.dy, h)
        if ys is None:
            continue
        for kx in range(win.kw):
            xs = _span(0, ow, kx, win.pw, win.sx, win.dx, w)
            if xs is not None:
                found.append(Offset(ky, kx, (ys[0], xs[0]), (ys[1], xs[1])))
    return tuple(found)
