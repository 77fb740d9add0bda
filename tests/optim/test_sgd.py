"""memsave/optim/sgd.py: SGD vs. PyTorch's update rule written out in NumPy, over 3 steps."""
import numpy as np
import pytest

import memsave as ms
from memsave.optim import SGD

P0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.25]])
GRADS = [np.array([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]]),
         np.array([[-0.3, 0.1, 0.0], [0.2, -0.4, 0.9]]),
         np.array([[0.05, 0.05, -0.5], [-0.1, 0.3, 0.2]])]


def _run(**hyper):
    p = ms.Parameter(P0.copy())
    opt = SGD([p], **hyper)
    for g in GRADS:
        p.grad = g
        opt.step()
    return p.array


def _expected(lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    p, buf = P0.copy(), None
    for g in GRADS:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


@pytest.mark.parametrize("hyper", [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
], ids=["plain", "momentum", "nesterov", "weight_decay", "all"])
def test_three_steps_match_hand_computed(hyper):
    np.testing.assert_allclose(_run(**hyper), _expected(**hyper), rtol=1e-12)


def test_first_momentum_step_by_hand():
    p = ms.Parameter(np.array([1.0]))
    opt = SGD([p], lr=0.1, momentum=0.9)
    for expected in (0.9, 0.9 - 0.1 * 1.9, 0.9 - 0.19 - 0.1 * 2.71):
        p.grad = np.array([1.0])
        opt.step()
        assert p.array[0] == pytest.approx(expected)


def test_updates_in_place_keep_dtype_and_identity():
    p = ms.Parameter(np.ones(3, dtype=np.float32))
    array = p.array
    p.grad = np.full(3, 0.5, dtype=np.float32)
    SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1).step()
    assert p.array is array and p.dtype == np.float32
    np.testing.assert_allclose(p.array, 1 - 0.1 * (0.5 + 0.1), rtol=1e-6)


def test_invalid_hyperparameters():
    p = [ms.Parameter(np.ones(1))]
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        SGD(p, lr=-1.0)
