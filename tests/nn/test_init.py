"""memsave/nn/init.py: reproducibility, statistics, fans and gains."""
import math

import numpy as np
import pytest

import memsave as ms
from memsave.nn import init


def test_seed_makes_draws_reproducible_and_seeds_differ():
    ms.random.seed(1)
    a = init.kaiming_uniform((8, 8))
    ms.random.seed(1)
    b = init.kaiming_uniform((8, 8))
    ms.random.seed(2)
    c = init.kaiming_uniform((8, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dtype_changes_precision_not_values():
    ms.random.seed(3)
    a = init.normal((5, 5), dtype=np.float32)
    ms.random.seed(3)
    b = init.normal((5, 5), dtype=np.float64)
    assert a.dtype == np.float32 and b.dtype == np.float64
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("shape,expected", [
    ((16, 3), (3, 16)), ((16, 3, 3, 3), (27, 144)), ((8, 2, 5, 1), (10, 40))])
def test_fans(shape, expected):
    assert init.fan_in_and_fan_out(shape) == expected


def test_fan_of_a_vector_is_an_error():
    with pytest.raises(ValueError, match="rank >= 2"):
        init.fan_in_and_fan_out((5,))
    with pytest.raises(ValueError, match="fan_in"):
        init.kaiming_uniform((3, 3), mode="fan")


def test_gains_match_pytorch():
    assert init.calculate_gain("linear") == 1.0
    assert init.calculate_gain("relu") == math.sqrt(2)
    assert init.calculate_gain("tanh") == 5 / 3
    assert init.calculate_gain("leaky_relu") == math.sqrt(2 / (1 + 0.01 ** 2))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    with pytest.raises(ValueError, match="unknown nonlinearity 'swish'"):
        init.calculate_gain("swish")


SHAPE = (200, 300)   # fan_in 300, fan_out 200
FAN_IN, FAN_OUT = 300, 200


@pytest.mark.parametrize("draw,std,bound", [
    (lambda: init.kaiming_uniform(SHAPE, a=math.sqrt(5)), 1 / math.sqrt(3 * FAN_IN),
     1 / math.sqrt(FAN_IN)),
    (lambda: init.kaiming_uniform(SHAPE, nonlinearity="relu"), math.sqrt(2 / FAN_IN),
     math.sqrt(6 / FAN_IN)),
    (lambda: init.kaiming_normal(SHAPE, nonlinearity="relu", mode="fan_out"),
     math.sqrt(2 / FAN_OUT), None),
    (lambda: init.xavier_uniform(SHAPE), math.sqrt(2 / (FAN_IN + FAN_OUT)),
     math.sqrt(6 / (FAN_IN + FAN_OUT))),
    (lambda: init.xavier_normal(SHAPE, gain=2.0), 2 * math.sqrt(2 / (FAN_IN + FAN_OUT)), None),
    (lambda: init.normal(SHAPE, std=0.02), 0.02, None),
])
def test_statistics(draw, std, bound):
    w = draw()
    assert w.shape == SHAPE and w.dtype == np.float32
    assert abs(w.mean()) < 0.1 * std
    assert w.std() == pytest.approx(std, rel=0.05)
    if bound is not None:
        assert np.abs(w).max() <= bound


def test_constants():
    assert init.zeros((2, 3)).sum() == 0 and init.zeros((2,)).dtype == np.float32
    assert init.ones((4,), dtype=np.float64).tolist() == [1.0] * 4
    u = init.uniform((1000,), 2.0, 3.0)
    assert u.min() >= 2.0 and u.max() < 3.0
