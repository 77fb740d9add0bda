"""Conv2d: 2-D convolution over (N, C, H, W) inputs.

>>> import numpy as np
>>> Conv2d(3, 8, 3, pad=1)(np.ones((2, 3, 5, 5), dtype=np.float32)).shape
(2, 8, 5, 5)
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

import memsave.functions as F
from memsave.core.variable import Parameter, Variable
from memsave.nn import init
from memsave.nn.module import Module

__all__ = ["Conv2d"]

IntPair = int | tuple[int, int]


def _pair(value: IntPair) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


class Conv2d(Module):
    """2-D convolution; ``W`` is (out_channels, in_channels // groups, kh, kw).

    ``W`` is Kaiming-uniform (PyTorch's default, bound 1/sqrt(fan_in)); ``b`` is zero.
    Inputs must have the layer's ``dtype`` (a float64 batch into a float32 layer raises
    DTypeError instead of silently computing in float64).

    >>> import numpy as np
    >>> conv = Conv2d(4, 6, (3, 1), stride=2, groups=2)
    >>> conv.W.shape, conv(np.ones((1, 4, 7, 7), dtype=np.float32)).shape
    ((6, 2, 3, 1), (1, 6, 3, 4))
    """

    def __init__(self, in_channels: int, out_channels: int, ksize: IntPair,
                 stride: IntPair = 1, pad: IntPair = 0, dilation: IntPair = 1, groups: int = 1,
                 bias: bool = True, dtype: Any = np.float32) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must both be divisible by groups ({groups})")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.ksize = _pair(ksize)
        self.stride = _pair(stride)
        self.pad = _pair(pad)
        self.dilation = _pair(dilation)
        self.groups = int(groups)
        shape = (self.out_channels, self.in_channels // self.groups) + self.ksize
        self.W = Parameter(init.kaiming_uniform(shape, a=math.sqrt(5), dtype=dtype))
        self.register_parameter(
            "b", Parameter(init.zeros((self.out_channels,), dtype)) if bias else None)

    def forward(self, x: Any) -> Variable:
        return F.conv2d(x, self.W, self.b, stride=self.stride, pad=self.pad,
                        dilation=self.dilation, groups=self.groups)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, ksize={self.ksize}, "
                f"stride={self.stride}")
        if self.pad != (0, 0):
            text += f", pad={self.pad}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + f", bias={self.b is not None}"
