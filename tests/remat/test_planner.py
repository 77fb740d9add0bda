"""memsave.planner: Revolve numbers and schedules, the rotor DP against brute force, profiling,
and schedules executed by checkpoint_sequential (forward counts, gradients, measured peak)."""
import dataclasses
import warnings

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import bench, planner
from memsave.memory import measure
from memsave.remat.sequential import segment_bounds

Chain, Checkpoint = planner.Chain, planner.Checkpoint


# ----- budgets -----------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("300MiB", 300 * 2**20), ("1.5GB", 1_500_000_000), ("512KiB", 512 * 1024), ("2 gib", 2 * 2**30),
    ("4096", 4096), ("10B", 10), (".5MB", 500_000), (123, 123),
])
def test_parse_bytes(text, expected):
    assert planner.parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "300 MiBs", "MiB", "1e9", "-5MiB", "1.5.2GB", ""])
def test_parse_bytes_rejects_garbage(bad):
    with pytest.raises(ValueError, match="is not a size: write a number and a unit"):
        planner.parse_bytes(bad)


@pytest.mark.parametrize("bad,error,message", [
    (0, ValueError, "budget must be positive"), (-1, ValueError, "budget must be positive"),
    ("0KiB", ValueError, "budget must be positive"), (1.5e6, TypeError, "got float"),
    (True, TypeError, "got bool"), (None, TypeError, "got NoneType"),
])
def test_parse_bytes_rejects_non_sizes(bad, error, message):
    with pytest.raises(error, match=message):
        planner.parse_bytes(bad)


# ----- Revolve -----------------------------------------------------------------------------

def _revolve_recursion(max_layers, max_slots):
    """t(L, S) = min over 1 <= j < L of j + t(L-j, S-1) + t(j, S); t(1, S) = 0; t(L, 1) = L(L-1)/2."""
    t = {}
    for slots in range(1, max_slots + 1):
        for n in range(1, max_layers + 1):
            if n == 1:
                t[n, slots] = 0
            elif slots == 1:
                t[n, slots] = n * (n - 1) // 2
            else:
                t[n, slots] = min(j + t[n - j, slots - 1] + t[j, slots] for j in range(1, n))
    return t


def test_revolve_closed_form_equals_the_recursion_for_all_small_chains():
    t = _revolve_recursion(200, 12)
    mismatches = [(n, s) for (n, s), value in t.items() if planner.revolve_cost(n, s) != value]
    assert mismatches == []


@pytest.mark.parametrize("n,slots,expected", [(64, 8, 137), (128, 8, 329), (32, 4, 75), (1, 3, 0),
                                              (5, 1, 10), (10, 9, 9), (10, 30, 9)])
def test_revolve_known_values(n, slots, expected):
    schedule = planner.revolve(n, slots)
    assert planner.revolve_cost(n, slots) == expected
    assert schedule.extra_forwards == expected
    assert schedule.n_layers == n


def test_revolve_schedules_are_optimal_and_within_their_slots():
    for n in range(1, 61):
        for slots in range(1, 13):
            schedule = planner.revolve(n, slots)
            assert schedule.extra_forwards == planner.revolve_cost(n, slots), (n, slots)
            assert schedule.peak_slots <= slots, (n, slots)
            actions = schedule.actions
            assert sum(1 for a, _ in actions if a == "B") == n
            assert [i for a, i in actions if a == "B"] == list(range(n - 1, -1, -1))
            assert sum(1 for a, _ in actions if a != "B") == n + schedule.extra_forwards


def test_revolve_uses_all_its_slots_when_they_help():
    assert planner.revolve(64, 8).peak_slots == 8
    assert planner.revolve(3, 2).steps == (Checkpoint(0, 1, (0,)), Checkpoint(1, 2, (1,)), 2)


@pytest.mark.parametrize("n,slots", [(0, 2), (-1, 2), (4, 0), (2.5, 2), (4, True), ("4", 2)])
def test_revolve_rejects_bad_arguments(n, slots):
    with pytest.raises(ValueError, match="must be a positive int"):
        planner.revolve(n, slots)


# ----- the rotor dynamic program -----------------------------------------------------------

def _all_plans(start, stop):
    """Every schedule of layers start..stop-1 (taped first layer, or a checkpoint and the rest)."""
    if stop - start == 1:
        yield (start,)
        return
    for rest in _all_plans(start + 1, stop):
        yield (start, *rest)
    for split in range(start + 1, stop):
        for first in _all_plans(start, split):
            for rest in _all_plans(split, stop):
                yield (Checkpoint(start, split, first), *rest)


