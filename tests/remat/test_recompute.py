"""Regressions of the checkpoint engine (memsave/remat/recompute.py): scalars, grad() inside,
deep nesting, nested memory, early stop, option and output checks."""
import sys
import threading
import tracemalloc
import warnings

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave.gradcheck import numerical_grad


def _grads_plain_and_checkpointed(fn, x0):
    x = ms.Variable(x0.copy())
    fn(x).sum().backward()
    xc = ms.Variable(x0.copy())
    ms.checkpoint(fn, xc).sum().backward()
    return x.grad, xc.grad


@pytest.mark.parametrize("op", [abs, lambda v: F.clip(v, -1.0, 1.0), F.max, F.min])
def test_numpy_scalar_saved_for_backward_inside_a_checkpoint(op):
    # a 0-d array through these ops saves a NumPy scalar, which cannot be weak-referenced
    fn = lambda v: op(v * 3.0) * 2.0  # noqa: E731
    plain, ckpt = _grads_plain_and_checkpointed(fn, np.array(-0.2))
    np.testing.assert_array_equal(ckpt, plain)


def test_grad_inside_a_checkpointed_function_gives_the_plain_gradient():
    def penalty(v):
        y = (F.tanh(v) ** 2).sum()
        g, = ms.grad(y, v, create_graph=True)
        return (g * g).sum() + y

    x0 = np.array([0.3, -1.2, 2.0])
    plain, ckpt = _grads_plain_and_checkpointed(penalty, x0)
    np.testing.assert_allclose(ckpt, plain, rtol=1e-12)
    numerical, = numerical_grad(penalty, [x0], [np.ones(())])
    np.testing.assert_allclose(ckpt, numerical, rtol=1e-6)


def _nested(depth):
    def f(h):
        if depth == 0:
            return F.tanh(h)
        return ms.checkpoint(lambda a: F.tanh(_nested(depth - 1)(a)), h)
    return f


def _deepest_forward():
    x = ms.Variable(np.full(3, 0.1))
    lo, hi = 1, 2000
    while lo < hi:  # the deepest nesting whose forward fits in Python's recursion limit
        mid = (lo + hi + 1) // 2
        try:
            _nested(mid)(x)
            lo = mid
        except RecursionError:
            hi = mid - 1
    return lo


def test_backward_works_at_every_nesting_depth_whose_forward_works():
    # Nesting is the user's own recursion, bounded by Python's limit in forward; backward
    # must never be the part that fails (it failed at about 200 levels, forward did not).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
        depth = _deepest_forward()
        assert depth >= 150
        limit = sys.getrecursionlimit()
        x = ms.Variable(np.full(3, 0.1))
        _nested(depth)(x).sum().backward()
        assert sys.getrecursionlimit() == limit
        expected = ms.Variable(np.full(3, 0.1))
        h = expected
        for _ in range(depth + 1):
            h = F.tanh(h)
        h.sum().backward()
        np.testing.assert_allclose(x.grad, expected.grad, rtol=1e-12)


def _live_after_forward(fn, unit_shape=(128, 1024)):
    x = ms.Variable(np.random.default_rng(0).standard_normal(unit_shape))
    unit = x.array.nbytes
    fn(ms.Variable(x.array.copy()))  # warm-up: imports and caches
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        y = fn(x)
        live = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del y
    return live / unit


def _block(a):
    return F.tanh(a * F.tanh(a)) * a    # Mul saves the block's input


@pytest.mark.parametrize("inner", ["plain", "checkpointed", "keep everything"])
def test_nested_checkpoint_lets_the_outer_one_drop_the_inner_input(inner):
    # Measured before the fix: plain 1.01, checkpointed 2.02, keep-everything policy 4.01
    # units of the input's size alive after forward; only the output (1 unit) should be.
    run_inner = {
        "plain": _block,
        "checkpointed": lambda h: ms.checkpoint(_block, h),
        "keep everything": lambda h: ms.checkpoint(_block, h, policy=ms.policies.everything_saveable),
    }[inner]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ms.UselessCheckpointWarning)
        live = _live_after_forward(lambda x: ms.checkpoint(lambda v: run_inner(F.tanh(v)), x))
    assert live < 1.1


def test_early_stop_false_recomputes_the_whole_block():
    calls = []

    def fn(v):
        calls.append("first")
        h = F.tanh(v)
        calls.append("second")
        return F.tanh(h) * 1.0

    for early_stop, expected in ((True, ["first"]), (False, ["first", "second"])):
        x = ms.Variable(np.ones(3))
        y = ms.checkpoint(lambda v: F.exp(v) * fn(v), x, early_stop=early_stop)
        calls.clear()
        # backward of Mul reads exp's output slot first; early stop ends the recompute there
        y.sum().backward()
        assert calls[:len(expected)] == expected
        if not early_stop:
            assert calls == ["first", "second"]


def test_swallowed_stop_signal_is_reported_not_called_non_deterministic():
    def fn(v):
        h = F.exp(v)
        try:
            g = F.tanh(h) * h   # the last save: the recomputation stops inside it
        except BaseException:   # noqa: B036 - what the user wrote
            g = h
        return g

    x = ms.Variable(np.ones(2))
    y = ms.checkpoint(fn, x)
    with pytest.warns(RuntimeWarning, match="caught memsave's internal stop signal"):
        y.sum().backward()
    x2 = ms.Variable(np.ones(2))
    fn(x2).sum().backward()
    np.testing.assert_allclose(x.grad, x2.grad, rtol=1e-12)


