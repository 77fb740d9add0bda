"""memsave/optim/adam.py: Adam and AdamW vs. PyTorch's update rules in NumPy, over 3 steps."""
import math

import numpy as np
import pytest

import memsave as ms
from memsave.optim import Adam, AdamW

P0 = np.array([0.5, -1.0, 2.0, 0.0])
GRADS = [np.array([0.1, -0.2, 0.3, 1e-3]),
         np.array([-0.3, 0.1, 0.0, 2.0]),
         np.array([0.05, 0.05, -0.5, -1.0])]


def _run(cls, **hyper):
    p = ms.Parameter(P0.copy())
    opt = cls([p], **hyper)
    for g in GRADS:
        p.grad = g
        opt.step()
    return p.array


def _expected(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    b1, b2 = betas
    p, m, v = P0.copy(), np.zeros_like(P0), np.zeros_like(P0)
    for t, g in enumerate(GRADS, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("hyper", [
    dict(),
    dict(lr=0.1, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
], ids=["defaults", "custom", "l2"])
def test_adam_three_steps_match_hand_computed(hyper):
    np.testing.assert_allclose(_run(Adam, **hyper), _expected(**hyper), rtol=1e-10)


@pytest.mark.parametrize("hyper", [dict(), dict(lr=0.1, weight_decay=0.5, betas=(0.5, 0.9))],
                         ids=["defaults", "custom"])
def test_adamw_three_steps_match_hand_computed(hyper):
    expected = _expected(**{"weight_decay": 1e-2, **hyper}, decoupled=True)
    np.testing.assert_allclose(_run(AdamW, **hyper), expected, rtol=1e-10)


def test_adamw_defaults_and_differs_from_adam_l2():
    p = [ms.Parameter(np.ones(1))]
    assert AdamW(p).weight_decay == 1e-2 and Adam(p).weight_decay == 0.0
    assert not np.allclose(_run(AdamW, lr=0.1, weight_decay=0.5),
                           _run(Adam, lr=0.1, weight_decay=0.5))


def test_first_step_moves_each_element_by_lr():
    p = ms.Parameter(np.array([1.0, 1.0], dtype=np.float32))
    p.grad = np.array([1000.0, -0.001], dtype=np.float32)
    Adam([p], lr=0.1).step()
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.array, [0.9, 1.1], rtol=1e-5)


def test_state_per_parameter():
    a, b = ms.Parameter(np.ones(2)), ms.Parameter(np.ones(3))
    opt = Adam([a, b], lr=0.1)
    a.grad = np.ones(2)
    opt.step()
    opt.step()
    b.grad = np.ones(3)
    opt.step()
    assert opt.state[0]["step"] == 3 and opt.state[1]["step"] == 1
    assert opt.state[1]["exp_avg"].shape == (3,)
    assert b.array[0] == pytest.approx(1 - 0.1)       # its own first step
    assert math.isfinite(a.array[0])


def test_invalid_hyperparameters():
    p = [ms.Parameter(np.ones(1))]
    with pytest.raises(ValueError, match="betas"):
        Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="eps"):
        AdamW(p, eps=-1.0)
