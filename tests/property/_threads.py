"""Running jobs in threads that interleave finely, for the thread properties."""
import sys
import threading

from hypothesis import strategies as st

from ._programs import DETERMINISTIC_OPS, programs, run_step

THREADS = 8


def in_threads(jobs):
    """Run ``jobs`` (callables) in one thread each, started together; their results in order.

    The interpreter switches threads every 10 microseconds meanwhile (not every 5 ms), so
    that threads interleave inside even the short window of a small recomputation.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        return _runin_threads(jobs)
    finally:
        sys.setswitchinterval(interval)


def _runin_threads(jobs):
    start = threading.Barrier(len(jobs))
    results: list = [None] * len(jobs)

    def run(i, job):
        start.wait()
        try:
            results[i] = ("ok", job())
        except BaseException as error:  # noqa: BLE001 - reported by the test
            results[i] = ("error", error)

    threads = [threading.Thread(target=run, args=(i, job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for kind, value in results:
        if kind == "error":
            raise value
    return [value for _, value in results]


DROPOUT_PROGRAMS = programs(ops=DETERMINISTIC_OPS + ("dropout",), must_use=("dropout",),
                            shapes=st.just((4, 5)))


def train_while_drawing(program, draw):
    """Train ``program`` (checkpointed, 5 steps) in one thread while another calls ``draw()``
    until the training ends; what the other thread drew."""
    done = threading.Event()

    def trainer():
        try:
            for _ in range(5):
                run_step(program, True, seed_rng=False)
        finally:
            done.set()

    def observer():
        drawn = []
        while not done.is_set() or len(drawn) < 10:
            drawn.append(draw())
        return drawn

    return in_threads([trainer, observer])[1]
