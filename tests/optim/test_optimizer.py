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
    with pytest.raises(TypeError, match="parameter 0 is of type ndarray, not a Parameter"):
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


@pytest.mark.parametrize("make", [
    lambda ps: SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: Adam(ps, lr=0.01),
    lambda ps: AdamW(ps, lr=0.01, weight_decay=0.1),
])
@pytest.mark.parametrize("checkpointed", [False, True])
def test_step_in_backward_equals_the_usual_step(make, checkpointed):
    import memsave.functions as F

    def model(ps, x):
        h = x
        for W in ps:
            h = F.tanh(F.linear(h, W))
        return (h * h).sum()

    def forward(ps, x):
        if checkpointed:
            return ms.checkpoint_sequential([lambda h, W=W: F.tanh(F.linear(h, W)) for W in ps],
                                            x, segments=2).__pow__(2).sum()
        return model(ps, x)

    rng = np.random.default_rng(0)
    init = [rng.standard_normal((6, 6)) / 3 for _ in range(4)]
    xs = [ms.Variable(rng.standard_normal((5, 6))) for _ in range(3)]
    usual = [ms.Parameter(a.copy()) for a in init]
    fused = [ms.Parameter(a.copy()) for a in init]
    opt_usual, opt_fused = make(usual), make(fused)
    opt_fused.step_in_backward()
    peak_live = []
    fused[0].register_post_accumulate_grad_hook(
        lambda p: peak_live.append(sum(q.grad is not None for q in fused)))
    for x in xs:
        forward(usual, x).backward()
        opt_usual.step()
        opt_usual.zero_grad()
        forward(fused, x).backward()
    for a, b in zip(usual, fused):
        np.testing.assert_allclose(b.array, a.array, rtol=1e-12, atol=1e-14)
        assert b.grad is None
    # the first layer's gradient completes last: by then the others were applied and freed
    assert all(n <= 1 for n in peak_live)
    opt_fused.stop_step_in_backward()
    forward(fused, xs[0]).backward()
    assert all(p.grad is not None for p in fused)


def test_gradient_hooks_run_as_soon_as_each_gradient_is_complete():
    import memsave.functions as F

    events = []

    class Probe(ms.FunctionNode):
        def forward(self, x):
            return x

        def backward(self, indexes, gy):
            events.append("input reached")
            return gy

    rng = np.random.default_rng(1)
    Ws = [ms.Parameter(rng.standard_normal((4, 4))) for _ in range(3)]
    for k, W in enumerate(Ws):
        W.register_post_accumulate_grad_hook(lambda p, k=k: events.append(f"W{k} complete"))
    h, = Probe().apply(ms.Variable(rng.standard_normal((2, 4))))
    for W in Ws:
        h = F.tanh(F.linear(h, W))
    h.sum().backward()
    assert events == ["W2 complete", "W1 complete", "W0 complete", "input reached"]


# ----- every bad argument gets an error naming it --------------------------------------------
W = ms.Parameter(np.ones(2))
BAD_ARGUMENTS = [
    (lambda: SGD([W], lr="0.1"), TypeError, r"SGD: lr must be a real number, got '0\.1' \(str\)"),
    (lambda: SGD([W], lr=None), TypeError, "SGD: lr must be a real number, got None"),
    (lambda: SGD([W], lr=True), TypeError, "SGD: lr must be a real number, got True"),
    (lambda: SGD([W], lr=np.ones(1)), TypeError, r"SGD: lr must be a real number.*ndarray"),
    (lambda: SGD([W], lr=-0.1), ValueError, "SGD: lr must be a finite number >= 0, got -0.1"),
    (lambda: SGD([W], lr=float("nan")), ValueError, "SGD: lr must be a finite number >= 0, got nan"),
    (lambda: SGD([W], lr=0.1, momentum=-0.9), ValueError, "SGD: momentum must be"),
    (lambda: SGD([W], lr=0.1, weight_decay="1e-4"), TypeError, "SGD: weight_decay must be a real number"),
    (lambda: SGD([W], lr=0.1, momentum=0.9, nesterov="yes"), TypeError,
     "SGD: nesterov must be True or False"),
    (lambda: SGD([W], lr=0.1, nesterov=True), ValueError, "nesterov=True needs momentum > 0"),
    (lambda: Adam([W], lr="1e-3"), TypeError, "Adam: lr must be a real number, got '1e-3'"),
    (lambda: Adam([W], betas=(0.9, 1.0)), ValueError, r"Adam: betas\[1\] must be in \[0, 1\), got 1\.0"),
    (lambda: Adam([W], betas=(-0.1, 0.999)), ValueError, r"Adam: betas\[0\] must be in \[0, 1\)"),
    (lambda: Adam([W], betas=0.9), TypeError, r"Adam: betas must be a pair \(beta1, beta2\)"),
    (lambda: Adam([W], betas=(0.9, "0.999")), TypeError, r"Adam: betas\[1\] must be a real number"),
    (lambda: AdamW([W], eps=-1e-8), ValueError, "AdamW: eps must be a finite number >= 0"),
    (lambda: AdamW([W], weight_decay=-0.01), ValueError, "AdamW: weight_decay must be"),
    (lambda: SGD([], lr=0.1), ValueError, "SGD got an empty parameter list"),
    (lambda: SGD(3, lr=0.1), TypeError, "SGD: params must be an iterable of Parameters.*int"),
    (lambda: SGD([W, "w"], lr=0.1), TypeError, "SGD: parameter 1 is of type str, not a Parameter"),
    (lambda: Adam([W * 2.0]), ValueError, r"Adam: parameter 0 \(shape \(2,\)\) was computed by Mul"),
    (lambda: SGD([ms.Variable(np.arange(3), requires_grad=False)], lr=0.1), TypeError,
     "SGD: parameter 0 has dtype int64; only floating-point Parameters can be optimized"),
]


@pytest.mark.parametrize("make, error, message", BAD_ARGUMENTS)
def test_bad_arguments_raise_errors_naming_them(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_numpy_numbers_are_accepted_as_hyperparameters():
    opt = SGD([W], lr=np.float32(0.5), momentum=np.float64(0.9), weight_decay=np.int64(0))
    assert (opt.lr, opt.momentum, opt.weight_decay) == (0.5, 0.9, 0.0)
    assert type(opt.lr) is float
    adam = Adam([W], lr=np.float64(1e-3), betas=(np.float32(0.5), np.float64(0.9)))
    assert adam.betas == (0.5, 0.9)
