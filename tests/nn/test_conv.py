"""memsave/nn/conv.py: Conv2d."""
import math

import numpy as np
import pytest

import memsave as ms
from memsave import nn


@pytest.mark.parametrize("kwargs,in_hw,out_shape", [
    (dict(ksize=3), (8, 8), (2, 6, 6, 6)),
    (dict(ksize=3, pad=1), (8, 8), (2, 6, 8, 8)),
    (dict(ksize=3, stride=2, pad=1), (8, 8), (2, 6, 4, 4)),
    (dict(ksize=3, dilation=2), (8, 8), (2, 6, 4, 4)),
    (dict(ksize=(3, 1), stride=(1, 2)), (8, 8), (2, 6, 6, 4)),
    (dict(ksize=1, groups=2), (5, 7), (2, 6, 5, 7)),
])
def test_output_shapes(kwargs, in_hw, out_shape):
    conv = nn.Conv2d(4, 6, **kwargs)
    y = conv(np.ones((2, 4) + in_hw, dtype=np.float32))
    assert y.shape == out_shape and y.dtype == np.float32


def test_weight_shape_init_and_repr():
    conv = nn.Conv2d(8, 16, 3, groups=2)
    assert conv.W.shape == (16, 4, 3, 3) and conv.b.shape == (16,)
    fan_in = 4 * 3 * 3
    assert conv.W.array.std() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.2)
    assert (conv.b.array == 0).all()
    assert repr(conv) == "Conv2d(8, 16, ksize=(3, 3), stride=(1, 1), groups=2, bias=True)"
    assert nn.Conv2d(1, 1, 1, bias=False).b is None


def test_groups_must_divide_channels():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 6, 3, groups=2)


def test_matches_direct_sum():
    conv = nn.Conv2d(2, 3, 2, dtype=np.float64)
    conv.b.array[...] = [1.0, 2.0, 3.0]
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3))
    y = conv(x).array
    W = conv.W.array
    for o in range(3):
        for i in range(2):
            for j in range(2):
                expected = (x[0, :, i:i + 2, j:j + 2] * W[o]).sum() + conv.b.array[o]
                assert y[0, o, i, j] == pytest.approx(expected)


def test_gradcheck(module_gradcheck):
    conv = nn.Conv2d(2, 2, 3, stride=2, pad=1, dtype=np.float64)
    conv.b.array[...] = [0.3, -0.1]
    x = np.random.default_rng(2).standard_normal((1, 2, 4, 4))
    assert module_gradcheck(conv, x)


def test_input_dtype_must_match_the_layer():
    conv = nn.Conv2d(2, 3, 3)
    with pytest.raises(ms.DTypeError, match=r"x is float64 but W is float32; .*x\.astype"):
        conv(np.ones((1, 2, 5, 5)))
    assert conv(np.ones((1, 2, 5, 5), dtype=np.float32)).dtype == np.float32
