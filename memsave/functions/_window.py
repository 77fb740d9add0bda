"""Sliding windows over (N, C, H, W) arrays, shared by convolution and pooling.

``im2col`` is a strided *view* (no copy until someone reshapes it); ``col2im``
scatters window pieces back with one slice-add per kernel offset.

>>> import numpy as np
>>> win = Window.make((2, 2), 1, 0)
>>> win.im2col(np.arange(9.0).reshape(1, 1, 3, 3)).shape
(1, 1, 2, 2, 2, 2)
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from memsave.backend import get_array_module


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
        (kh, kw), (sy, sx) = pair(ksize, "ksize", 1), pair(stride, "stride", 1)
        (ph, pw), (dy, dx) = pair(pad, "pad", 0), pair(dilation, "dilation", 1)
        return cls(kh, kw, sy, sx, ph, pw, dy, dx)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """Output height and width for an (h, w) input (no partial windows)."""
        oh = (h + 2 * self.ph - self.dy * (self.kh - 1) - 1) // self.sy + 1
        ow = (w + 2 * self.pw - self.dx * (self.kw - 1) - 1) // self.sx + 1
        return oh, ow

    def im2col(self, x: Any, pad_value: float = 0) -> Any:
        """A (N, C, kh, kw, oh, ow) view of the padded ``x``: ``col[..., ky, kx, i, j]`` is the
        pixel under kernel offset (ky, kx) of the window at output position (i, j)."""
        xp = get_array_module(x)
        if self.ph or self.pw:
            x = xp.pad(x, ((0, 0), (0, 0), (self.ph, self.ph), (self.pw, self.pw)),
                       mode="constant", constant_values=pad_value)
        n, c, h, w = x.shape
        oh, ow = self.out_size(h - 2 * self.ph, w - 2 * self.pw)
        s0, s1, s2, s3 = x.strides
        return xp.lib.stride_tricks.as_strided(
            x, (n, c, self.kh, self.kw, oh, ow),
            (s0, s1, s2 * self.dy, s3 * self.dx, s2 * self.sy, s3 * self.sx))

    def col2im(self, piece: Callable[[int, int], Any], shape: tuple[int, ...], dtype: Any,
               xp: Any) -> Any:
        """Sum ``piece(ky, kx)`` (an (N, C, oh, ow) array) back into an image of ``shape``."""
        n, c, h, w = shape
        oh, ow = self.out_size(h, w)
        img = xp.zeros((n, c, h + 2 * self.ph, w + 2 * self.pw), dtype=dtype)
        for ky in range(self.kh):
            i0 = ky * self.dy
            for kx in range(self.kw):
                j0 = kx * self.dx
                img[:, :, i0:i0 + self.sy * (oh - 1) + 1:self.sy,
                    j0:j0 + self.sx * (ow - 1) + 1:self.sx] += piece(ky, kx)
        if self.ph or self.pw:
            img = xp.ascontiguousarray(img[:, :, self.ph:self.ph + h, self.pw:self.pw + w])
        return img
