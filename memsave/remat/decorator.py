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

from memsave.remat.recompute import Policy, check_options, run_checkpointed

T = TypeVar("T")


def _call(fn: Callable, args: tuple, kwargs: dict, enabled: bool, options: dict[str, Any]) -> Any:
    if not enabled:
        return fn(*args, **kwargs)
    return run_checkpointed(fn, args, kwargs, **options)


class CheckpointedModule(wrapt.ObjectProxy):
    """A module whose calls are checkpointed; everything else is the module itself."""

    def __init__(self, module: Any, enabled: bool, options: dict[str, Any]) -> None:
        super().__init__(module)
        self._self_enabled = enabled
        self._self_options = options

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _call(self.__wrapped__, args, kwargs, self._self_enabled, self._self_options)

    def __repr__(self) -> str:
        return f"checkpointed({self.__wrapped__!r})"


def _is_callable_instance(obj: Any) -> bool:
    return callable(obj) and not (inspect.isroutine(obj) or inspect.isclass(obj)
                                  or isinstance(obj, (staticmethod, classmethod)))


def checkpointed(wrapped: T | None = None, *, policy: Policy | None = None,
                 preserve_rng_state: bool = True, determinism_check: str = "metadata",
                 early_stop: bool = True, enabled: bool = True,
                 use_reentrant: bool | None = None) -> T | Callable[[T], T]:
    """Checkpoint every call of a function, method, staticmethod, classmethod or module.

    Use bare (``@checkpointed``) or with options (``@checkpointed(policy=...)``);
    ``checkpointed(module)`` wraps a module instance, and ``checkpointed(ModuleClass)``
    makes every instance it creates a checkpointed module.  ``enabled=False`` makes it a
    plain call.  Options are those of :func:`memsave.checkpoint`, checked here, at decoration.

    >>> import numpy as np, memsave as ms, memsave.functions as F
    >>> class Net:
    ...     @checkpointed(preserve_rng_state=False)
    ...     def block(self, x):
    ...         return F.tanh(F.tanh(x))
    >>> Net().block(np.zeros(2)).array
    array([0., 0.])
    """
    options = check_options(policy, preserve_rng_state, determinism_check, early_stop, use_reentrant)
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be True or False, got {enabled!r}")
    if wrapped is None:
        return functools.partial(checkpointed, enabled=enabled, **options)
    if _is_callable_instance(wrapped):
        return CheckpointedModule(wrapped, enabled, options)
    if not (callable(wrapped) or isinstance(wrapped, (staticmethod, classmethod))):
        raise TypeError(f"checkpointed needs a function, method, module or module class, got "
                        f"{type(wrapped).__name__} {wrapped!r}")

    if inspect.isclass(wrapped):
        @wrapt.decorator
        def construct(cls: type, instance: Any, args: tuple, kwargs: dict) -> Any:
            return CheckpointedModule(cls(*args, **kwargs), enabled, options)

        return construct(wrapped)

    @wrapt.decorator
    def wrapper(fn: Callable, instance: Any, args: tuple, kwargs: dict) -> Any:
        return _call(fn, args, kwargs, enabled, options)

    return wrapper(wrapped)
