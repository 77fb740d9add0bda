"""@checkpointed: mark a function, method or whole module so its call is checkpointed.

Built on wrapt, so the wrapped object keeps its name, docstring and signature,
binds correctly as a method, and a wrapped Module instance stays a transparent
proxy (attributes, parameters, ``isinstance``) whose call is checkpointed.

>>> import numpy as np, memsave as ms, memsave.functions as F
>>> @checkpointed
... def block(x):
...     "Two tanh layers."
...     return F.tanh(F.tanh(x))
>>> block.__name__, block.__doc__
('block', 'Two tanh layers.')
>>> block(np.zeros(3)).shape
(3,)
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import wrapt

from memsave.remat.recompute import Policy, run_checkpointed

T = TypeVar("T")


class CheckpointedModule(wrapt.ObjectProxy):
    """A module whose calls are checkpointed; everything else is the module itself."""

    def __init__(self, module: Any, options: dict[str, Any]) -> None:
        super().__init__(module)
        self._self_options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._self_options["enabled"]:
            return self.__wrapped__(*args, **kwargs)
        return run_checkpointed(self.__wrapped__, args, kwargs, **_engine_options(self._self_options))

    def __repr__(self) -> str:
        return f"checkpointed({self.__wrapped__!r})"


def _engine_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k != "enabled"}


def _is_callable_instance(obj: Any) -> bool:
    return callable(obj) and not (inspect.isroutine(obj) or inspect.isclass(obj)
                                  or isinstance(obj, (staticmethod, classmethod)))


def checkpointed(wrapped: T | None = None, *, policy: Policy | None = None,
                 preserve_rng_state: bool = True, determinism_check: str = "metadata",
                 enabled: bool = True) -> T | Callable[[T], T]:
    """Checkpoint every call of a function, method, staticmethod, classmethod or module.

    Use bare (``@checkpointed``) or with options (``@checkpointed(policy=...)``);
    ``checkpointed(module)`` wraps a module instance.  ``enabled=False`` makes it a
    plain call.  Options are those of :func:`memsave.checkpoint`.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> class Net:
    ...     @checkpointed(preserve_rng_state=False)
    ...     def block(self, x):
    ...         return F.tanh(F.tanh(x))
    >>> Net().block(np.zeros(2)).array
    array([0., 0.])
    """
    options = dict(policy=policy, preserve_rng_state=preserve_rng_state,
                   determinism_check=determinism_check, enabled=enabled)
    if wrapped is None:
        return functools.partial(checkpointed, **options)
    if _is_callable_instance(wrapped):
        return CheckpointedModule(wrapped, options)

    @wrapt.decorator
    def wrapper(fn: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        if not enabled:
            return fn(*args, **kwargs)
        return run_checkpointed(fn, args, kwargs, **_engine_options(options))

    return wrapper(wrapped)