def _random_chain(rng, n):
    return Chain(uf=rng.integers(1, 6, n), ub=rng.integers(1, 9, n), x=rng.integers(1, 6, n + 1),
                 xbar=rng.integers(1, 9, n), grad=rng.integers(0, 3, n),
                 fwd_workspace=rng.integers(0, 4, n), recompute_workspace=rng.integers(0, 4, n),
                 bwd_workspace=rng.integers(0, 4, n), loss_workspace=int(rng.integers(0, 6)))


def test_solve_matches_brute_force_on_small_chains():
    rng = np.random.default_rng(0)
    checked = 0
    for trial in range(40):
        n = int(rng.integers(1, 6))
        chain = _random_chain(rng, n)
        results = [(planner.simulate(steps, chain), steps) for steps in _all_plans(0, n)]
        least = min(peak for (_, peak), _ in results)
        assert planner.minimum_budget(chain)[0] == least
        most = max(peak for (_, peak), _ in results)
        for budget in range(least, most + 2):
            fastest = min(time for (time, peak), _ in results if peak <= budget)
            schedule = planner.solve(chain, budget)
            assert schedule.predicted_time == fastest, (trial, budget)
            assert schedule.peak_bytes <= budget
            assert planner.simulate(schedule.steps, chain) == (schedule.predicted_time, schedule.peak_bytes)
            checked += 1
    assert checked > 100


def test_solve_with_unlimited_budget_stores_everything():
    rng = np.random.default_rng(1)
    chain = _random_chain(rng, 12)
    schedule = planner.solve(chain, 10**9)
    assert schedule.steps == tuple(range(12))
    assert schedule.extra_forwards == 0
    assert schedule.peak_slots == 0


def test_predicted_time_falls_as_the_budget_grows():
    rng = np.random.default_rng(2)
    chain = Chain(uf=rng.uniform(1, 3, 20), ub=rng.uniform(2, 5, 20), x=rng.integers(900, 1100, 21),
                  xbar=rng.integers(1500, 4000, 20), grad=rng.integers(0, 300, 20))
    least = planner.minimum_budget(chain)[0]
    unlimited = planner.simulate(tuple(range(20)), chain)[1]
    times = []
    for budget in np.linspace(least, unlimited, 25).astype(int):
        schedule = planner.solve(chain, int(budget))
        assert schedule.peak_bytes <= budget
        times.append(schedule.predicted_time)
    assert all(later <= earlier + 1e-9 for earlier, later in zip(times, times[1:]))
    assert times[-1] == pytest.approx(sum(chain.uf) + sum(chain.ub))
    assert times[0] > times[-1]


def test_sqrt_segments_are_optimal_on_an_equal_chain():
    """On 64 equal layers (workload W's sizes in units of 256 KiB: activations 8, parameter
    gradients 1, a workspace of one activation) no schedule fits in sqrt segments' peak with
    fewer extra forwards than its 56: the exact DP ties it, and one unit less costs more."""
    n = 64
    chain = Chain(uf=[1] * n, ub=[2] * n, x=[8] * (n + 1), xbar=[8] * n, grad=[1] * n,
                  fwd_workspace=[8] * n, recompute_workspace=[8] * n, loss_workspace=16)
    bounds = segment_bounds(n, "sqrt")
    sqrt = (*(Checkpoint(a, b, tuple(range(a, b))) for a, b in bounds[:-1]), *range(*bounds[-1]))
    _, peak = planner.simulate(sqrt, chain)
    assert planner.revolve(n, 8).extra_forwards > planner.solve(chain, peak).extra_forwards == 56
    assert planner.solve(chain, peak - 1).extra_forwards > 56
    freed = dataclasses.replace(chain, grad=[0] * n)  # gradients freed inside backward: slack
    assert planner.solve(freed, planner.simulate(sqrt, freed)[1]).extra_forwards < 56


def test_infeasible_budget_states_the_minimum():
    chain = Chain(uf=[1] * 4, ub=[1] * 4, x=[100] * 5, xbar=[100] * 4)
    least = planner.minimum_budget(chain)[0]
    with pytest.raises(ValueError, match=f"minimum any schedule .* needs: {least} bytes"):
        planner.solve(chain, least - 1)
    assert planner.solve(chain, least).peak_bytes == least


def test_chain_checks_its_lengths():
    with pytest.raises(ValueError, match="needs 3 entries in x, got 2"):
        Chain(uf=[1, 1], ub=[1, 1], x=[1, 1], xbar=[1, 1])
    with pytest.raises(ValueError, match="needs at least one layer"):
        Chain(uf=[], ub=[], x=[1], xbar=[])


