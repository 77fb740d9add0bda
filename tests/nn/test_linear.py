"""memsave/nn/linear.py: Linear."""
import math

import numpy as np
import pytest

import memsave as ms
from memsave import nn


def test_output_matches_affine_map():
    fc = nn.Linear(3, 4)
    fc.b.array[...] = np.arange(4)
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    y = fc(x)
    assert y.shape == (2, 5, 4) and y.dtype == np.float32
    np.testing.assert_allclose(y.array, x @ fc.W.array.T + fc.b.array, rtol=1e-5, atol=1e-6)


def test_shapes_defaults_and_no_bias():
    fc = nn.Linear(3, 4)
    assert fc.W.shape == (4, 3) and fc.b.shape == (4,)
    assert fc.W.dtype == np.float32 and (fc.b.array == 0).all()
    fc = nn.Linear(3, 4, bias=False, dtype=np.float64)
    assert fc.b is None and [n for n, _ in fc.named_parameters()] == ["W"]
    assert fc.W.dtype == np.float64
    assert repr(fc) == "Linear(in_features=3, out_features=4, bias=False)"


def test_weight_init_is_kaiming_uniform_like_pytorch():
    fc = nn.Linear(256, 128)
    expected = 1 / math.sqrt(3 * 256)          # U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert fc.W.array.std() == pytest.approx(expected, rel=0.2)
    assert np.abs(fc.W.array).max() <= 1 / math.sqrt(256)


def test_seed_makes_model_creation_reproducible():
    ms.random.seed(5)
    a = nn.MLP([4, 8, 3])
    ms.random.seed(5)
    b = nn.MLP([4, 8, 3])
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    ms.random.seed(6)
    assert not np.array_equal(nn.MLP([4, 8, 3])[0].W.array, a[0].W.array)


def test_gradcheck(module_gradcheck):
    fc = nn.Linear(3, 2, dtype=np.float64)
    fc.b.array[...] = [0.1, -0.2]
    x = np.random.default_rng(1).standard_normal((4, 3))
    assert module_gradcheck(fc, x)
