"""Optimizer: the base class of SGD, Adam and AdamW.

An optimizer holds a flat list of parameters and its hyperparameters as plain
attributes (``opt.lr = 1e-4`` is a learning-rate schedule).  ``step()`` updates
each parameter that has a gradient, in place on ``param.array``; per-parameter
state (momentum buffers, moments) lives on the parameter's device.

>>> import numpy as np, memsave as ms
>>> from memsave.optim import SGD
>>> w = ms.Parameter(np.array([1.0, 2.0]))
>>> opt = SGD([w], lr=0.5)
>>> (w * w).sum().backward(); opt.step()
>>> w.array
array([0., 0.])
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import numpy

from memsave import backend
from memsave.core.variable import Variable

__all__ = ["Optimizer", "checked_hyperparameter"]


def checked_hyperparameter(owner: str, name: str, value: Any, high: float | None = None) -> float:
    """``value`` as a float in ``[0, high)`` (``[0, inf)`` without ``high``), or an error
    naming ``owner``'s argument ``name``: TypeError for a non-number (a str, a bool, an
    array), ValueError for a number out of range.

    >>> checked_hyperparameter("SGD", "lr", numpy.float32(0.5))
    0.5
    >>> checked_hyperparameter("SGD", "lr", "0.1")
    Traceback (most recent call last):
    ...
    TypeError: SGD: lr must be a real number, got '0.1' (str); pass a float such as lr=0.1
    """
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(
            value, (int, float, numpy.integer, numpy.floating)):
        raise TypeError(f"{owner}: {name} must be a real number, got {value!r} "
                        f"({type(value).__name__}); pass a float such as {name}=0.1")
    number = float(value)
    if not (math.isfinite(number) and number >= 0 and (high is None or number < high)):
        expected = f"in [0, {high:g})" if high is not None else "a finite number >= 0"
        raise ValueError(f"{owner}: {name} must be {expected}, got {value!r}")
    return number


class Optimizer:
    """Base class: subclasses name their ``hyperparameters`` and implement ``update_one``.

    >>> import numpy as np, memsave as ms
    >>> class SignSGD(Optimizer):
    ...     hyperparameters = ("lr",)
    ...     def __init__(self, params, lr):
    ...         super().__init__(params); self.lr = lr
    ...     def update_one(self, param, grad, state):
    ...         param.array -= self.lr * np.sign(grad)
    >>> w = ms.Parameter(np.array([3.0, -3.0])); w.grad = np.array([0.5, -2.0])
    >>> SignSGD([w], lr=1.0).step(); w.array
    array([ 2., -2.])
    """

    hyperparameters: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Variable]) -> None:
        if isinstance(params, Variable):
            raise TypeError("an optimizer takes an iterable of parameters, got a single "
                            "Variable; wrap it in a list or pass model.parameters()")
        owner = type(self).__name__
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"{owner}: params must be an iterable of Parameters (model.parameters()), "
                            f"got {type(params).__name__}") from None
        unique: dict[int, Variable] = {}
        for i, p in enumerate(params):
            if not isinstance(p, Variable):
                raise TypeError(f"{owner}: parameter {i} is of type {type(p).__name__}, not a Parameter; "
                                "pass model.parameters() or a list of memsave.Parameter")
            if p.creator is not None:
                raise ValueError(f"{owner}: parameter {i} (shape {p.shape}) was computed by "
                                 f"{type(p.creator).__name__}; an optimizer updates leaves: pass the "
                                 "Parameters it was computed from")
            if p.dtype.kind != "f":
                raise TypeError(f"{owner}: parameter {i} has dtype {p.dtype}; only floating-point "
                                "Parameters can be optimized")
            unique.setdefault(id(p), p)
        self.params: list[Variable] = list(unique.values())
        if not self.params:
            raise ValueError(f"{owner} got an empty parameter list; pass model.parameters() of a "
                             "model that has parameters")
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def step(self) -> None:
        """Update every parameter whose ``grad`` is not None, in place.

        >>> import numpy as np, memsave as ms
        >>> from memsave.optim import SGD
        >>> w = ms.Parameter(np.array([1.0])); SGD([w], lr=0.1).step(); w.array  # no grad: kept
        array([1.])
        """
        for param, state in zip(self.params, self.state):
            grad = param.grad
            if grad is not None:
                self.update_one(param, grad, state)

    def step_in_backward(self) -> None:
        """From now on, update each parameter inside ``backward()`` as soon as its gradient is
        complete, then free that gradient: the parameter gradients never all exist at once
        (LOMO's fused update; torch's post-accumulate-grad hooks).  Do not call :meth:`step`
        as well; undo with :meth:`stop_step_in_backward`.  Needs an update that looks at one
        parameter at a time (not global-norm clipping).

        >>> import numpy as np, memsave as ms
        >>> from memsave.optim import SGD
        >>> w = ms.Parameter(np.array([1.0, 2.0])); opt = SGD([w], lr=0.5)
        >>> opt.step_in_backward()
        >>> (w * w).sum().backward()
        >>> w.array, w.grad is None
        (array([0., 0.]), True)
        >>> opt.stop_step_in_backward()
        """
        if getattr(self, "_backward_hooks", None):
            return
        self._backward_hooks = []
        for param, state in zip(self.params, self.state):
            def update(p: Variable, state: dict[str, Any] = state) -> None:
                grad = p.grad
                if grad is not None:
                    self.update_one(p, grad, state)
                    p.cleargrad()

            self._backward_hooks.append(param.register_post_accumulate_grad_hook(update))

    def stop_step_in_backward(self) -> None:
        """Stop updating inside backward (see :meth:`step_in_backward`)."""
        for handle in getattr(self, "_backward_hooks", None) or ():
            handle.remove()
        self._backward_hooks = []

    def update_one(self, param: Variable, grad: Any, state: dict[str, Any]) -> None:
        """Update ``param.array`` in place from ``grad``; ``state`` is this parameter's dict."""
        raise NotImplementedError(f"{type(self).__name__} does not define update_one()")

    def zero_grad(self) -> None:
        """Clear (set to None) the gradient of every parameter.

        >>> import numpy as np, memsave as ms
        >>> from memsave.optim import SGD
        >>> w = ms.Parameter(np.ones(1)); w.grad = np.ones(1)
        >>> SGD([w], lr=0.1).zero_grad(); w.grad is None
        True
        """
        for param in self.params:
            param.cleargrad()

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters and per-parameter state, arrays copied to NumPy.

        >>> import numpy as np, memsave as ms
        >>> from memsave.optim import SGD
        >>> SGD([ms.Parameter(np.ones(1))], lr=0.1, momentum=0.9).state_dict()["hyperparameters"]
        {'lr': 0.1, 'momentum': 0.9, 'nesterov': False, 'weight_decay': 0.0}
        """
        return {
            "type": type(self).__name__,
            "hyperparameters": {name: copy.deepcopy(getattr(self, name))
                                for name in self.hyperparameters},
            "state": [{key: backend.to_cpu(v).copy() if backend.is_array(v) else v
                       for key, v in s.items()} for s in self.state],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by :meth:`state_dict` (same parameter order).

        Arrays are copied onto each parameter's device.

        >>> import numpy as np, memsave as ms
        >>> from memsave.optim import Adam
        >>> w = ms.Parameter(np.ones(2)); w.grad = np.ones(2)
        >>> a = Adam([w], lr=0.1); a.step()
        >>> b = Adam([w]); b.load_state_dict(a.state_dict()); b.lr, b.state[0]["step"]
        (0.1, 1)
        """
        kind = state_dict.get("type")
        if kind is not None and kind != type(self).__name__:
            raise ValueError(f"state dict is for a {kind} optimizer, not {type(self).__name__}")
        states = state_dict["state"]
        if len(states) != len(self.params):
            raise ValueError(f"state dict holds state for {len(states)} parameters, this "
                             f"{type(self).__name__} has {len(self.params)}")
        new_states = []
        for i, (param, saved) in enumerate(zip(self.params, states)):
            xp = backend.get_array_module(param.array)
            restored = {}
            for key, value in saved.items():
                if backend.is_array(value):
                    if value.shape != param.shape:
                        raise ValueError(f"state {key!r} of parameter {i} has shape {value.shape},"
                                         f" the parameter has shape {param.shape}")
                    value = xp.array(value, dtype=param.dtype)
                restored[key] = value
            new_states.append(restored)
        for name, value in state_dict["hyperparameters"].items():
            if name not in self.hyperparameters:
                raise ValueError(f"unknown hyperparameter {name!r} for {type(self).__name__}; "
                                 f"expected {list(self.hyperparameters)}")
            setattr(self, name, copy.deepcopy(value))
        self.state = new_states

    def __repr__(self) -> str:
        hyper = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.hyperparameters)
        return f"{type(self).__name__}({len(self.params)} parameters, {hyper})"
