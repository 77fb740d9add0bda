"""Random programs over every op family, plain vs checkpointed: same outputs, first and
second derivatives, BatchNorm running statistics and RNG streams after the step
(float64 to 1e-10; float32 to 1e-6).  See _programs.py for what a program is."""
import pytest
from hypothesis import given

from ._programs import (
    DETERMINISTIC_OPS,
    GRAD_OPS,
    NONSCALAR,
    RANDOM_OPS,
    SCALAR,
    assert_same_step,
    depth,
    examples,
    programs,
    run_step,
)

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")

EVERY_OP = DETERMINISTIC_OPS + RANDOM_OPS


@examples(1.5)
@given(programs(ops=EVERY_OP, shapes=NONSCALAR))
def test_checkpointed_program_matches_plain(program):
    assert_same_step(run_step(program, True), run_step(program, False), program)


@examples(1.0)
@given(programs(ops=EVERY_OP, shapes=NONSCALAR))
def test_second_derivatives_match_plain(program):
    assert_same_step(run_step(program, True, second_order=True),
                     run_step(program, False, second_order=True), program)


@examples(1.0)
@given(programs(ops=EVERY_OP, shapes=NONSCALAR, must_use=RANDOM_OPS))
def test_random_draws_are_replayed_and_streams_end_where_plain_leaves_them(program):
    # dropout draws from memsave.random, numpy_noise from NumPy's global RNG (Chainer style).
    assert_same_step(run_step(program, True, second_order=program.seed % 2 == 0),
                     run_step(program, False, second_order=program.seed % 2 == 0), program)


@examples(0.5)
@given(programs(ops=EVERY_OP, shapes=NONSCALAR, odds=1, max_steps=5))
def test_deeply_nested_checkpoints_match_plain(program):
    assert depth(program.tree) == 4
    assert_same_step(run_step(program, True, second_order=True),
                     run_step(program, False, second_order=True), program)


@examples(1.0)
@given(programs(ops=EVERY_OP, shapes=SCALAR))
def test_zero_dim_programs_match_plain(program):
    # 0-d arrays through absolute, clip, max, min, dropout: ops save NumPy scalars.
    assert_same_step(run_step(program, True, second_order=program.seed % 2 == 0),
                     run_step(program, False, second_order=program.seed % 2 == 0), program)


@examples(0.75)
@given(programs(ops=EVERY_OP + GRAD_OPS, must_use=GRAD_OPS))
def test_grad_inside_a_checkpoint_matches_plain(program):
    # memsave.grad(create_graph=True) inside the checkpointed function (a gradient penalty).
    assert_same_step(run_step(program, True, second_order=program.seed % 2 == 0),
                     run_step(program, False, second_order=program.seed % 2 == 0), program)
