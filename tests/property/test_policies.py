"""Random programs whose checkpoints each get a random policy (memsave.policies: nothing,
everything, dots, offload, names, op labels, combine): a policy changes what is kept, never
the outputs, derivatives, BatchNorm statistics or RNG streams."""
import pytest
from hypothesis import given

from ._programs import DETERMINISTIC_OPS, GRAD_OPS, RANDOM_OPS, assert_same_step, examples, programs, run_step

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")


# Ops that save arrays other than their outputs (a condition, ids, an index, a mask) or run
# grad() inside: a kept (SAVE) output must still replay those saves.
SAVE_MORE_THAN_OUTPUTS = ("where", "embed_id", "fancy_index", "clip", "max_axis", "dropout", "inner_step",
                          "grad_inside")


@examples(0.75)
@given(programs(ops=DETERMINISTIC_OPS + RANDOM_OPS + GRAD_OPS, policies=True,
                must_use=SAVE_MORE_THAN_OUTPUTS))
def test_checkpoint_policies_change_nothing_but_memory(program):
    second_order = program.seed % 2 == 0
    assert_same_step(run_step(program, True, second_order=second_order),
                     run_step(program, False, second_order=second_order), program)
