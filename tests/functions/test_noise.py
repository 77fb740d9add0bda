"""dropout: replayable masks, expectation, evaluation mode, derivatives, what it keeps."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F


def test_mask_replays_from_saved_rng_state():
    x = np.random.default_rng(0).standard_normal((4, 5))
    state = ms.random.get_state()
    y1 = F.dropout(ms.Variable(x), 0.4)
    other = F.dropout(ms.Variable(x), 0.4)  # the stream moved on: a different mask
    ms.random.set_state(state)
    y2 = F.dropout(ms.Variable(x), 0.4)
    np.testing.assert_array_equal(y1.array, y2.array)
    assert not np.array_equal(y1.array, other.array)


def test_draws_only_from_memsave_generator():
    x = np.ones(50)
    ms.random.get_generator(np)
    state = ms.random.get_state()
    np.random.seed(123)  # NumPy's global RNG does not matter
    y1 = F.dropout(x, 0.5)
    ms.random.set_state(state)
    np.random.seed(456)
    y2 = F.dropout(x, 0.5)
    np.testing.assert_array_equal(y1.array, y2.array)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.8])
def test_expectation_and_drop_rate(ratio):
    x = np.full(200_000, 3.0)
    y = F.dropout(ms.Variable(x), ratio).array
    assert abs((y == 0).mean() - ratio) < 0.01
    assert abs(y.mean() - 3.0) < 0.05
    np.testing.assert_allclose(y[y != 0], 3.0 / (1 - ratio))


def test_eval_mode_and_zero_ratio_return_x():
    x = ms.Variable(np.ones(3))
    assert F.dropout(x, 0.5, train=False) is x
    with ms.using_config("train", False):
        assert F.dropout(x, 0.9) is x
    assert F.dropout(x, 0.0) is x
    state = ms.random.get_state()
    F.dropout(x, 0.5, train=False)
    assert ms.random.get_state()["memsave"] == state["memsave"]  # nothing drawn
    assert F.dropout(np.ones(2), 0.5, train=False).requires_grad is False


@given(st.floats(0.0, 0.95), st.sampled_from([(3,), (2, 3), (2, 2, 2)]))
def test_gradients(ratio, shape):
    x = np.random.default_rng(1).standard_normal(shape)

    def f(x):
        ms.random.seed(7)  # the same mask on every call of the numerical check
        return F.dropout(x, ratio)

    assert ms.gradcheck(f, [x])
    assert ms.gradgradcheck(lambda x: f(x) ** 2, [x])


def test_gradient_is_scaled_mask():
    x = ms.Variable(np.random.default_rng(2).standard_normal(100) + 5.0)
    y = F.dropout(x, 0.25)
    y.backward(np.ones(100))
    np.testing.assert_allclose(x.grad, (y.array != 0) / 0.75)


def test_keeps_only_a_bool_mask():
    x0 = ms.Variable(np.ones((3, 4), dtype=np.float32))
    x = F.tanh(x0)
    saved = []
    with ms.saved_array_hooks(lambda a, fn: saved.append((type(fn).__name__, a.dtype)) or a,
                              lambda a: a):
        y = F.dropout(x, 0.5)
    assert saved == [("Dropout", np.dtype(bool))]
    assert y.dtype == np.float32
    y.sum().backward()
    assert x0.grad.dtype == np.float32


def test_errors():
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ratio"):
            F.dropout(np.ones(2), ratio)
    with pytest.raises(ms.DTypeError, match="int64"):
        F.dropout(np.ones(2, dtype=np.int64), 0.5)
