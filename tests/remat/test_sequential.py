"""checkpoint_sequential, and the memory the strategies actually save on the reference MLP."""
import warnings

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave.memory import measure
from memsave.remat.sequential import segment_bounds


@pytest.mark.parametrize("n,segments,expected", [
    (10, 3, [(0, 4), (4, 7), (7, 10)]),
    (4, 10, [(0, 1), (1, 2), (2, 3), (3, 4)]),
    (64, "sqrt", [(8 * k, 8 * k + 8) for k in range(8)]),
    (0, 2, []),
])
def test_segment_bounds(n, segments, expected):
    assert segment_bounds(n, segments) == expected


@pytest.mark.parametrize("bad", [0, -1, "cube", 2.5, True])
def test_segment_bounds_rejects_bad_segments(bad):
    with pytest.raises(ValueError, match="segments must be a positive int or 'sqrt'"):
        segment_bounds(8, bad)


class MLP:
    """64 x (Linear(256->256) + tanh): the reference workload, float32."""

    def __init__(self, depth=64, width=256, batch=2048, seed=0):
        rng = np.random.default_rng(seed)
        self.weights = [ms.Parameter((rng.standard_normal((width, width)) / np.sqrt(width))
                                     .astype(np.float32)) for _ in range(depth)]
        self.x = ms.Variable(rng.standard_normal((batch, width)).astype(np.float32))
        self.forwards = 0
        self.layers = [self._layer(w) for w in self.weights]

    def _layer(self, w):
        def layer(h):
            self.forwards += 1
            return F.tanh(F.linear(h, w))
        return layer

    def step(self, strategy):
        h = self.x
        if strategy == "none":
            for layer in self.layers:
                h = layer(h)
        elif strategy == "sqrt":
            h = ms.checkpoint_sequential(self.layers, h, segments="sqrt")
        elif strategy == "block4":
            for k in range(0, len(self.layers), 4):
                h = ms.checkpoint(_chain, self.layers[k:k + 4], h)
        elif strategy == "each":
            for layer in self.layers:
                h = ms.checkpoint(layer, h)
        (h * h).sum().backward()

    def peak(self, strategy):
        for w in self.weights:
            w.cleargrad()
        self.forwards = 0
        with measure() as m:
            self.step(strategy)
        return m.peak


def _chain(layers, h):
    for layer in layers:
        h = layer(h)
    return h


@pytest.fixture(scope="module")
def mlp_peaks():
    mlp = MLP()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
        peaks, forwards = {}, {}
        for strategy in ("none", "sqrt", "block4", "each"):
            peaks[strategy] = mlp.peak(strategy)
            forwards[strategy] = mlp.forwards
    return peaks, forwards


def test_sqrt_segments_cut_peak_memory(mlp_peaks):
    peaks, forwards = mlp_peaks
    assert peaks["sqrt"] / peaks["none"] <= 0.35
    assert forwards["none"] == 64
    assert forwards["sqrt"] == 64 + 56  # the last of 8 segments is not recomputed


def test_blocks_of_four_cut_peak_memory(mlp_peaks):
    peaks, forwards = mlp_peaks
    assert peaks["block4"] / peaks["none"] <= 0.45
    assert forwards["block4"] == 128


def test_checkpointing_each_layer_saves_nothing(mlp_peaks):
    """Each layer's input is exactly what plain mode keeps: no saving, as in torch/Chainer."""
    peaks, _ = mlp_peaks
    assert peaks["each"] / peaks["none"] >= 0.95


