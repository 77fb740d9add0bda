"""Checkpointing under threads: 8 threads, each with its own program, get exactly what each
program gets alone; a recomputation never changes the random numbers another thread sees."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F

from ._programs import DETERMINISTIC_OPS, GRAD_OPS, assert_same_step, examples, programs, run_step
from ._threads import DROPOUT_PROGRAMS, THREADS, in_threads, train_while_drawing

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")


@examples(0.2)
@given(st.lists(programs(ops=DETERMINISTIC_OPS + GRAD_OPS), min_size=THREADS, max_size=THREADS),
       st.booleans())
def test_eight_threads_get_what_each_program_gets_alone(progs, second_order):
    alone = [run_step(p, True, second_order=second_order, seed_rng=False) for p in progs]
    together = in_threads([lambda p=p: run_step(p, True, second_order=second_order, seed_rng=False)
                            for p in progs])
    for program, a, b in zip(progs, together, alone):
        assert_same_step(a, b, program, what="in a thread")


def _square_of_dropout(v, ratio):
    return F.square(F.dropout(v, ratio))


@examples(0.1)
@given(st.floats(0.2, 0.8), st.integers(2, 6), st.integers(0, 2**16))
def test_dropout_masks_recomputed_in_threads_are_forward_masks(ratio, steps, seed):
    # y = (mask * v / (1 - ratio))**2, so dy/dv = 2 y / v: any other mask in the
    # recomputation shows as a gradient that does not fit y.
    def train(i):
        v0 = np.random.default_rng([seed, i]).uniform(0.5, 1.5, (16, 16))
        wrong = 0
        for _ in range(steps):
            v = ms.Variable(v0.copy())
            y = ms.checkpoint(_square_of_dropout, v, ratio)
            F.sum(y).backward()
            wrong += not np.allclose(v.grad, 2 * y.array / v0, rtol=1e-12, atol=0)
        return wrong

    wrong = in_threads([lambda i=i: train(i) for i in range(THREADS)])
    assert sum(wrong) == 0, f"{sum(wrong)} of {THREADS * steps} steps recomputed another mask"


@examples(0.1)
@given(DROPOUT_PROGRAMS)
def test_recomputation_never_rewinds_memsave_random_for_other_threads(program):
    # A rewound generator shows as repeated numbers in the other thread.
    drawn = train_while_drawing(program, lambda: float(ms.random.get_generator(np).random()))
    repeats = len(drawn) - len(set(drawn))
    assert repeats == 0, f"{repeats} repeated memsave.random draws in another thread\n{program}"
