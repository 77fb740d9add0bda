"""An array written in place between forward and backward (an input, a parameter: an
optimizer step taken too early) gives an error naming its shape, or changes nothing;
never a silently wrong gradient.  Plain and checkpointed."""
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ._programs import DETERMINISTIC_OPS, RANDOM_OPS, assert_same_step, examples, programs, run_step

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")

EVERY_OP = DETERMINISTIC_OPS + RANDOM_OPS


@examples(0.5)
@given(programs(ops=EVERY_OP), st.integers(0, 2**8), st.booleans())
def test_in_place_write_between_forward_and_backward_is_an_error_or_harmless(program, which,
                                                                              checkpointed):
    written: list = []

    def write(variables):
        v = variables[which % len(variables)]
        written.append(v.shape)
        v.array[...] = v.array * 0.5 + 0.25

    try:
        step = run_step(program, checkpointed, after_forward=write)
    except Exception as error:  # noqa: BLE001 - the message decides below
        message = str(error)
        assert str(written[0]) in message and re.search(r"in[- ]place|modified", message, re.I), \
            f"unclear error for an in-place write: {message}\n{program}"
        return
    assert_same_step(step, run_step(program, checkpointed), program,
                     what=f"after an in-place write to an array of shape {written[0]}")
