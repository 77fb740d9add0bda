"""NumPy's global RNG is shared by every thread: a checkpointed block that never draws from
it must neither touch it nor fail because another thread (a data loader) draws from it."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ._programs import examples
from ._threads import DROPOUT_PROGRAMS, train_while_drawing

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")


@examples(0.1)
@given(DROPOUT_PROGRAMS, st.integers(0, 2**16))
def test_a_block_that_never_draws_from_numpy_leaves_its_global_stream_alone(program, seed):
    # The program draws from memsave.random only; a thread drawing from NumPy's global RNG
    # meanwhile (a data loader) must see the seeded sequence, and training must not fail.
    np.random.seed(seed)
    drawn = train_while_drawing(program, lambda: int(np.random.randint(0, 2**62)))
    expected = np.random.RandomState(seed).randint(0, 2**62, len(drawn)).tolist()
    assert drawn == expected, f"NumPy's global stream seen by another thread changed\n{program}"
