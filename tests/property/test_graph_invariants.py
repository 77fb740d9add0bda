"""What a user may do around a step must not change its gradients silently, plain or
checkpointed: hold or drop intermediates, deep-copy inputs or modules, train in float32."""
import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F

from ._programs import DETERMINISTIC_OPS, RANDOM_OPS, assert_same_step, examples, programs, run_step

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")

EVERY_OP = DETERMINISTIC_OPS + RANDOM_OPS


@examples(0.5)
@given(programs(ops=EVERY_OP), st.booleans())
def test_holding_intermediates_changes_no_derivative(program, checkpointed):
    # Ops retain outputs (tanh, sigmoid, exp, ...) for backward; whether the user still
    # holds those Variables must not change first or second derivatives.
    held = run_step(program, checkpointed, second_order=True, keep_intermediates=True)
    dropped = run_step(program, checkpointed, second_order=True, keep_intermediates=False)
    assert_same_step(dropped, held, program, what="intermediates dropped")


@examples(0.5)
@given(programs(ops=EVERY_OP), st.booleans())
def test_deep_copied_inputs_are_independent(program, checkpointed):
    originals: list = []

    def copies(arrays):
        originals.extend(ms.Variable(a.copy()) for a in arrays)
        return [copy.deepcopy(x) for x in originals]

    step = run_step(program, checkpointed, make_inputs=copies)
    assert all(x.grad is None for x in originals), f"a deep copy's gradient reached the original\n{program}"
    assert_same_step(step, run_step(program, checkpointed), program, what="deep copies")


@examples(0.25)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.integers(0, 2**16), st.booleans())
def test_deep_copied_module_is_independent(sizes, seed, checkpointed):
    ms.random.seed(seed)
    model = ms.nn.MLP(sizes, activation=F.tanh)
    twin = copy.deepcopy(model)
    x = np.random.default_rng(seed).standard_normal((2, sizes[0])).astype(np.float32)

    def grads(m):
        y = ms.checkpoint(m, x) if checkpointed else m(x)
        F.sum(y * y).backward()
        return [p.grad.copy() for p in m.parameters()]

    twin_grads = grads(twin)
    assert all(p.grad is None for p in model.parameters()), "the copy's gradients reached the original"
    for a, b in zip(twin_grads, grads(model)):
        np.testing.assert_array_equal(a, b)


@examples(0.5)
@given(programs(ops=EVERY_OP, dtypes=(np.float32,)), st.booleans())
def test_float32_gradients_stay_float32(program, checkpointed):
    step = run_step(program, checkpointed)
    for i, (dtype, grad_dtype) in enumerate(step.grad_dtypes):
        assert grad_dtype in (None, dtype), f"gradient {i} is {grad_dtype}, its Variable {dtype}\n{program}"
