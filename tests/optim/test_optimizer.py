"""memsave/optim/optimizer.py: parameter handling, zero_grad, state dicts."""
import numpy as np
import pytest

import memsave as ms
from memsave import nn
from memsave.optim import SGD, Adam, AdamW


def _loss(model, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    t = rng.standard_normal((8, 2)).astype(np.float32)
    d = model(x) - t
    return (d * d).mean()


def _train(model, opt, seeds):
    for seed in seeds:
        opt.zero_grad()
        _loss(model, seed).backward()
        opt.step()


def test_params_without_grad_are_skipped():
    a, b = ms.Parameter(np.ones(2)), ms.Parameter(np.ones(2))
    opt = Adam([a, b], lr=0.1)
    a.grad = np.ones(2)
    opt.step()
    assert (b.array == 1).all() and opt.state[1] == {}
    assert (a.array < 1).all()


def test_parameter_list_handling():
    model = nn.Linear(3, 2)
    opt = SGD(model.parameters(), lr=0.1)           # a generator is fine
    assert opt.params == list(model.parameters())
    assert len(SGD([model.W, model.W], lr=0.1).params) == 1
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable"):
        SGD(model.W, lr=0.1)
    with pytest.raises(TypeError, match="Variables"):
        SGD([np.ones(2)], lr=0.1)


def test_zero_grad_and_hyperparameters_as_attributes():
    model = nn.Linear(3, 2)
    opt = SGD(model.parameters(), lr=0.1)
    _loss(model, 0).backward()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    p = ms.Parameter(np.zeros(1))
    opt = SGD([p], lr=0.1)
    p.grad = np.ones(1)
    opt.step()
    opt.lr = 1.0                                    # a schedule just sets the attribute
    opt.step()
    assert p.array[0] == pytest.approx(-1.1)
    assert repr(opt) == "SGD(1 parameters, lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0)"


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    lambda ps: Adam(ps, lr=0.01, weight_decay=1e-3),
    lambda ps: AdamW(ps, lr=0.01, betas=(0.8, 0.9)),
], ids=["sgd", "adam", "adamw"])
def test_state_dict_round_trip_continues_identically(make):
    ms.random.seed(0)
    model = nn.MLP([3, 4, 2])
    opt = make(model.parameters())
    _train(model, opt, [0, 1])
    model_state, opt_state = model.state_dict(), opt.state_dict()

    ms.random.seed(1)                               # different initial weights
    clone = nn.MLP([3, 4, 2])
    clone.load_state_dict(model_state)
    clone_opt = make(clone.parameters())
    clone_opt.lr = 123.0                            # restored by load_state_dict
    clone_opt.load_state_dict(opt_state)
    assert clone_opt.lr == opt.lr

    _train(model, opt, [2, 3])
    _train(clone, clone_opt, [2, 3])
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_state_dict_is_a_copy():
    p = ms.Parameter(np.ones(2))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(2)
    opt.step()
    state = opt.state_dict()
    assert state["type"] == "SGD" and state["hyperparameters"]["momentum"] == 0.9
    state["state"][0]["momentum_buffer"][...] = 100.0
    assert (opt.state[0]["momentum_buffer"] == 1.0).all()
    other = SGD([ms.Parameter(np.ones(2))], lr=0.5, momentum=0.9)
    other.load_state_dict(opt.state_dict())
    assert other.state[0]["momentum_buffer"] is not opt.state[0]["momentum_buffer"]


def test_load_state_dict_errors():
    p = ms.Parameter(np.ones(2))
    state = Adam([p]).state_dict()
    with pytest.raises(ValueError, match="for a Adam optimizer, not SGD"):
        SGD([p], lr=0.1).load_state_dict(state)
    with pytest.raises(ValueError, match="state for 1 parameters, this Adam has 2"):
        Adam([p, ms.Parameter(np.ones(1))]).load_state_dict(state)
    p.grad = np.ones(2)
    opt = Adam([p])
    opt.step()
    with pytest.raises(ValueError, match=r"shape \(2,\), the parameter has shape \(3,\)"):
        Adam([ms.Parameter(np.ones(3))]).load_state_dict(opt.state_dict())
