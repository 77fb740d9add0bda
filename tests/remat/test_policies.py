"""Policies (memsave/remat/policies.py): decisions per op output, kept ops not re-run,
compression bounds, saved_arrays, residual reports."""
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F
from memsave import policies as P
from memsave.functions import connection
from memsave.memory import saved_bytes, saved_residuals

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")


@pytest.fixture
def linear_calls(monkeypatch):
    calls = []
    original = connection.Linear.forward

    def counted(self, *arrays):
        calls.append(1)
        return original(self, *arrays)

    monkeypatch.setattr(connection.Linear, "forward", counted)
    return calls


def _mlp(depth=4, width=8, seed=0):
    rng = np.random.default_rng(seed)
    Ws = [ms.Parameter(rng.standard_normal((width, width)) / np.sqrt(width)) for _ in range(depth)]

    def block(h):
        for W in Ws:
            h = F.tanh(F.linear(h, W))
        return h

    return block, Ws, rng.standard_normal((5, width))


def _step(block, Ws, x0, run):
    for W in Ws:
        W.cleargrad()
    x = ms.Variable(x0.copy())
    y = run(block, x)
    (y * y).sum().backward()
    return y.array, x.grad, [W.grad for W in Ws]


EXACT = {
    "nothing_saveable": P.nothing_saveable,
    "everything_saveable": P.everything_saveable,
    "dots_saveable": P.dots_saveable,
    "offload_dots_to_host": P.offload_dots_to_host,
    "combine": P.combine(P.nothing_saveable, P.dots_saveable),
    "bool predicate": lambda out: out.label == "Tanh",
}


@pytest.mark.parametrize("name", sorted(EXACT))
@pytest.mark.parametrize("where", ["checkpoint", "nested", "sequential"])
def test_exact_policies_give_the_plain_outputs_and_gradients(name, where):
    policy = EXACT[name]
    block, Ws, x0 = _mlp()
    plain = _step(block, Ws, x0, lambda b, x: b(x))
    run = {
        "checkpoint": lambda b, x: ms.checkpoint(b, x, policy=policy),
        "nested": lambda b, x: ms.checkpoint(
            lambda v: F.tanh(ms.checkpoint(b, v, policy=policy)), x, policy=policy),
        "sequential": lambda b, x: ms.checkpoint_sequential(
            [lambda h, W=W: F.tanh(F.linear(h, W)) for W in Ws], x, segments=2, policy=policy),
    }[where]
    if where == "nested":
        plain = _step(lambda v: F.tanh(block(v)), Ws, x0, lambda b, x: b(x))
    got = _step(block, Ws, x0, run)
    np.testing.assert_array_equal(got[0], plain[0])
    np.testing.assert_array_equal(got[1], plain[1])
    for a, b in zip(got[2], plain[2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("policy, recomputed", [
    (None, 4), (P.nothing_saveable, 4), (P.dots_saveable, 0), (P.everything_saveable, 0),
    (P.offload_dots_to_host, 0), (P.compress("int8"), 0),
])
def test_kept_ops_are_not_executed_again(policy, recomputed, linear_calls):
    block, Ws, x0 = _mlp()
    x = ms.Variable(x0)
    y = ms.checkpoint(block, x, policy=policy)
    assert len(linear_calls) == 4
    linear_calls.clear()
    (y * y).sum().backward()
    assert len(linear_calls) == recomputed


def test_named_output_is_kept_and_its_op_not_rerun(linear_calls):
    rng = np.random.default_rng(1)
    W1, W2 = (ms.Parameter(rng.standard_normal((6, 6))) for _ in range(2))

    def block(h):
        a = ms.checkpoint_name(F.linear(h, W1), "a")
        return F.tanh(F.linear(F.tanh(a), W2))

    x0 = rng.standard_normal((3, 6))
    plain = _step(block, [W1, W2], x0, lambda b, x: b(x))
    linear_calls.clear()
    for policy, reruns in ((P.save_only_these_names("a"), 1), (P.save_any_names_but_these("a"), 2),
                           (P.save_any_names_but_these("b"), 1)):
        got = _step(block, [W1, W2], x0,
                    lambda b, x, p=policy: ms.checkpoint(b, x, policy=p))
        assert len(linear_calls) == 2 + reruns, policy
        linear_calls.clear()
        np.testing.assert_array_equal(got[1], plain[1])


def test_checkpoint_name_is_identity_in_value_and_gradient():
    x = ms.Variable(np.array([1.0, -2.0]))
    y = ms.checkpoint_name(x * 3.0, "h")
    np.testing.assert_array_equal(y.array, [3.0, -6.0])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    assert ms.gradgradcheck(lambda v: ms.checkpoint_name(v * v, "h"), [np.array([0.5, 1.5])])


@pytest.mark.parametrize("bad", ["dots", 3, P.SAVE])
def test_garbage_policies_are_rejected_at_decoration(bad):
    with pytest.raises(TypeError, match="policy must be a callable"):
        ms.checkpointed(policy=bad)
    with pytest.raises(TypeError, match="policy must be a callable"):
        ms.saved_arrays(bad).__enter__()


def test_policy_returning_a_non_decision_names_it():
    def sloppy(out):
        return "SAVE"

    with pytest.raises(TypeError, match="policy .*sloppy returned 'SAVE' for an output of Tanh"):
        ms.checkpoint(lambda v: F.tanh(F.tanh(v)), ms.Variable(np.ones(2)), policy=sloppy)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["int8", "float16"]), st.integers(0, 2**16),
       st.floats(0.01, 100.0), st.sampled_from([(3,), (4, 5), (2, 3, 4)]))