def test_useless_checkpoint_warns_once_per_call_site():
    mlp = MLP(depth=4, width=16, batch=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            h = mlp.x
            for layer in mlp.layers:
                h = ms.checkpoint(layer, h)  # one call site
    useless = [w for w in caught if issubclass(w.category, ms.UselessCheckpointWarning)]
    assert len(useless) == 1
    assert useless[0].filename == __file__
    assert "saves no memory" in str(useless[0].message)


def test_block_checkpoint_does_not_warn():
    mlp = MLP(depth=4, width=16, batch=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ms.UselessCheckpointWarning)
        ms.checkpoint(_chain, mlp.layers, mlp.x)


def test_sequential_gradients_match_plain():
    mlp = MLP(depth=6, width=8, batch=4)
    grads = {}
    for strategy in ("none", "sqrt"):
        for w in mlp.weights:
            w.cleargrad()
        mlp.step(strategy)
        grads[strategy] = [w.grad.copy() for w in mlp.weights]
    for a, b in zip(grads["none"], grads["sqrt"]):
        np.testing.assert_allclose(b, a, rtol=1e-6)


def test_unused_branch_of_a_checkpoint_is_freed_with_its_output():
    """Backward never visits a branch that does not lead to the loss; its placeholders and
    the RecomputeNode go as soon as the user drops that branch's output."""
    import weakref

    w = ms.Parameter(np.eye(4) * 0.5)

    def branches(v):
        h = F.tanh(F.tanh(v @ w))
        return h * 2.0, F.tanh(F.tanh(h * 3.0))

    x = ms.Variable(np.ones((2, 4)))
    used, unused = ms.checkpoint(branches, x)
    owner = weakref.ref(unused.creator._retained_out[0].packed.owner)
    used.sum().backward()
    assert owner() is not None  # the unused branch still holds its slots
    del used, unused
    assert owner() is None


def _tanh_chain(n=4):
    return [F.tanh] * n, ms.Variable(np.linspace(-1, 1, 6).reshape(2, 3))


@pytest.mark.parametrize("stray", [np.ones((2, 3)), ms.Variable(np.ones((2, 3)))])
def test_an_array_where_segments_goes_is_a_clear_error(stray):
    layers, x = _tanh_chain()
    with pytest.raises(TypeError, match=r"takes one input x; its third argument is segments .* "
                                        r"got an array of shape \(2, 3\)"):
        ms.checkpoint_sequential(layers, x, stray)


def test_a_stray_positional_argument_is_a_clear_error():
    layers, x = _tanh_chain()
    with pytest.raises(TypeError, match="positional argument"):
        ms.checkpoint_sequential(layers, x, 2, x)


@pytest.mark.parametrize("how,names", [
    (dict(segments=2, budget="1MiB"), "segments and budget"),
    (dict(budget=10**6, schedule=ms.planner.revolve(4, 2)), "budget and schedule"),
    (dict(segments="sqrt", schedule=ms.planner.revolve(4, 2)), "segments and schedule"),
])
def test_segments_budget_and_schedule_exclude_each_other(how, names):
    layers, x = _tanh_chain()
    with pytest.raises(ValueError, match=f"takes one of segments, budget or schedule, got {names}"):
        ms.checkpoint_sequential(layers, x, **how)


def test_schedule_must_fit_the_chain():
    layers, x = _tanh_chain(4)
    with pytest.raises(ValueError, match="schedule is for 5 layers but 4 were given"):
        ms.checkpoint_sequential(layers, x, schedule=ms.planner.revolve(5, 2))
    with pytest.raises(TypeError, match="schedule must be a memsave.planner.Schedule, got tuple"):
        ms.checkpoint_sequential(layers, x, schedule=(0, 1, 2, 3))


def test_budget_below_the_minimum_names_it():
    layers, x = _tanh_chain(4)
    with pytest.raises(ValueError, match=r"below the minimum .* needs: \d+ bytes"):
        ms.checkpoint_sequential(layers, x, budget=16)
    with pytest.raises(ValueError, match="is not a size"):
        ms.checkpoint_sequential(layers, x, budget="lots")


def test_schedule_passes_checkpoint_options_through():
    layers, x = _tanh_chain(4)
    seen = []

    def policy(out):
        seen.append(out.label)
        return False

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
        y = ms.checkpoint_sequential(layers, x, schedule=ms.planner.revolve(4, 2), policy=policy,
                                     determinism_check="checksum", preserve_rng_state=False)
    np.testing.assert_allclose(y.array, np.tanh(np.tanh(np.tanh(np.tanh(x.array)))))
    assert "Tanh" in seen


def test_default_is_still_sqrt_segments():
    mlp = MLP(depth=16, width=4, batch=2)
    mlp.step("sqrt")
    assert mlp.forwards == 16 + 12  # 4 segments, the last not recomputed


def test_useless_segment_warning_names_the_segment_not_internals():
    layers = [lambda h: h * h] * 4            # keeps nothing worth dropping
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ms.checkpoint_sequential(layers, ms.Variable(np.ones(3)) * 1.0, segments=2)
    useless = [str(w.message) for w in caught if issubclass(w.category, ms.UselessCheckpointWarning)]
    assert useless and "checkpoint_sequential(layers[0:2])" in useless[0]
    assert "_run_layers" not in useless[0] and "0 bytes" not in useless[0]


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="determinism"):
        ms.checkpoint_sequential([F.tanh] * 2, np.ones(2), determinism="checksum")