@pytest.mark.parametrize("options, error, match", [
    ({"preserve_rng_state": "yes"}, TypeError, "preserve_rng_state must be True or False"),
    ({"early_stop": 1}, TypeError, "early_stop must be True or False"),
    ({"determinism_check": "always"}, ValueError, "determinism_check must be one of"),
    ({"policy": "dots"}, TypeError, "policy must be a callable"),
    ({"use_reentrant": True}, ValueError, "only the non-reentrant"),
])
def test_invalid_options_are_rejected(options, error, match):
    with pytest.raises(error, match=match):
        ms.checkpoint(F.tanh, np.ones(2), **options)
    with pytest.raises(error, match=match):
        ms.checkpointed(**options)


def test_use_reentrant_false_is_accepted_and_not_passed_to_the_function():
    y = ms.checkpoint(lambda v: F.tanh(F.tanh(v)), ms.Variable(np.ones(2)), use_reentrant=False)
    assert y.shape == (2,)


def test_functions_keyword_named_fn_reaches_the_function():
    y = ms.checkpoint(lambda v, fn: fn(v), ms.Variable(np.ones(2)), fn=F.tanh)
    np.testing.assert_allclose(y.array, np.tanh(np.ones(2)))


def test_generator_function_is_rejected():
    def gen(v):
        yield F.tanh(v)

    with pytest.raises(TypeError, match="generator or coroutine function"):
        ms.checkpoint(gen, np.ones(2))


@pytest.mark.parametrize("result", [np.ones(2), 3.0, None, (np.ones(2), 1)])
def test_function_returning_no_variable_is_rejected(result):
    with pytest.raises(TypeError, match="holds no Variable"):
        ms.checkpoint(lambda v: result, ms.Variable(np.ones(2)))


def test_useless_checkpoint_warning_names_the_users_line():
    with pytest.warns(ms.UselessCheckpointWarning) as record:
        ms.checkpoint(F.tanh, ms.Variable(np.ones(3)) * 2)
    assert record[0].filename == __file__


def _linear_block(activation, layers=3):
    W = ms.Parameter(np.random.default_rng(0).standard_normal((64, 64)) / 8)

    def block(h):
        for _ in range(layers):
            h = activation(F.linear(h, W))
        return h
    return block


def test_policy_keeping_what_a_plain_run_would_not_makes_the_checkpoint_useless():
    # tanh's backward reads its output, so dots_saveable's kept Linear outputs are extra:
    # 3 x 16 KiB kept by the policy + the 16 KiB input, against 2 tanh outputs freed.
    x = ms.Variable(np.ones((32, 64))) * 1.0
    with pytest.warns(ms.UselessCheckpointWarning) as record:
        ms.checkpoint(_linear_block(F.tanh), x, policy=ms.policies.dots_saveable)
    message = str(record[0].message)
    assert ("frees 32768 bytes of intermediates but keeps 16384 bytes of inputs alive for "
            "recomputation and 49152 bytes of op outputs that its policy keeps") in message
    assert message.endswith("or use a policy that keeps less.")


def test_policy_keeping_only_what_a_plain_run_keeps_costs_nothing():
    # gelu's backward reads its input: the Linear outputs dots_saveable keeps are kept by a
    # plain run too, and the last one is the block's output; the gelu outputs are freed.
    x = ms.Variable(np.ones((32, 64)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ms.UselessCheckpointWarning)
        y = ms.checkpoint(lambda h: F.linear(_linear_block(F.gelu, 2)(h), ms.Parameter(
            np.eye(64))), x, policy=ms.policies.dots_saveable)
    y.sum().backward()
    plain = ms.Variable(np.ones((32, 64)))
    F.linear(_linear_block(F.gelu, 2)(plain), ms.Parameter(np.eye(64))).sum().backward()
    np.testing.assert_allclose(x.grad, plain.grad, rtol=1e-12)


def test_threads_training_checkpointed_dropout_recompute_the_forward_masks():
    # 8 threads each train a checkpointed dropout block; each thread's gradient must equal
    # the one computed from its own forward mask (the dropout scale is recovered from y).
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for _ in range(20):
                x = ms.Variable(rng.standard_normal(64) + 3.0)
                y = ms.checkpoint(lambda v: F.dropout(v * v, 0.5) * 1.0, x)
                y.sum().backward()
                kept = y.array != 0
                expected = np.where(kept, 2 * x.array * 2.0, 0.0)
                if not np.allclose(x.grad, expected):
                    errors.append(seed)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("check", ["metadata", "checksum", "none"])
def test_every_determinism_check_drops_the_intermediates(check):
    live = _live_after_forward(
        lambda x: ms.checkpoint(lambda v: F.tanh(F.tanh(F.tanh(v) * 2.0)), x, determinism_check=check))
    assert live < 1.1


def test_option_that_is_also_a_parameter_of_fn_is_reported():
    def block(v, policy=None):
        return F.tanh(F.tanh(v))

    with pytest.raises(TypeError, match="both checkpoint's own option and a parameter of"):
        ms.checkpoint(block, np.ones(2), policy=ms.policies.dots_saveable)
    ms.checkpoint(block, ms.Variable(np.ones(2)) * 1.0)   # not given: no clash
