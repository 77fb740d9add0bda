"""memsave's random number generator: one stream for both backends, replayable per context.

Stochastic ops (dropout) draw from :func:`get_generator`.  A checkpoint *records*
the generator's state before each draw its function makes, and its recomputation
*replays* those draws from a generator private to the recomputing context: the
shared stream is never rewound, so other threads and asyncio tasks never see a
repeated number, and a draw made by another thread in between cannot shift a mask.

>>> seed(0); a = get_generator(np).random(2)
>>> seed(0); b = get_generator(np).random(2)
>>> bool((a == b).all())
True
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from types import ModuleType
from typing import Any

import numpy as np

from memsave import backend
from memsave.errors import CheckpointError

_host: np.random.Generator | None = None   # memsave's one shared generator
_seed: int | None = None
_lock = threading.Lock()                    # makes "read the state, then draw" atomic

# Draw logs of the checkpoints whose forward is running in this context (innermost last),
# and the replay of the checkpoint whose recomputation is running, if any.
_tapes: ContextVar[tuple[list, ...]] = ContextVar("memsave.random.tapes", default=())
_replay: ContextVar[_Replay | None] = ContextVar("memsave.random.replay", default=None)


def _host_generator() -> np.random.Generator:
    global _host
    if _host is None:
        _host = np.random.default_rng(_seed)
    return _host


class _Replay:
    """Re-serves recorded draws, in order, from a generator no one else can see."""

    def __init__(self, states: list) -> None:
        self._states = iter(states)
        self._generator = np.random.Generator(type(_host_generator().bit_generator)(0))

    def next_generator(self) -> np.random.Generator:
        state = next(self._states, None)
        if state is None:
            raise CheckpointError(
                "the recomputation drew more random numbers from memsave.random than the "
                "forward pass did; the checkpointed function must make the same draws every "
                "time it runs on the same inputs")
        self._generator.bit_generator.state = state
        return self._generator


def _draw(method: str, args: tuple, kwargs: dict) -> Any:
    replay, tapes = _replay.get(), _tapes.get()
    if replay is not None:
        generator = replay.next_generator()
        state = generator.bit_generator.state if tapes else None
        result = getattr(generator, method)(*args, **kwargs)
    else:
        with _lock:
            generator = _host_generator()
            state = generator.bit_generator.state if tapes else None
            result = getattr(generator, method)(*args, **kwargs)
    for tape in tapes:
        tape.append(state)
    return result


class Stream:
    """memsave's generator as ops see it: NumPy ``Generator`` methods returning ``xp`` arrays.

    CuPy's own generators cannot report their state, so they could not be replayed; a
    stream for CuPy draws on the host (one stream for both backends: a run on the GPU
    draws the same masks as on the CPU) and copies the result to the device.

    >>> get_generator(np).integers(0, 10, size=3).shape
    (3,)
    """

    def __init__(self, xp: ModuleType = np) -> None:
        self._xp = xp

    def _out(self, value: Any) -> Any:
        return value if self._xp is np else self._xp.asarray(value)

    def random(self, size: Any = None, dtype: Any = np.float64) -> Any:
        return self._out(_draw("random", (size,), {"dtype": dtype}))

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> Any:
        return self._out(_draw("standard_normal", (size,), {"dtype": dtype}))

    def normal(self, loc: Any = 0.0, scale: Any = 1.0, size: Any = None) -> Any:
        return self._out(_draw("normal", (loc, scale, size), {}))

    def uniform(self, low: Any = 0.0, high: Any = 1.0, size: Any = None) -> Any:
        return self._out(_draw("uniform", (low, high, size), {}))

    def integers(self, low: Any, high: Any = None, size: Any = None, dtype: Any = np.int64) -> Any:
        return self._out(_draw("integers", (low, high, size), {"dtype": dtype}))

    def permutation(self, x: Any) -> Any:
        return self._out(_draw("permutation", (x,), {}))

    def choice(self, a: Any, size: Any = None, replace: bool = True, p: Any = None) -> Any:
        return self._out(_draw("choice", (a, size, replace, p), {}))


def get_generator(xp: ModuleType = np) -> Stream:
    """memsave's generator, returning arrays of ``xp`` (numpy or cupy).

    >>> get_generator(np).random(()).shape
    ()
    """
    return Stream(xp)


def seed(n: int) -> None:
    """Seed memsave's generator and NumPy's global RNG (and CuPy's when loaded).

    >>> seed(3)
    """
    global _seed, _host
    with _lock:
        _seed = int(n)
        _host = None
    np.random.seed(_seed)
    if backend._cupy is not None:
        backend._cupy.random.seed(_seed)


def get_state() -> dict[str, Any]:
    """A snapshot of memsave's generator and NumPy's global RNG.

    Taking it creates memsave's generator if need be, so that a snapshot taken before
    the first draw still replays that draw (an unseeded generator starts from OS entropy).

    >>> s = get_state(); x = np.random.rand(); set_state(s)
    >>> x == np.random.rand()
    True
    """
    with _lock:
        return {"memsave": _host_generator().bit_generator.state, "numpy": np.random.get_state()}


def set_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken with :func:`get_state` (process-wide, like ``np.random.set_state``).

    >>> set_state(get_state())
    """
    with _lock:
        _host_generator().bit_generator.state = state["memsave"]
    np.random.set_state(state["numpy"])


@contextlib.contextmanager
def fork_rng() -> Iterator[None]:
    """Draws made inside the block do not advance the RNG streams outside it.

    >>> with fork_rng():
    ...     _ = np.random.rand()
    """
    state = get_state()
    try:
        yield
    finally:
        set_state(state)


# ----- used by checkpoints ------------------------------------------------------------
@contextlib.contextmanager
def recording(tape: list) -> Iterator[None]:
    """Append to ``tape`` the generator state before each memsave draw made in this context.

    >>> tape = []
    >>> with recording(tape):
    ...     _ = get_generator().random(2)
    >>> len(tape)
    1
    """
    token = _tapes.set(_tapes.get() + (tape,))
    try:
        yield
    finally:
        _tapes.reset(token)


@contextlib.contextmanager
def replaying(tape: list) -> Iterator[None]:
    """Serve this context's memsave draws from ``tape`` (recorded with :func:`recording`),
    leaving the shared stream untouched.

    >>> tape = []
    >>> with recording(tape):
    ...     a = get_generator().random(2)
    >>> with replaying(tape):
    ...     b = get_generator().random(2)
    >>> bool((a == b).all())
    True
    """
    token = _replay.set(_Replay(tape))
    try:
        yield
    finally:
        _replay.reset(token)


def numpy_global_state() -> Any:
    """NumPy's global RNG state (``np.random.get_state()``), to tell later whether it moved.

    >>> numpy_global_moved(numpy_global_state())
    False
    """
    return np.random.get_state()


def numpy_global_moved(before: Any) -> bool:
    """Whether NumPy's global RNG drew since ``before`` was taken.

    >>> s = numpy_global_state(); _ = np.random.rand(); numpy_global_moved(s)
    True
    """
    now: Any = np.random.get_state()
    return now[2] != before[2] or now[3:] != before[3:] or not np.array_equal(now[1], before[1])


def other_threads_running() -> bool:
    """Whether a non-daemon thread besides the current one is alive (NumPy's global RNG is shared
    by all threads).  Daemon threads (progress-bar monitors and the like) are taken not to draw.

    >>> other_threads_running()
    False
    """
    current = threading.current_thread()
    return any(t is not current and not t.daemon and t.is_alive() for t in threading.enumerate())


@contextlib.contextmanager
def numpy_global_replay(state: tuple, where: str) -> Iterator[None]:
    """Run the block with NumPy's global RNG set to ``state``, then put back the current state.

    NumPy's global RNG is one per process, so this is allowed only while no other thread
    runs; otherwise a CheckpointError asks for memsave.random, which replays privately.

    >>> s = numpy_global_state(); a = np.random.rand()
    >>> with numpy_global_replay(s, "example"):
    ...     b = np.random.rand()
    >>> a == b
    True
    """
    if other_threads_running():
        raise CheckpointError(
            f"{where} drew from NumPy's global RNG (np.random.*) and must replay those draws, "
            "but other threads are running and share that RNG. Draw from "
            "memsave.random.get_generator() instead: its draws replay privately per thread.")
    outer = np.random.get_state()
    np.random.set_state(state)
    try:
        yield
    finally:
        np.random.set_state(outer)
