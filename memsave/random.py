"""memsave's random number generators: one ``Generator`` per backend, seedable and restorable.

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

_generators: dict[str, Any] = {}
_seed: int | None = None


def _key(xp: ModuleType) -> str:
    return xp.__name__


def get_generator(xp: ModuleType = np) -> Any:
    """The generator for ``xp`` (numpy or cupy), created on first use.

    >>> get_generator(np).random(()).shape
    ()
    """
    key = _key(xp)
    if key not in _generators:
        _generators[key] = xp.random.default_rng(_seed)
    return _generators[key]


def seed(n: int) -> None:
    """Seed memsave's generators and NumPy's global RNG (and CuPy's when loaded).

    >>> seed(3)
    """
    global _seed
    _seed = int(n)
    _generators.clear()
    np.random.seed(_seed)
    cupy = backend._import_cupy() if backend._cupy_checked else None
    if cupy is not None:
        cupy.random.seed(_seed)


def get_state() -> dict[str, Any]:
    """A snapshot of every RNG a stochastic op may draw from.

    Generators are created first if need be, so that a snapshot taken before the
    first draw still replays that draw (an unseeded generator starts from OS entropy).

    >>> s = get_state(); x = np.random.rand(); set_state(s)
    >>> x == np.random.rand()
    True
    """
    get_generator(np)
    if backend._cupy is not None:
        get_generator(backend._cupy)
    return {
        "memsave": {k: g.bit_generator.state for k, g in _generators.items()},
        "numpy": np.random.get_state(),
    }


def set_state(state: dict[str, Any]) -> None:
    """Restore a snapshot taken with :func:`get_state`.

    >>> set_state(get_state())
    """
    for key, bit_state in state["memsave"].items():
        xp = np if key == "numpy" else backend._import_cupy()
        get_generator(xp).bit_generator.state = bit_state
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
