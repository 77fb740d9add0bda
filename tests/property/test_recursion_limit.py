"""Process-wide interpreter state is not the engine's to keep: recomputations in 8 threads
(nested checkpoints, so each raises its recursion headroom) leave sys.getrecursionlimit()
where it was."""
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ._programs import DETERMINISTIC_OPS, examples, programs, run_step
from ._threads import THREADS, in_threads

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")


@examples(0.1)
@given(st.lists(programs(ops=DETERMINISTIC_OPS, odds=1), min_size=THREADS, max_size=THREADS))
def test_threads_leave_the_recursion_limit_alone(progs):
    before = sys.getrecursionlimit()
    in_threads([lambda p=p: [run_step(p, True, seed_rng=False) for _ in range(3)] for p in progs])
    assert sys.getrecursionlimit() == before