def test_describe_shows_nesting_and_predictions():
    chain = Chain(uf=[1] * 6, ub=[1] * 6, x=[2**20] * 7, xbar=[2**20] * 6)
    text = planner.describe(planner.solve(chain, 5 * 2**20))
    assert text.splitlines()[0].startswith("6 layers, ")
    assert "predicted peak" in text and "budget 5.0 MiB" in text
    assert "checkpoint 0.." in text


# ----- profiling ---------------------------------------------------------------------------

def test_profile_measures_sizes_and_leaves_gradients_and_rng_alone():
    lin = ms.nn.Linear(8, 8)
    lin.W.grad = np.full(lin.W.shape, 7.0, dtype=lin.W.dtype)
    layers = [lambda h: F.tanh(lin(h)), lambda h: F.dropout(h, 0.5), lambda h: h * 2.0]
    x = np.ones((4, 8), dtype=np.float32)
    ms.random.seed(3)
    expected = F.dropout(ms.Variable(x), 0.5).array
    ms.random.seed(3)
    chain = planner.profile(layers, x)
    assert chain.x == [128, 128, 128, 128]
    # tanh keeps its output; dropout its output and a one-byte mask; scaling keeps only its output
    assert chain.xbar == [128, 128 + 32, 128]
    assert chain.grad == [lin.W.array.nbytes + lin.b.array.nbytes, 0, 0]
    assert all(t > 0 for t in chain.uf + chain.ub)
    np.testing.assert_array_equal(lin.W.grad, 7.0)
    assert lin.b.grad is None
    np.testing.assert_array_equal(F.dropout(ms.Variable(x), 0.5).array, expected)  # RNG restored


def test_profile_rejects_layers_that_return_several_outputs():
    with pytest.raises(TypeError, match="must return one Variable"):
        planner.profile([lambda h: (h, h)], np.ones(3))


# ----- execution ---------------------------------------------------------------------------

