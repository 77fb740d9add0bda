"""memsave/nn/utils.py: clip_grad_norm_."""
import numpy as np
import pytest

import memsave as ms
from memsave import nn


def _params(grads):
    params = []
    for g in grads:
        p = ms.Parameter(np.zeros_like(g))
        if g is not None:
            p.grad = g.copy()
        params.append(p)
    return params


def test_total_norm_spans_all_gradients_and_clips_them_together():
    g1, g2 = np.array([3.0, 0.0]), np.array([[0.0, 4.0], [12.0, 0.0]])
    params = _params([g1, g2])
    total = nn.clip_grad_norm_(params, max_norm=2.6)
    assert isinstance(total, float) and total == pytest.approx(13.0)
    coef = 2.6 / (13.0 + 1e-6)
    np.testing.assert_allclose(params[0].grad, g1 * coef)
    np.testing.assert_allclose(params[1].grad, g2 * coef)
    new_norm = np.sqrt(sum((p.grad ** 2).sum() for p in params))
    assert new_norm == pytest.approx(2.6, rel=1e-6)


def test_small_gradients_are_left_alone():
    params = _params([np.array([0.3, 0.4])])
    assert nn.clip_grad_norm_(params, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(params[0].grad, [0.3, 0.4])


def test_parameters_without_gradients_are_skipped():
    p = ms.Parameter(np.ones(3))
    q = ms.Parameter(np.ones(2))
    q.grad = np.array([6.0, 8.0])
    assert nn.clip_grad_norm_(iter([p, q]), 5.0) == pytest.approx(10.0)
    assert p.grad is None
    assert nn.clip_grad_norm_([p], 1.0) == 0.0


def test_infinity_norm_and_single_parameter():
    p = ms.Parameter(np.zeros(3))
    p.grad = np.array([1.0, -4.0, 2.0])
    assert nn.clip_grad_norm_(p, 2.0, norm_type=float("inf")) == 4.0
    np.testing.assert_allclose(p.grad, np.array([1.0, -4.0, 2.0]) * 2 / (4 + 1e-6))


def test_clipping_a_model_after_backward_keeps_dtype_and_never_writes_shared_arrays():
    model = nn.Linear(3, 2)
    (model(np.full((4, 3), 10.0, dtype=np.float32)) ** 2).sum().backward()
    before = {n: p.grad for n, p in model.named_parameters()}
    snapshot = {n: g.copy() for n, g in before.items()}
    total = nn.clip_grad_norm_(model.parameters(), 1.0)
    expected = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in snapshot.values()))
    assert total == pytest.approx(expected, rel=1e-5)
    for name, p in model.named_parameters():
        assert p.grad.dtype == np.float32
        np.testing.assert_array_equal(before[name], snapshot[name])   # old arrays untouched
    assert np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum()
                       for p in model.parameters())) == pytest.approx(1.0, rel=1e-5)
