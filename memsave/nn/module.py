"""Module: the base class of layers and models.

Assigning a :class:`~memsave.Parameter`, a sub-Module or (through
:meth:`Module.register_buffer`) a buffer to an attribute registers it, in
order, as PyTorch does; any other attribute is stored as usual.  From the
registry come dotted names, ``state_dict``, ``train()/eval()`` and device moves.

>>> import numpy as np
>>> from memsave.core.variable import Parameter
>>> class Scale(Module):
...     def __init__(self):
...         super().__init__()
...         self.s = Parameter(np.ones(3, dtype=np.float32))
...     def forward(self, x):
...         return x * self.s
>>> m = Scale()
>>> [name for name, _ in m.named_parameters()]
['s']
>>> m(np.ones(3, dtype=np.float32)).array
array([1., 1., 1.], dtype=float32)
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from memsave import backend
from memsave.core.variable import Parameter
from memsave.errors import StateDictError

__all__ = ["Module", "StateDictError", "LoadResult"]


class LoadResult(NamedTuple):
    """What :meth:`Module.load_state_dict` skipped (both empty when ``strict=True``)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _indent(text: str, spaces: int) -> str:
    return text.replace("\n", "\n" + " " * spaces)


class Module:
    """Base class of layers and models: assign parts in ``__init__``, define ``forward``.

    >>> import numpy as np
    >>> from memsave.nn import Linear
    >>> class Net(Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = Linear(3, 2)
    ...     def forward(self, x):
    ...         return self.fc(x)
    >>> net = Net()
    >>> [name for name, _ in net.named_parameters()]
    ['fc.W', 'fc.b']
    >>> net(np.ones((4, 3), dtype=np.float32)).shape
    (4, 2)
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    # ----- registration -----------------------------------------------------------
    def _registry(self) -> tuple[dict, dict, dict]:
        d = self.__dict__
        if "_parameters" not in d:
            raise AttributeError(
                f"{type(self).__name__}: cannot register parameters, buffers or sub-modules "
                "before Module.__init__() has run; call super().__init__() first in __init__")
        return d["_parameters"], d["_buffers"], d["_modules"]

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (Parameter, Module)):
            params, buffers, modules = self._registry()
            for registry in (params, buffers, modules):
                registry.pop(name, None)
            self.__dict__.pop(name, None)
            (params if isinstance(value, Parameter) else modules)[name] = value
            return
        d = self.__dict__
        if name in d.get("_parameters", ()):
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to parameter {name!r} of "
                                f"{type(self).__name__}: expected a memsave.Parameter or None")
            d["_parameters"][name] = None
        elif name in d.get("_buffers", ()):
            if value is not None and not backend.is_array(value):
                raise TypeError(f"cannot assign {type(value).__name__} to buffer {name!r} of "
                                f"{type(self).__name__}: expected an ndarray or None")
            d["_buffers"][name] = value
        elif name in d.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to sub-module {name!r} of "
                                f"{type(self).__name__}: expected a Module or None")
            d["_modules"][name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; reads __dict__ directly so that copy and
        # pickle (which probe attributes before __init__ has run) never recurse.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                del d[registry][name]
                return
        object.__delattr__(self, name)

    def __dir__(self) -> list[str]:
        d = self.__dict__
        extra = [k for r in ("_parameters", "_buffers", "_modules") for k in d.get(r, ())]
        return sorted(set(super().__dir__()) | set(extra))

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` under ``name`` (``None`` reserves the name, e.g. for a missing bias).

        >>> import numpy as np
        >>> m = Module(); m.register_parameter("w", Parameter(np.zeros(2)))
        >>> list(dict(m.named_parameters()))
        ['w']
        """
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}) needs a memsave.Parameter or None, "
                            f"got {type(param).__name__}")
        self._registry()[0][name] = param

    def register_buffer(self, name: str, array: Any) -> None:
        """Register an array that is state but not trained (BatchNorm's running statistics).

        Buffers appear in :meth:`state_dict` and move with :meth:`to_gpu`/:meth:`to_cpu`.

        >>> import numpy as np
        >>> m = Module(); m.register_buffer("count", np.zeros(1))
        >>> list(m.state_dict())
        ['count']
        """
        if array is not None and not backend.is_array(array):
            raise TypeError(f"register_buffer({name!r}) needs a numpy/cupy ndarray or None, "
                            f"got {type(array).__name__}")
        params, buffers, modules = self._registry()
        params.pop(name, None)
        modules.pop(name, None)
        self.__dict__.pop(name, None)
        buffers[name] = array

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` as a child named ``name`` (names need not be identifiers).

        >>> m = Module(); m.add_module("0", Module())
        >>> [name for name, _ in m.named_children()]
        ['0']
        """
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}) needs a Module, got {type(module).__name__}")
        self._registry()[2][name] = module

    # ----- traversal --------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Direct sub-modules with their attribute names.

        >>> from memsave.nn import Sequential, Linear
        >>> [n for n, _ in Sequential(Linear(2, 2), Linear(2, 1)).named_children()]
        ['0', '1']
        """
        for name, module in self._modules.items():
            if module is not None:
                yield name, module

    def children(self) -> Iterator[Module]:
        """Direct sub-modules.

        >>> from memsave.nn import Sequential, Linear
        >>> len(list(Sequential(Linear(2, 2), Linear(2, 1)).children()))
        2
        """
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """This module (name ``prefix``) and every descendant, each once, with dotted names.

        >>> from memsave.nn import Sequential, Linear
        >>> [n for n, _ in Sequential(Linear(2, 2)).named_modules()]
        ['', '0']
        """
        seen: set[int] = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            kids = [(f"{name}.{k}" if name else k, m) for k, m in module.named_children()]
            stack.extend(reversed(kids))

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, each once (pre-order).

        >>> from memsave.nn import Sequential, Linear
        >>> [type(m).__name__ for m in Sequential(Linear(2, 2)).modules()]
        ['Sequential', 'Linear']
        """
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "", recurse: bool = True
                         ) -> Iterator[tuple[str, Parameter]]:
        """Parameters with dotted names (``"block.fc.W"``); a shared parameter appears once.

        >>> from memsave.nn import Linear
        >>> [(n, p.shape) for n, p in Linear(3, 2).named_parameters()]
        [('W', (2, 3)), ('b', (2,))]
        """
        seen: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for mod_name, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{mod_name}.{name}" if mod_name else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """Every parameter, each once; pass it to an optimizer.

        >>> from memsave.nn import Linear
        >>> sum(p.size for p in Linear(3, 2).parameters())
        8
        """
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """Buffers (non-trained state arrays) with dotted names.

        >>> from memsave.nn import BatchNorm
        >>> [n for n, _ in BatchNorm(3).named_buffers()]
        ['running_mean', 'running_var']
        """
        for mod_name, module in self.named_modules(prefix):
            for name, array in module._buffers.items():
                if array is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), array

    def buffers(self) -> Iterator[Any]:
        """Every buffer array.

        >>> from memsave.nn import BatchNorm
        >>> len(list(BatchNorm(3).buffers()))
        2
        """
        for _, array in self.named_buffers():
            yield array

    # ----- modes and gradients ----------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set ``training`` on this module and every descendant; returns ``self``.

        >>> from memsave.nn import Sequential, Dropout
        >>> net = Sequential(Dropout(0.5)).train(False)
        >>> net[0].training
        False
        """
        for module in self.modules():
            module.training = bool(mode)   # plain assignment: also reaches through proxies
        return self

    def eval(self) -> Module:
        """Evaluation mode: ``train(False)``.

        >>> from memsave.nn import Dropout
        >>> Dropout().eval().training
        False
        """
        return self.train(False)

    def zero_grad(self) -> None:
        """Clear (set to None) the gradient of every parameter.

        >>> import numpy as np
        >>> from memsave.nn import Linear
        >>> fc = Linear(2, 1); fc(np.ones((1, 2), dtype=np.float32)).sum().backward()
        >>> fc.zero_grad(); fc.W.grad is None
        True
        """
        for param in self.parameters():
            param.cleargrad()

    cleargrads = zero_grad

    # ----- state ------------------------------------------------------------------
    def _state_slots(self, prefix: str = "") -> Iterator[tuple[str, Module, str, str]]:
        """(dotted name, owner module, attribute, kind) for every parameter and buffer."""
        for name, param in self._parameters.items():
            if param is not None:
                yield prefix + name, self, name, "parameter"
        for name, array in self._buffers.items():
            if array is not None:
                yield prefix + name, self, name, "buffer"
        for name, module in self.named_children():
            yield from module._state_slots(prefix + name + ".")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Name -> NumPy copy of every parameter and buffer (host memory, detached).

        >>> from memsave.nn import BatchNorm
        >>> sorted(BatchNorm(2).state_dict())
        ['beta', 'gamma', 'running_mean', 'running_var']
        """
        return {name: backend.to_cpu(_slot_array(module, attr, kind)).copy()
                for name, module, attr, kind in self._state_slots()}

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> LoadResult:
        """Copy ``state`` into the parameters and buffers, in place (dtype and device kept).

        Nothing is copied unless everything fits.  With ``strict=True`` a missing or an
        unexpected key is an error; a shape mismatch always is.  The
        :class:`StateDictError` lists every problem at once.

        >>> from memsave.nn import Linear
        >>> a, b = Linear(3, 2), Linear(3, 2)
        >>> b.load_state_dict(a.state_dict())
        LoadResult(missing_keys=[], unexpected_keys=[])
        >>> bool((a.W.array == b.W.array).all())
        True
        """
        slots = {name: (module, attr, kind) for name, module, attr, kind in self._state_slots()}
        missing = [k for k in slots if k not in state]
        unexpected = [k for k in state if k not in slots]
        mismatched = []
        for key, (module, attr, kind) in slots.items():
            if key in state:
                expected = tuple(_slot_array(module, attr, kind).shape)
                got = tuple(np.shape(state[key]))
                if expected != got:
                    mismatched.append((key, expected, got))
        problems = []
        if strict and missing:
            problems.append(f"missing keys: {missing}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        problems += [f"shape mismatch for {key!r}: expected {exp} (the model's), got {got} "
                     f"(the state dict's)" for key, exp, got in mismatched]
        if problems:
            raise StateDictError(f"Error(s) in loading state dict into {type(self).__name__}:\n  "
                                 + "\n  ".join(problems))
        for key, (module, attr, kind) in slots.items():
            if key in state:
                target = _slot_array(module, attr, kind)
                source = state[key]
                xp = backend.get_array_module(target)
                target[...] = backend.to_cpu(source) if xp is np else xp.asarray(source)
        return LoadResult(missing, unexpected)

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to an ``.npz`` file (NumPy appends ``.npz`` if missing).

        >>> import os, tempfile
        >>> from memsave.nn import Linear
        >>> path = os.path.join(tempfile.mkdtemp(), "fc.npz")
        >>> Linear(2, 2).save(path); os.path.exists(path)
        True
        """
        np.savez(path, **self.state_dict())

    def load(self, path: str | os.PathLike, strict: bool = True) -> LoadResult:
        """Read an ``.npz`` written by :meth:`save` and :meth:`load_state_dict` it.

        >>> import os, tempfile
        >>> from memsave.nn import Linear
        >>> path = os.path.join(tempfile.mkdtemp(), "fc")
        >>> a, b = Linear(2, 2), Linear(2, 2)
        >>> a.save(path); _ = b.load(path)   # "fc" or "fc.npz" both work
        >>> bool((a.W.array == b.W.array).all())
        True
        """
        path = os.fspath(path)
        if not os.path.exists(path) and os.path.exists(path + ".npz"):
            path += ".npz"
        with np.load(path, allow_pickle=False) as data:
            state = {key: data[key] for key in data.files}
        return self.load_state_dict(state, strict=strict)

    # ----- devices ----------------------------------------------------------------
    def _move(self, convert: Callable[[Any], Any]) -> Module:
        for param in self.parameters():
            grad = param.grad
            param.array = convert(param.array)
            if grad is not None:
                param.grad = convert(grad)
        for module in self.modules():
            for name, array in module._buffers.items():
                if array is not None:
                    module._buffers[name] = convert(array)
        return self

    def to_gpu(self) -> Module:
        """Move every parameter (and its gradient) and buffer to the GPU (CuPy); returns ``self``.

        Parameters keep their identity, so an optimizer built before the move still works.

        >>> from memsave import backend
        >>> from memsave.nn import Linear
        >>> fc = Linear(2, 2)
        >>> if backend.is_gpu_available():
        ...     _ = fc.to_gpu()
        """
        return self._move(backend.to_gpu)

    def to_cpu(self) -> Module:
        """Move every parameter (and its gradient) and buffer to host memory (NumPy).

        >>> import numpy as np
        >>> from memsave.nn import Linear
        >>> type(Linear(2, 2).to_cpu().W.array) is np.ndarray
        True
        """
        return self._move(backend.to_cpu)

    # ----- calling and printing ---------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The computation; subclasses define it and users call the module instead."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (its settings)."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        lines = ([extra] if extra else []) + [
            f"({name}): {module!r}" for name, module in self.named_children()]
        if not lines:
            return f"{type(self).__name__}()"
        if len(lines) == 1 and not self._modules:
            return f"{type(self).__name__}({extra})"
        return type(self).__name__ + "(\n  " + "\n  ".join(_indent(s, 2) for s in lines) + "\n)"


def _slot_array(module: Module, attr: str, kind: str) -> Any:
    if kind == "parameter":
        return module._parameters[attr].array
    return module._buffers[attr]
