"""Variable (what users hold) and VariableNode (what the graph holds).

A FunctionNode keeps its inputs' VariableNodes, never their arrays; an array is
kept for backward only when an op asks for it.  Dropping the last reference to
an intermediate Variable therefore frees its array.

>>> import numpy as np
>>> x = Variable(np.array([1.0, 2.0]), name="x")
>>> y = (x * x).sum()
>>> y.backward()
>>> x.grad
array([2., 4.])
"""
from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from memsave import backend
from memsave.errors import DTypeError, ShapeError

if TYPE_CHECKING:
    from memsave.core.function import FunctionNode


class VariableNode:
    """Graph-side record of a Variable: creator, generation, shape, dtype. Holds no array."""

    __slots__ = ("creator", "generation", "shape", "dtype", "name", "requires_grad",
                 "_variable", "__weakref__")

    def __init__(self, variable: Variable, array: Any, requires_grad: bool, name: str | None,
                 creator: FunctionNode | None = None) -> None:
        self.creator = creator
        self.generation = 0 if creator is None else creator.generation + 1
        self.shape = array.shape
        self.dtype = array.dtype
        self.name = name
        self.requires_grad = requires_grad
        self._variable = weakref.ref(variable)

    @property
    def variable(self) -> Variable | None:
        """The user-side Variable if it is still alive."""
        return self._variable()

    def set_creator(self, creator: FunctionNode) -> None:
        self.creator = creator
        self.generation = creator.generation + 1

    def __repr__(self) -> str:
        return f"VariableNode(shape={self.shape}, dtype={self.dtype}, name={self.name!r})"


class HookHandle:
    """Returned by :meth:`Variable.register_post_accumulate_grad_hook`; ``remove()`` undoes it."""

    def __init__(self, hooks: list, hook: Any) -> None:
        self._hooks, self._hook = hooks, hook

    def remove(self) -> None:
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


# Hooks run when a leaf's gradient is complete in backward(); keyed by graph node.
_grad_hooks: weakref.WeakKeyDictionary[VariableNode, list] = weakref.WeakKeyDictionary()


