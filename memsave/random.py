"""memsave's random number generator: one NumPy ``Generator`` for both backends, restorable.

Stochastic ops (dropout) draw only from here, so a checkpoint can replay them
exactly by saving and restoring :func:`get_state`.

>>> seed(0); a = get_generator(np).random(2)
>>> seed(0); b = get_generator(np).random(2)
>>> bool((a == b).all())
True
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np

from memsave import backend

_host: np.random.Generator | None = None   # memsave's one generator
_seed: int | None = None


def _host_generator() -> np.random.Generator:
    global _host
    if _host is None:
        _host = np.random.default_rng(_seed)
    return _host


class DeviceGenerator:
    """memsave's generator seen from CuPy: draws on the host, returns CuPy arrays.

    CuPy's own generators cannot report their state, so they could not be replayed
    exactly.  Drawing on the host keeps one stream for both backends (a run on the GPU
    draws the same masks as on the CPU) at the cost of a host-to-device copy per draw.
    """

    def __init__(self, xp: ModuleType) -> None:
        self._xp = xp

    def random(self, size: Any = None, dtype: Any = np.float64) -> Any:
        return self._xp.asarray(_host_generator().random(size, dtype=dtype))

    def standard_normal(self, size: Any = None, dtype: Any = np.float64) -> Any:
        return self._xp.asarray(_host_generator().standard_normal(size, dtype=dtype))

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> Any:
        return self._xp.asarray(_host_generator().uniform(low, high, size))

    def integers(self, low: int, high: int | None = None, size: Any = None) -> Any:
        return self._xp.asarray(_host_generator().integers(low, high, size))


def get_generator(xp: ModuleType = np) -> Any:
    """memsave's generator for ``xp``: a NumPy ``Generator``, or a :class:`DeviceGenerator`
    drawing from it for CuPy.

    >>> get_generator(np).random(()).shape
    ()
    """
    return _host_generator() if xp is np else DeviceGenerator(xp)


def seed(n: int) -> None:
    """Seed memsave's generator and NumPy's global RNG (and CuPy's when loaded).

    >>> seed(3)
    """
    global _seed, _host
    _seed = int(n)
    _host = None
    np.random.seed(_seed)
    if backend._cupy is not None:
        backend._cupy.random.seed(_seed)


def get_state() -> dict[str, Any]:
    """A snapshot of every RNG a stochastic op may draw from.

    Taking it creates memsave's generator if need be, so that a snapshot taken before
    the first draw still replays that draw (an unseeded generator starts from OS entropy).

    >>> s = get_state(); x = np.random.rand(); set_state(s)
    >>> x == np.random.rand()
    True
    """
    return {"memsave": _host_generator().bit_generator.state, "numpy": np.random.get_state()}


def set_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken with :func:`get_state`.

    >>> set_state(get_state())
    """
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