class Counted:
    """L layers of Linear(width) + tanh whose executions are counted."""

    def __init__(self, n, width=6, batch=3, seed=0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.weights = [ms.Parameter((rng.standard_normal((width, width)) / np.sqrt(width)).astype(dtype))
                        for _ in range(n)]
        self.x = ms.Variable(rng.standard_normal((batch, width)).astype(dtype), requires_grad=False)
        self.forwards = 0
        self.layers = [self._layer(w) for w in self.weights]

    def _layer(self, w):
        def layer(h):
            self.forwards += 1
            return F.tanh(F.linear(h, w))
        return layer

    def step(self, **how):
        for w in self.weights:
            w.cleargrad()
        self.forwards = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
            h = ms.checkpoint_sequential(self.layers, self.x, **how)
            (h * h).sum().backward()
        return [w.grad.copy() for w in self.weights]


def test_executed_forwards_equal_the_revolve_schedule():
    rng = np.random.default_rng(4)
    for _ in range(12):
        n, slots = int(rng.integers(1, 41)), int(rng.integers(1, 9))
        model = Counted(n, seed=n)
        plain = model.step(segments=1)
        schedule = planner.revolve(n, slots)
        grads = model.step(schedule=schedule)
        assert model.forwards == n + schedule.extra_forwards, (n, slots)
        for a, b in zip(plain, grads):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_executed_forwards_equal_the_rotor_schedule():
    model = Counted(10)
    chain = planner.profile(model.layers, model.x)
    least = planner.minimum_budget(chain)[0]
    plain = model.step(segments=1)
    for budget in (least, int(least * 1.3), int(least * 1.8), 10**9):
        schedule = planner.solve(chain, budget)
        grads = model.step(schedule=schedule)
        assert model.forwards == 10 + schedule.extra_forwards
        for a, b in zip(plain, grads):
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_budget_runs_the_plan_with_plain_gradients():
    model = Counted(8, width=5)
    plain = model.step(segments=1)
    least = planner.minimum_budget(planner.profile(model.layers, model.x))[0]
    grads = model.step(budget=least)
    for a, b in zip(plain, grads):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


def test_gradients_of_a_schedule_match_numerical():
    model = Counted(5, width=3, batch=2)
    schedule = planner.revolve(5, 2)

    def loss(x, weight):
        layers = [lambda v: F.tanh(F.linear(v, weight))] + model.layers[1:]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
            h = ms.checkpoint_sequential(layers, x, schedule=schedule)
        return (h * h).sum()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
        assert ms.gradcheck(loss, [model.x.array, model.weights[0].array])


def _workload_peak(workload, **how):
    for p in workload.parameters:
        p.cleargrad()
    workload.forwards = 0
    layers = workload.counted()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
        with measure() as m:
            h = ms.checkpoint_sequential(layers, workload.x, **how)
            loss = (h * h).sum()
            del h
            loss.backward()
            del loss
    return m.peak


def _loss(h):
    return (h * h).sum()


@pytest.fixture(scope="module")
def mlp_plan():
    """Workload W scaled down (16 layers, batch 512) and its profiled chain."""
    workload = bench.make_workload("mlp", depth=16, batch=512)
    profiled = planner.profile(workload.layers, workload.x, loss=_loss)
    # profiled bytes, equal times: the plans must not depend on how busy the machine is
    return workload, dataclasses.replace(profiled, uf=[1.0] * 16, ub=[2.0] * 16)


def test_profile_measures_the_workspaces(mlp_plan):
    _, chain = mlp_plan
    activation = chain.x[1]
    # Linear + tanh: the linear's output lives next to tanh's in forward; backward's
    # temporaries die before the input's gradient is written; the loss squares its input
    assert all(0.95 * activation <= w <= 1.1 * activation for w in chain.fwd_workspace)
    assert all(0.95 * activation <= w <= 1.1 * activation for w in chain.recompute_workspace)
    assert all(w <= 0.1 * activation for w in chain.bwd_workspace)
    assert 0.95 * activation <= chain.loss_workspace <= 3.1 * activation


def test_measured_peak_stays_within_the_budget(mlp_plan):
    """The profiled model predicts the measured peak within a few percent, so plans stay
    within their budget (up to the Python objects of the graph, well under 2 %)."""
    workload, chain = mlp_plan
    least = planner.minimum_budget(chain)[0]
    plain = planner.simulate(tuple(range(16)), chain)[1]
    for budget in np.linspace(least, plain, 4).astype(int):
        schedule = planner.solve(chain, int(budget))
        peak = _workload_peak(workload, schedule=schedule)
        assert workload.forwards == 16 + schedule.extra_forwards
        assert peak <= 1.02 * budget, (budget, schedule.peak_bytes, peak)
        assert peak >= 0.95 * schedule.peak_bytes, (budget, schedule.peak_bytes, peak)


@pytest.mark.parametrize("slots", [2, 3, 4])
def test_measured_peak_of_multi_level_revolve_matches_the_model(mlp_plan, slots):
    """Revolve with few slots nests checkpoints several levels deep: an inner checkpoint's
    input must be dropped by the enclosing one, as the model assumes."""
    workload, chain = mlp_plan
    schedule = planner.revolve(16, slots)
    predicted = planner.simulate(schedule.steps, chain)[1]
    peak = _workload_peak(workload, schedule=schedule)
    assert workload.forwards == 16 + schedule.extra_forwards
    assert 0.95 * predicted <= peak <= 1.02 * predicted, (predicted, peak)


def test_plans_match_sqrt_segments_at_their_memory(mlp_plan):
    """sqrt segments are on the optimal frontier of this homogeneous chain: at their measured
    peak the optimal plan needs as many extra forwards, no more."""
    workload, chain = mlp_plan
    sqrt_peak = _workload_peak(workload, segments="sqrt")
    sqrt_forwards = workload.forwards
    schedule = planner.solve(chain, sqrt_peak)
    peak = _workload_peak(workload, schedule=schedule)
    assert workload.forwards <= sqrt_forwards
    assert peak <= 1.02 * sqrt_peak


def test_budget_below_the_gradients_is_met_with_the_optimizer_inside_backward(mlp_plan):
    """Parameter gradients alone can exceed a budget; applied and freed inside backward
    (optimizer.step_in_backward()), they leave it to activations: plan with gradients='freed'."""
    from memsave.optim import SGD

    workload, chain = mlp_plan
    least_kept = planner.minimum_budget(chain)[0]
    freed = dataclasses.replace(chain, grad=[0] * 16)
    budget = (planner.minimum_budget(freed)[0] + least_kept) // 2
    assert budget < least_kept
    with pytest.raises(ValueError, match="minimum"):
        planner.solve(chain, budget)
    schedule = planner.solve(freed, budget)
    optimizer = SGD(workload.parameters, lr=1e-3)
    optimizer.step_in_backward()
    try:
        peak = _workload_peak(workload, schedule=schedule)
    finally:
        optimizer.stop_step_in_backward()
    assert workload.forwards == 16 + schedule.extra_forwards
    assert peak <= 1.02 * budget, (budget, schedule.peak_bytes, peak)
    with pytest.raises(ValueError, match="gradients must be 'kept' or 'freed'"):
        planner.plan(workload.layers, workload.x, budget, gradients="dropped")
