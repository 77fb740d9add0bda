"""Shared helpers for layer tests: gradcheck of a module w.r.t. its inputs and parameters."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import memsave


def _module_gradcheck(module: memsave.nn.Module, *inputs: Any, fork_rng: bool = False,
                      **kwargs: Any) -> bool:
    """memsave.gradcheck over ``inputs`` and every parameter of ``module``.

    gradcheck hands fresh Variables to the function it checks; they are put in the
    modules' parameter slots for the duration of each call.  ``fork_rng`` makes every
    call draw the same random numbers (dropout).
    """
    slots = [(m, name) for m in module.modules()
             for name, p in m._parameters.items() if p is not None]
    originals = [m._parameters[name] for m, name in slots]

    def fn(*xs: Any) -> Any:
        n = len(inputs)
        for (m, name), v in zip(slots, xs[n:]):
            m._parameters[name] = v
        try:
            if fork_rng:
                with memsave.random.fork_rng():
                    return module(*xs[:n])
            return module(*xs[:n])
        finally:
            for (m, name), p in zip(slots, originals):
                m._parameters[name] = p

    arrays = list(inputs) + [p.array for p in originals]
    return memsave.gradcheck(fn, arrays, **kwargs)


@pytest.fixture
def module_gradcheck() -> Callable[..., bool]:
    return _module_gradcheck