def test_compression_error_is_within_the_documented_bound(kind, seed, scale, shape):
    a = np.random.default_rng(seed).standard_normal(shape) * scale
    back = P.Stored(a, P.COMPRESS(kind)).get()
    assert back.dtype == a.dtype and back.shape == a.shape
    if kind == "int8":
        assert np.abs(back - a).max() <= np.abs(a).max() / 254 * (1 + 1e-12)
    else:
        peak = np.abs(a).max()
        assert np.all(np.abs(back - a) <= (np.abs(a) * 2.0 ** -11 + peak * 2.0 ** -25) * (1 + 1e-9))


@pytest.mark.parametrize("scale", [1e6, 1e-15])
def test_float16_compression_handles_values_beyond_its_range(scale):
    # beyond float16's max (65504) and below its smallest subnormal (6e-8): scaled first
    a = np.array([1.0, -3.0, 0.25]) * scale
    back = P.Stored(a, P.COMPRESS("float16")).get()
    np.testing.assert_allclose(back, a, rtol=2.0 ** -11)


def _w_like(depth=6, width=64, batch=128, seed=0):
    rng = np.random.default_rng(seed)
    Ws = [ms.Parameter((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32))
          for _ in range(depth)]
    x0 = rng.standard_normal((batch, width)).astype(np.float32)
    return Ws, x0


def _plain_w(Ws, x0):
    h = ms.Variable(x0)
    for W in Ws:
        h = F.tanh(F.linear(h, W))
    return (h * h).sum()


@pytest.mark.parametrize("kind, max_ratio, max_error", [("int8", 0.30, 1e-2), ("float16", 0.55, 1e-3)])
def test_saved_arrays_compresses_a_plain_model(kind, max_ratio, max_error):
    Ws, x0 = _w_like(width=128, batch=256)
    _plain_w(Ws, x0).backward()
    exact = [W.grad.copy() for W in Ws]
    activation_bytes = len(Ws) * x0.nbytes   # what the plain model keeps: one tanh output per layer

    for W in Ws:
        W.cleargrad()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        with ms.saved_arrays(P.compress(kind)):
            loss = _plain_w(Ws, x0)
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    loss.backward()
    assert kept <= max_ratio * activation_bytes, (kept, activation_bytes)
    error = max(np.abs(W.grad - g).max() / np.abs(g).max() for W, g in zip(Ws, exact))
    assert error <= max_error


def test_saved_residuals_reports_decisions_and_its_total_matches_memory():
    Ws, x0 = _w_like(depth=4, width=128, batch=256)
    x0 = x0.astype(np.float64)
    Ws = [ms.Parameter(W.array.astype(np.float64)) for W in Ws]

    def block(v):
        return _chain(Ws, v)

    x = ms.Variable(x0)
    rows = saved_residuals(block, x, policy=P.dots_saveable)
    decisions = {(r.op, r.decision) for r in rows}
    assert ("Tanh", "RECOMPUTE") in decisions and ("Linear", "SAVE") in decisions
    assert all(r.site.endswith(".py:" + r.site.rsplit(":", 1)[1]) for r in rows)
    total = sum(r.kept for r in rows)
    assert total == len(Ws) * x0.nbytes            # the four Linear outputs
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        y = ms.checkpoint(block, x, policy=P.dots_saveable)
        live = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # kept outputs + the result; the rest is the graph's Python objects (a few hundred bytes an op)
    assert abs(live - (total + y.array.nbytes)) < 0.03 * total
    plain_rows = saved_residuals(block, x)
    assert {r.decision for r in plain_rows} == {"SAVE"}
    assert saved_bytes(block, x) == sum(r.kept for r in plain_rows)


def _chain(Ws, v):
    for W in Ws:
        v = F.tanh(F.linear(v, W))
    return v


def test_print_saved_residuals_prints_rows_and_total(capsys):
    from memsave.memory import print_saved_residuals
    x = ms.Variable(np.ones((2, 3)))
    print_saved_residuals(lambda v: F.tanh(F.exp(v)), x, policy=P.everything_saveable)
    out = capsys.readouterr().out
    assert "Exp" in out and "Tanh" in out and "SAVE" in out and "total kept:" in out
    with warnings.catch_warnings():
        warnings.simplefilter("error")


def test_kept_op_that_saves_a_mask_or_a_leaf_replays_those_saves():
    # where() saves its condition with save_for_backward, MatMul retains a leaf weight: the
    # recomputation skips both ops and must still give their backward what they kept.
    x = ms.Variable(np.array([1.0, 2.0, 3.0]))
    y = ms.checkpoint(lambda v: F.where(np.array([True, False, True]), v, v * 2.0) * v, x,
                      policy=P.everything_saveable)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 8.0, 6.0])

    W = ms.Parameter(np.random.default_rng(0).standard_normal((3, 3)))

    def step(a):   # grad() inside the block: the skipped MatMul's backward runs in recompute
        g, = ms.grad(F.sum(F.square(F.tanh(a @ W))), W, create_graph=True)
        return F.tanh(a @ (W - g * 0.1))

    xc, xp = ms.Variable(np.ones((2, 3))), ms.Variable(np.ones((2, 3)))
    ms.checkpoint(step, xc, policy=P.dots_saveable).sum().backward()
    checkpointed = W.grad.copy()
    W.cleargrad()
    step(xp).sum().backward()
    np.testing.assert_allclose(checkpointed, W.grad, rtol=1e-13)
    np.testing.assert_allclose(xc.grad, xp.grad, rtol=1e-13)