class Variable:
    """An array with an autograd history.

    ``requires_grad`` defaults to True for floating-point arrays (Chainer's convention)
    and to False for integer and bool arrays (labels, indices), which cannot have
    gradients; arrays passed directly to functions become constants.

    >>> import numpy as np
    >>> v = Variable(np.zeros((2, 3), dtype=np.float32))
    >>> v.shape, v.dtype, len(v)
    ((2, 3), dtype('float32'), 2)
    """

    __slots__ = ("_array", "_node", "_grad_var", "__weakref__")
    __array_priority__ = 200  # NumPy defers `ndarray op Variable` to our reflected operators

    def __init__(self, array: Any, name: str | None = None, requires_grad: bool | None = None) -> None:
        if isinstance(array, Variable):
            raise TypeError("Variable(...) got a Variable; use it directly or call .detach()")
        if not backend.is_array(array):
            raise TypeError(
                f"Variable needs a numpy or cupy ndarray, got {type(array).__name__}; "
                "wrap Python data with numpy.asarray first"
            )
        if requires_grad is None:
            requires_grad = array.dtype.kind == "f"
        elif not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad must be True, False or None, got {requires_grad!r}")
        elif requires_grad:
            _check_differentiable_dtype(array.dtype)
        self._array = array
        self._grad_var: Variable | None = None
        self._node = VariableNode(self, array, requires_grad, name)

    @classmethod
    def _of_output(cls, array: Any, creator: FunctionNode | None) -> Variable:
        """An op's output (``creator`` None: computed without recording a graph).  The array is
        known to be valid, so nothing is checked."""
        var = cls.__new__(cls)
        var._array = array
        var._grad_var = None
        var._node = VariableNode(var, array, creator is not None, None, creator)
        return var

    @classmethod
    def _on_node(cls, array: Any, node: VariableNode) -> Variable:
        """A Variable that stands for an existing graph node (used by backward)."""
        var = cls.__new__(cls)
        var._array = array
        var._grad_var = None
        var._node = node
        return var

    # ----- data -------------------------------------------------------------------
    @property
    def array(self) -> Any:
        """The underlying numpy/cupy array."""
        return self._array

    @array.setter
    def array(self, value: Any) -> None:
        if not backend.is_array(value):
            raise TypeError(f"Variable.array must be an ndarray, got {type(value).__name__}")
        self._array = value
        self._node.shape = value.shape
        self._node.dtype = value.dtype

    data = array

    @property
    def node(self) -> VariableNode:
        return self._node

    @property
    def creator(self) -> FunctionNode | None:
        return self._node.creator

    @property
    def generation(self) -> int:
        return self._node.generation

    @property
    def name(self) -> str | None:
        return self._node.name

    @name.setter
    def name(self, value: str | None) -> None:
        self._node.name = value

    @property
    def requires_grad(self) -> bool:
        return self._node.requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"requires_grad must be True or False, got {value!r}")
        if self._node.creator is not None and not value:
            raise ValueError("requires_grad can only be switched off on a leaf; use .detach()")
        if value:
            _check_differentiable_dtype(self.dtype)
        self._node.requires_grad = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self._array.shape

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def size(self) -> int:
        return self._array.size

    @property
    def dtype(self) -> Any:
        return self._array.dtype

    @property
    def xp(self) -> Any:
        """The array module (numpy or cupy) of this Variable."""
        return backend.get_array_module(self._array)

    def __len__(self) -> int:
        return len(self._array)

    def __repr__(self) -> str:
        prefix = type(self).__name__ + "("
        body = repr(self._array).replace("\n", "\n" + " " * len(prefix))
        name = f", name={self.name!r}" if self.name else ""
        return f"{prefix}{body}{name})"

    # ----- gradients --------------------------------------------------------------
    @property
    def grad_var(self) -> Variable | None:
        """The gradient as a Variable (differentiable when create_graph=True)."""
        return self._grad_var

    @grad_var.setter
    def grad_var(self, value: Variable | None) -> None:
        if value is not None:
            if not isinstance(value, Variable):
                raise TypeError(f"grad_var must be a Variable or None, got {type(value).__name__}")
            if value._array.shape != self._array.shape:
                raise ShapeError(f"gradient shape {value.shape} does not match variable shape "
                                 f"{self.shape}")
            if value._array.dtype != self._array.dtype:
                raise DTypeError(f"gradient dtype {value.dtype} does not match variable dtype "
                                 f"{self.dtype}; cast it with .astype({self.dtype.name!r})")
        self._grad_var = value

    @property
    def grad(self) -> Any:
        """The gradient as an array, or None."""
        return None if self._grad_var is None else self._grad_var.array

    @grad.setter
    def grad(self, value: Any) -> None:
        self.grad_var = None if value is None else Variable(value, requires_grad=False)

    def cleargrad(self) -> None:
        """Forget the gradient (set it to None): the next backward starts from nothing.

        >>> import numpy as np
        >>> v = Variable(np.ones(2)); v.grad = np.ones(2); v.cleargrad(); v.grad is None
        True
        """
        self._grad_var = None

    def zerograd(self) -> None:
        """Set the gradient to an array of zeros (Chainer's zerograd); prefer :meth:`cleargrad`.

        >>> import numpy as np
        >>> v = Variable(np.ones(2)); v.zerograd(); v.grad
        array([0., 0.])
        """
        self._grad_var = Variable(self.xp.zeros_like(self._array), requires_grad=False)

    def backward(self, grad: Any = None, retain_grad: bool = False,
                 retain_graph: bool | None = None, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``grad`` defaults to ones for a single-element Variable.

        >>> import numpy as np
        >>> x = Variable(np.array(3.0))
        >>> (x * x).backward()
        >>> float(x.grad)
        6.0
        """
        from memsave.core.backprop import backward
        backward([self], [grad], retain_grad=retain_grad, retain_graph=retain_graph,
                 create_graph=create_graph)

    def register_post_accumulate_grad_hook(self, hook: Any) -> HookHandle:
        """Call ``hook(variable)`` in ``backward()`` as soon as this leaf's gradient is complete
        (every op reading it has given its share), before the rest of backward runs: an
        optimizer can update the parameter and free its gradient there, or a data-parallel
        wrapper start reducing it.

        >>> import numpy as np
        >>> w = Variable(np.array([1.0, 2.0])); seen = []
        >>> handle = w.register_post_accumulate_grad_hook(lambda v: seen.append(v.grad.copy()))
        >>> (w * w).sum().backward(); seen
        [array([2., 4.])]
        >>> handle.remove()
        """
        if self.creator is not None:
            raise ValueError("post-accumulate-grad hooks go on leaves (parameters, inputs); this "
                             "Variable was computed by an op")
        if not callable(hook):
            raise TypeError(f"hook must be callable, got {type(hook).__name__}")
        hooks = _grad_hooks.setdefault(self._node, [])
        hooks.append(hook)
        return HookHandle(hooks, hook)

    def unchain(self) -> None:
        """Cut this Variable from its history, as Chainer does: backward stops here, also for
        ops already built on it, and the graph behind it can be freed (truncated BPTT)."""
        self._node.creator = None

    def unchain_backward(self) -> None:
        """Take apart the whole graph behind this Variable (Chainer's unchain_backward): every
        function in it forgets its inputs and outputs, so all of it can be freed.

        >>> import numpy as np
        >>> x = Variable(np.ones(2)); h = x * 2; y = h * 3
        >>> y.unchain_backward(); y.creator is None and h.creator is None
        True
        """
        from memsave.core.backprop import _functions_behind
        for f in _functions_behind([self]):
            for ref in f.outputs:
                node = ref()
                if node is not None:
                    node.creator = None
            f.inputs = ()

    def __deepcopy__(self, memo: dict) -> Variable:
        """A deep copy is an independent leaf: its own array, node and gradient."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new._array = copy.deepcopy(self._array, memo)
        new._node = VariableNode(new, new._array, self.requires_grad, self.name)
        new._grad_var = copy.deepcopy(self._grad_var, memo)
        return new

    def detach(self) -> Variable:
        """A new leaf Variable sharing the array, with requires_grad=False."""
        return Variable(self._array, name=self.name, requires_grad=False)

    # Array methods (T, reshape, transpose, sum, mean, indexing) and the arithmetic and
    # comparison operators are installed by memsave.functions, which sits above core.
    # Declared here for type checkers only.
    if TYPE_CHECKING:
        @property
        def T(self) -> Variable: ...  # noqa: N802
        def reshape(self, *shape: Any) -> Variable: ...
        def transpose(self, *axes: Any) -> Variable: ...
        def sum(self, axis: Any = None, keepdims: bool = False) -> Variable: ...
        def mean(self, axis: Any = None, keepdims: bool = False) -> Variable: ...
        def astype(self, dtype: Any) -> Variable: ...
        def __getitem__(self, index: Any) -> Variable: ...
        def __neg__(self) -> Variable: ...
        def __abs__(self) -> Variable: ...
        def __add__(self, other: Any) -> Variable: ...
        def __radd__(self, other: Any) -> Variable: ...
        def __sub__(self, other: Any) -> Variable: ...
        def __rsub__(self, other: Any) -> Variable: ...
        def __mul__(self, other: Any) -> Variable: ...
        def __rmul__(self, other: Any) -> Variable: ...
        def __truediv__(self, other: Any) -> Variable: ...
        def __rtruediv__(self, other: Any) -> Variable: ...
        def __pow__(self, other: Any) -> Variable: ...
        def __rpow__(self, other: Any) -> Variable: ...
        def __matmul__(self, other: Any) -> Variable: ...
        def __rmatmul__(self, other: Any) -> Variable: ...
        def __lt__(self, other: Any) -> Any: ...
        def __le__(self, other: Any) -> Any: ...
        def __gt__(self, other: Any) -> Any: ...
        def __ge__(self, other: Any) -> Any: ...
        def __eq__(self, other: Any) -> Any: ...
        def __ne__(self, other: Any) -> Any: ...

    __hash__ = object.__hash__


class Parameter(Variable):
    """A Variable that a Module registers as trainable (always requires grad).

    >>> import numpy as np
    >>> Parameter(np.zeros(3)).requires_grad
    True
    """

    __slots__ = ()

    def __init__(self, array: Any, name: str | None = None) -> None:
        if backend.is_array(array):
            _check_differentiable_dtype(array.dtype)
        super().__init__(array, name=name, requires_grad=True)


def _check_differentiable_dtype(dtype: Any) -> None:
    if dtype.kind != "f":
        raise DTypeError(
            f"only floating-point arrays can require gradients, got {dtype}; cast it "
            "(.astype(np.float32)) or use requires_grad=False for labels and indices")


def as_variable(x: Any) -> Variable:
    """Return ``x`` if it is a Variable, else wrap an ndarray as a constant Variable.

    >>> import numpy as np
    >>> as_variable(np.ones(2)).requires_grad
    False
    """
    if isinstance(x, Variable):
        return x
    if backend.is_array(x):
        return Variable(x, requires_grad=False)
    raise TypeError(
        f"expected a Variable or a numpy/cupy ndarray, got {type(x).__name__}"
    )


def as_variables(xs: Sequence[Any]) -> tuple[Variable, ...]:
    return tuple(as_variable(x) for x in xs)
