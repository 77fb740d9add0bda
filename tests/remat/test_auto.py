"""memsave.auto_checkpoint: the knapsack against brute force, plans on the bench transformer
and CNN (measured activation memory within the budget, gradients equal to plain), budgets."""
import itertools
import warnings

import numpy as np
import pytest

import memsave as ms
from memsave import bench, nn, policies
from memsave.memory import measure
from memsave.remat.auto import Candidate, _lookup, choose, profile_modules


class Residual(nn.Module):
    """``h + block(h)`` as a module: the bench CNN's layer, with its block as a child."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, h):
        return h + self.block(h)


SIZES = {"transformer": dict(depth=3, width=32, batch=8, seq=64),
         "cnn": dict(depth=3, width=4, batch=8, seq=32)}


def _model(name, dtype=np.float32):
    """The bench workload as one module (same blocks, same input), in ``dtype``."""
    workload = bench.make_workload(name, **SIZES[name])
    blocks = ([Residual(layer.__closure__[0].cell_contents) for layer in workload.layers]
              if name == "cnn" else list(workload.layers))
    net = nn.Sequential(*blocks)
    net._move(lambda a: a.astype(dtype))
    return net, ms.Variable(workload.x.array.astype(dtype))


def _step(net, x):
    for p in net.parameters():
        p.cleargrad()
    h = net(x)
    loss = (h * h).sum() * (1.0 / h.size)
    del h
    loss.backward()
    return {name: p.grad.copy() for name, p in net.named_parameters()}


def _kept_after_forward(net, x):
    with measure() as m:
        h = net(x)
    del h
    return m.current


# ----- the knapsack ------------------------------------------------------------------------

def _brute_force(candidates, need):
    best = None
    for size in range(len(candidates) + 1):
        for subset in itertools.combinations(candidates, size):
            names = [c.name for c in subset]
            if len(set(names)) < len(names) or any(b.startswith(a + ".") for a in names for b in names):
                continue
            if sum(c.saved for c in subset) >= need:
                time = sum(c.time for c in subset)
                best = time if best is None else min(best, time)
    return best


def _random_tree(rng):
    names, frontier = [], [""]
    while frontier and len(names) < 9:
        parent = frontier.pop(0)
        for k in range(int(rng.integers(1, 4))):
            name = f"{parent}.{k}" if parent else str(k)
            names.append(name)
            frontier.append(name)
    whole = [Candidate(n, int(rng.integers(-2, 12)) * 64, float(rng.integers(1, 20))) for n in names[:9]]
    # some submodules also have a policy option: less saved, less time (as a policy keeps more)
    partial = [Candidate(c.name, c.saved - int(rng.integers(1, 6)) * 64, c.time / 2, policy=len)
               for c in whole if rng.random() < 0.5]
    return whole + partial


@pytest.mark.parametrize("seed", range(40))
def test_knapsack_matches_brute_force_on_small_trees(seed):
    rng = np.random.default_rng(seed)
    candidates = _random_tree(rng)
    for need in range(64, 64 * 40, 64 * 3):
        expected = _brute_force(candidates, need)
        if expected is None:
            with pytest.raises(ValueError, match="no set of submodules saves"):
                choose(candidates, need)
            continue
        chosen = choose(candidates, need)
        names = [c.name for c in chosen]
        assert len(set(names)) == len(names)
        assert not any(b.startswith(a + ".") for a in names for b in names)
        assert sum(c.saved for c in chosen) >= need
        assert sum(c.time for c in chosen) == pytest.approx(expected)


def test_knapsack_with_coarse_units_still_fits():
    rng = np.random.default_rng(0)
    candidates = [Candidate(str(i), int(rng.integers(1, 10_000)), float(rng.integers(1, 9)))
                  for i in range(12)]
    need = sum(c.saved for c in candidates) // 2
    chosen = choose(candidates, need, resolution=10)
    assert sum(c.saved for c in chosen) >= need


# ----- plans on the bench workloads --------------------------------------------------------

@pytest.mark.parametrize("name", ["transformer", "cnn"])
@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_plan_fits_the_budget_and_gradients_equal_plain(name, fraction):
    net, x = _model(name, np.float64)
    plain_grads = _step(net, x)
    plain_kept = _kept_after_forward(net, x)
    plan = ms.auto_checkpoint(net, x, budget=fraction)
    assert plan.chosen, "a budget below plain must checkpoint something"
    assert plan.predicted_bytes <= plan.budget == int(fraction * plan.plain_bytes)
    for c in plan.chosen:
        module = net
        for part in c.name.split("."):
            module = getattr(module, part)
        assert repr(module).startswith("checkpointed(")
    grads = _step(net, x)
    for key, value in plain_grads.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-12, atol=1e-14)
    # activation memory after forward: the plain run's non-activation part (output) plus the
    # planned activations, within a little overhead (RNG states, checkpoint bookkeeping)
    kept = _kept_after_forward(net, x)
    overhead = plain_kept - plan.plain_bytes
    assert kept - overhead <= plan.budget * 1.05 + 16 * 1024, (kept, overhead, plan)


@pytest.mark.parametrize("name", ["transformer", "cnn"])
def test_step_peak_within_budget_plus_one_block(name):
    net, x = _model(name)
    _step(net, x)
    with measure() as plain:
        _step(net, x)
    plan = ms.auto_checkpoint(net, x, budget=0.25)
    _step(net, x)
    with measure() as auto:
        _step(net, x)
    workspace = max(c.inside for c in plan.chosen)
    assert auto.peak <= plan.budget + (plain.peak - plan.plain_bytes) + workspace
    assert auto.peak < plain.peak


def test_bigger_budget_never_adds_recompute_time_for_fixed_costs():
    net, x = _model("cnn")
    candidates, plain = profile_modules(net, x)
    previous = None
    for need in sorted({plain - b for b in range(0, plain, max(1, plain // 20))}, reverse=True):
        try:
            time = sum(c.time for c in choose(candidates, need))
        except ValueError:
            continue
        assert previous is None or time <= previous + 1e-12
        previous = time


def test_infeasible_budget_states_the_least_achievable_bytes():
    net, x = _model("transformer")
    with pytest.raises(ValueError, match=r"below the least activation memory .* reaches: \d+ bytes"):
        ms.auto_checkpoint(net, x, budget=1000)


@pytest.mark.parametrize("budget,message", [(0.0, r"must be in \(0, 1\]"), (1.5, r"must be in \(0, 1\]"),
                                            ("lots", "is not a size")])
def test_bad_budgets_are_rejected(budget, message):
    net, x = _model("cnn")
    with pytest.raises(ValueError, match=message):
        ms.auto_checkpoint(net, x, budget=budget)


def test_budget_in_bytes_and_strings():
    net, x = _model("cnn")
    candidates, plain = profile_modules(net, x)
    plan = ms.auto_checkpoint(net, x, budget=f"{plain // 2}B")
    assert plan.budget == plain // 2 and plan.predicted_bytes <= plain // 2
    text = str(plan)
    assert "submodule" in text and all(c.name in text for c in plan.chosen)


def test_profile_leaves_module_unchanged_and_batchnorm_statistics_alone():
    net, x = _model("cnn")
    before = {k: v.copy() for k, v in net.state_dict().items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        profile_modules(net, x)
    after = net.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert all("forward" not in m.__dict__ for _, m in net.named_modules())


def _wrapped_names(net):
    return sorted(name for name, m in net.named_modules()
                  if name and repr(m).startswith("checkpointed("))


def test_a_second_call_replans_from_scratch():
    net, x = _model("transformer", np.float64)
    plain_grads = _step(net, x)
    first = ms.auto_checkpoint(net, x, budget=0.5, policies=())
    assert _wrapped_names(net) == sorted(first.names)
    again = ms.auto_checkpoint(net, x, budget=0.5, policies=())  # equal blocks: noise picks which
    assert (again.plain_bytes, again.predicted_bytes) == (first.plain_bytes, first.predicted_bytes)
    assert _wrapped_names(net) == sorted(again.names)  # no checkpoint inside a checkpoint
    for name in again.names:
        assert not repr(net[int(name)].__wrapped__).startswith("checkpointed(")
    assert ms.auto_checkpoint(net, x, budget=1.0).chosen == ()
    assert _wrapped_names(net) == []
    grads = _step(net, x)
    for key, value in plain_grads.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-12, atol=1e-14)


def test_a_second_call_keeps_the_users_own_checkpoints():
    net, x = _model("transformer", np.float64)
    net._layers[0] = ms.checkpointed(net._layers[0])
    setattr(net, "0", net._layers[0])
    ms.auto_checkpoint(net, x, budget=0.5)
    ms.auto_checkpoint(net, x, budget=1.0)
    assert _wrapped_names(net) == ["0"]


@pytest.fixture
def op_count_clock(monkeypatch):
    """Profiling time measured in clock reads (two per op, two per submodule call), so plans
    do not depend on how busy the machine is."""
    from memsave.remat import auto
    ticks = itertools.count()
    monkeypatch.setattr(auto.time, "perf_counter", lambda: float(next(ticks)))


def test_policies_trade_memory_for_time_and_are_applied(op_count_clock):
    """A submodule checkpointed with dots_saveable keeps its matrix products: it frees less
    than recomputing everything and adds less time (its products are not re-run); a budget
    that such a checkpoint meets more cheaply gets it, applied with that policy."""
    net, x = _model("transformer", np.float64)
    plain_grads = _step(net, x)
    candidates, plain = profile_modules(net, x, policies=(policies.dots_saveable,))
    whole = {c.name: c for c in candidates if c.policy is None}
    dots = {c.name: c for c in candidates if c.policy is policies.dots_saveable}
    assert set(whole) == set(dots)
    for name in ("0", "1", "2"):
        assert 0 < dots[name].saved < whole[name].saved
        assert dots[name].time < whole[name].time
    need = dots["0"].saved  # the blocks are equal: any block's dots option meets it
    expected = choose(candidates, need)
    assert any(c.policy is policies.dots_saveable for c in expected)
    assert sum(c.time for c in expected) < sum(c.time for c in choose(list(whole.values()), need))
    plan = ms.auto_checkpoint(net, x, budget=plain - need)
    assert plan.chosen == expected
    assert "dots_saveable" in str(plan)
    for c in plan.chosen:
        assert _lookup(net, c.name)._self_options["policy"] is c.policy
    grads = _step(net, x)
    for key, value in plain_grads.items():
        np.testing.assert_allclose(grads[key], value, rtol=1e-12, atol=1e-14)
    kept = _kept_after_forward(net, x)
    ms.auto_checkpoint(net, x, budget=1.0)
    overhead = _kept_after_forward(net, x) - plain
    assert kept - overhead <= (plain - need) * 1.05 + 16 * 1024, (kept, overhead, plain - need)


def test_policies_must_be_callables():
    net, x = _model("transformer")
    planned = ms.auto_checkpoint(net, x, budget=0.5, policies=())
    with pytest.raises(TypeError, match="policy must be a callable"):
        ms.auto_checkpoint(net, x, budget=0.5, policies=("dots",))
    assert _wrapped_names(net) == sorted(planned.names)  # the refused call changed nothing
