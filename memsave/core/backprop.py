"""Reverse-mode differentiation over the graph: ``backward`` and ``grad``.

The walk is iterative: a heap ordered by generation (newest first), so a
10,000-layer chain never touches Python's recursion limit.  Each output
gradient is dropped as soon as its function has used it, and each function's
saved arrays are released right after its backward unless ``retain_graph``.
Broadcast gradients are reduced to the input's shape here, once, not per op.

In-place gradients.  An op whose backward can write its input gradient into the buffer of
an output gradient (tanh, sigmoid, (leaky) relu, gelu, dropout, layer/batch norm: same
shape, elementwise or row by row) lists those outputs in ``overwritable_grads``.  Before
calling such a backward, the engine hands over each listed gradient that it alone holds,
and the op asks :func:`handed_over` before writing into it.  The engine hands a gradient
over only when all of this holds: no ``create_graph`` (a recorded op would keep it); its
Variable is referenced by the engine's list and nothing else (not a retained ``.grad``,
not a leaf's ``.grad``, not another gradient entry, not a ``grad()`` target, not a user's
``grad_outputs``); its array is referenced by that Variable alone (no other Variable, no
view, no saved array, no hook's copy of ``.grad``) and owns its memory, C-contiguous (it is
not a view of a shared buffer); and it is large enough to matter (64 KiB).  Reference
counts are compared with those of a Variable known to be held once, measured through the
same function (``_SOLE_HOLDERS``).  In the same way, a gradient that reaches a node twice
is summed into the first one's buffer when the engine alone holds it.  And while
backward() releases the graph as it goes (no ``retain_graph``, no ``create_graph``), a
backward done reading a retained input may :func:`take_input` its buffer to write the
input gradient there (linear: ``gy @ W`` into x), when nothing else holds that array: not
the user, not another op, not a checkpoint (and it is 64 KiB or more).

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.array(3.0))
>>> y = x ** 3
>>> gx, = grad([y], [x], create_graph=True)
>>> ggx, = grad([gx], [x])
>>> float(gx.array), float(ggx.array)
(27.0, 18.0)
"""
from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from contextvars import ContextVar
from heapq import heappop, heappush
from typing import Any

import numpy

from memsave import backend
from memsave.config import ENABLE_BACKPROP, using_config
from memsave.core.fit import cast, sum_to
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable, VariableNode, _grad_hooks
from memsave.errors import DTypeError, ShapeError


def _seed_grads(outputs: Sequence[Variable], grad_outputs: Sequence[Any]) -> dict[VariableNode, Variable]:
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"got {len(outputs)} outputs but {len(grad_outputs)} grad_outputs")
    grads: dict[VariableNode, Variable] = {}
    for y, gy in zip(outputs, grad_outputs):
        if not isinstance(y, Variable):
            raise TypeError(f"backward needs Variables as outputs, got {type(y).__name__}")
        if gy is None:
            if y.size != 1:
                raise ValueError(
                    f"grad can be created implicitly only for a single-element output; "
                    f"this output has shape {y.shape}: pass grad_outputs"
                )
            array = y._array                        # y's own shape and dtype: nothing to check
            gy = Variable._of_output(backend.get_array_module(array).ones(array.shape, array.dtype),
                                     None)
        else:
            if not isinstance(gy, Variable):
                gy = Variable(backend.asarray(gy), requires_grad=False)
            if gy.shape != y.shape:
                raise ShapeError(f"grad_output shape {gy.shape} does not match output shape "
                                 f"{y.shape}")
            if gy.dtype != y.dtype:
                gy = cast(gy, y.dtype)
        node = y.node
        grads[node] = gy if node not in grads else grads[node] + gy
    return grads


def _checked_gradients(f: FunctionNode, gxs: Any) -> tuple:
    """``f.backward``'s result as one gradient (or None) per input, checked (the backward
    loop handles the common case, one Variable for one input, itself)."""
    if isinstance(gxs, Variable) or gxs is None:
        gxs = (gxs,)
    if not isinstance(gxs, tuple):
        raise TypeError(
            f"{f.label}.backward returned {type(gxs).__name__}; it must return a Variable (or "
            "None) per input, as a tuple when there are several; wrap arrays with Variable()")
    if len(gxs) != len(f.inputs):
        raise RuntimeError(f"{f.label}.backward returned {len(gxs)} gradients for "
                         f"{len(f.inputs)} inputs")
    for i, gx in enumerate(gxs):
        if gx is not None and not isinstance(gx, Variable):
            raise TypeError(f"{f.label}.backward returned {type(gx).__name__} as the gradient of "
                            f"input {i}; gradients must be Variables (or None)")
    return gxs


def _fit(f: FunctionNode, i: int, gx: Variable, node: VariableNode) -> Variable:
    """Reduce a broadcast gradient to its input's shape and give it the input's dtype."""
    array = gx._array
    if array.shape == node.shape and array.dtype == node.dtype:  # the common case
        return gx
    if gx.dtype.kind != "f":
        raise DTypeError(f"{f.label}.backward returned a {gx.dtype} gradient for input {i} "
                         f"({node.dtype}); gradients must be floating-point")
    if gx.shape != node.shape:
        try:
            gx = sum_to(gx, node.shape)
        except ShapeError:
            raise ShapeError(f"{f.label}.backward returned a gradient of shape {gx.shape} for "
                             f"input {i} of shape {node.shape}") from None
    return gx if gx.dtype == node.dtype else cast(gx, node.dtype)


# ----- in-place gradients -----------------------------------------------------------------
_HANDED_OVER: ContextVar[tuple[Variable, ...]] = ContextVar("memsave_handed_over", default=())
_RELEASING: ContextVar[bool] = ContextVar("memsave_releasing", default=False)
_HAND_OVER_MIN_BYTES = 1 << 16
"""Smaller gradients are not handed over and smaller inputs not taken: their memory is
negligible, and the check (about 1 us) costs more than a new buffer."""


def handed_over(gy: Variable | None) -> bool:
    """Whether backward() handed ``gy`` over to the op whose backward is running: the engine
    alone holds its array, so the op may write its input gradient into it (and must not read
    ``gy`` afterwards).  Only outputs an op lists in ``overwritable_grads`` are handed over.

    >>> import numpy as np
    >>> handed_over(Variable(np.ones(2)))
    False
    """
    handed = _HANDED_OVER.get()
    return bool(handed) and gy is not None and any(gy is g for g in handed)


def take_input(f: FunctionNode, i: int) -> Any:
    """The array of ``f``'s retained input ``i``, for ``f``'s backward to write the input
    gradient into, or None.  Only while backward() releases the graph as it goes (no
    ``retain_graph``, no ``create_graph``): then ``f`` lets go of the input, and the array is
    returned if nothing else holds it.  The caller must be done with the input and hold no
    Variable or array of it.

    >>> import numpy as np
    >>> take_input(FunctionNode(), 0) is None       # outside backward()
    True
    """
    if not _RELEASING.get():
        return None
    box = [f.release_input(i)]
    if box[0].nbytes < _HAND_OVER_MIN_BYTES:
        return None
    return box[0] if _array_holders(box, 0) == _SOLE_ARRAY_HOLDERS and _own_buffer(box[0]) \
        else None


def _holders(container: Any, key: Any) -> tuple[int, int]:
    """sys.getrefcount of the Variable ``container[key]`` and of its array, seen from here."""
    var = container[key]
    return sys.getrefcount(var), sys.getrefcount(var._array)


def _array_holders(container: Any, key: Any) -> int:
    """sys.getrefcount of the array ``container[key]``, seen from here."""
    return sys.getrefcount(container[key])


_SOLE_HOLDERS = _holders([Variable(numpy.empty(1), requires_grad=False)], 0)
"""What :func:`_holders` reports for a Variable that one list holds and nothing else, whose
array nothing else holds (measured, so it is right on any CPython version)."""
_SOLE_ARRAY_HOLDERS = _array_holders([numpy.empty(1)], 0)
"""The same for an array that one list holds."""


def _own_buffer(array: Any) -> bool:
    """Whether ``array`` owns its memory (it is no view), C-contiguous and writeable."""
    flags = array.flags
    return flags.c_contiguous and flags.owndata and (type(array) is not numpy.ndarray
                                                     or flags.writeable)


def _sole(container: Any, key: Any) -> bool:
    """Whether the gradient ``container[key]`` is the engine's alone: one reference to its
    Variable, one to its array, which owns its buffer."""
    return _holders(container, key) == _SOLE_HOLDERS and _own_buffer(container[key]._array)


def _to_hand_over(f: FunctionNode, gys: list) -> tuple[Variable, ...]:
    """The output gradients ``f`` may overwrite: those it lists that the engine alone holds."""
    return tuple([gys[i] for i in f.overwritable_grads if gys[i] is not None
                  and gys[i]._array.nbytes >= _HAND_OVER_MIN_BYTES and _sole(gys, i)])


def _add_gradient(grads: dict[VariableNode, Variable], node: VariableNode, gx: Variable,
                  create_graph: bool) -> None:
    """``grads[node] += gx``: into the existing buffer when the engine alone holds it."""
    if node not in grads:
        grads[node] = gx
    elif not create_graph and _sole(grads, node):
        total = grads[node]._array
        total += gx._array
    else:
        grads[node] = grads[node] + gx


def _require_graph(outputs: Sequence[Any]) -> None:
    for y in outputs:
        if isinstance(y, Variable) and y.creator is None and not y.requires_grad:
            raise RuntimeError(
                f"an output (shape {y.shape}) does not require grad and has no graph: it was "
                "computed under no_grad() or from constants only, so there is nothing to "
                "differentiate")


def _functions_behind(outputs: Sequence[Variable]) -> dict[FunctionNode, None]:
    """Every function in the graph behind ``outputs`` (iteratively, no recursion)."""
    functions: dict[FunctionNode, None] = {}
    stack = [y.creator for y in outputs if y.creator is not None]
    while stack:
        f = stack.pop()
        if f in functions:
            continue
        functions[f] = None
        stack.extend(x.creator for x in f.inputs if x.creator is not None)
    return functions


def _needed_nodes(outputs: Sequence[Variable], targets: set[VariableNode]) -> set[VariableNode]:
    """Nodes on some path from a target to an output: only those get gradients."""
    functions = _functions_behind(outputs)
    needed = set(targets)
    for f in sorted(functions, key=lambda f: f.generation):
        if any(x in needed for x in f.inputs):
            needed.update(r() for r in f.outputs)
    needed.discard(None)
    return needed


def _hooked_leaf_readers(outputs: Sequence[Variable]) -> dict[VariableNode, int]:
    """For each hooked leaf in the graph: how many op inputs read it (its gradient is complete
    once that many have been handled)."""
    readers: dict[VariableNode, int] = {}
    for f in _functions_behind(outputs):
        for x in f.inputs:
            if x.creator is None and x.requires_grad and _grad_hooks.get(x):
                readers[x] = readers.get(x, 0) + 1
    return readers


def _accumulate_into_leaf(node: VariableNode, g: Variable, create_graph: bool) -> None:
    var = node.variable
    if var is None or not node.requires_grad:
        return
    if var.grad_var is None:
        var.grad_var = g
    else:
        with using_config("enable_backprop", create_graph):
            var.grad_var = var.grad_var + g
    for hook in list(_grad_hooks.get(node, ())):
        hook(var)


def _output_grads(f: FunctionNode, grads: dict[VariableNode, Variable], keep: set[VariableNode],
                  retain_grad: bool) -> list[Variable | None]:
    """The gradients of ``f``'s outputs, taken out of ``grads`` unless they are targets."""
    gys = []
    for ref in f.outputs:
        node = ref()
        gy = None if node is None else (grads.get(node) if node in keep else grads.pop(node, None))
        if retain_grad and gy is not None and node.variable is not None:
            node.variable.grad_var = gy
        gys.append(gy)
    return gys


def _run(outputs: Sequence[Variable], grad_outputs: Sequence[Any], targets: set[VariableNode] | None,
         retain_graph: bool, create_graph: bool, retain_grad: bool) -> dict[VariableNode, Variable]:
    """Propagate gradients; return those of leaves (targets=None) or of the targets.

    With ``targets=None`` (backward()), a leaf with post-accumulate-grad hooks gets its
    gradient, and its hooks run, as soon as every op reading it is done."""
    grads = _seed_grads(outputs, grad_outputs)
    readers = _hooked_leaf_readers(outputs) if targets is None and _grad_hooks else {}

    def handled(f: FunctionNode) -> None:
        for x in f.inputs:
            if x in readers:
                readers[x] -= 1
                if readers[x] == 0:
                    del readers[x]
                    g = grads.pop(x, None)
                    if g is not None:
                        _accumulate_into_leaf(x, g, create_graph)

    needed = None if targets is None else _needed_nodes(outputs, targets)
    keep = targets or set()
    counter = itertools.count()
    heap: list[tuple[int, int, FunctionNode]] = []
    queued: set[FunctionNode] = set()

    def push(f: FunctionNode | None) -> None:
        if f is not None and f not in queued:
            queued.add(f)
            heappush(heap, (-f.generation, next(counter), f))

    for y in outputs:
        push(y.creator)
    grad_token = ENABLE_BACKPROP.set(create_graph)
    releasing_token = _RELEASING.set(not retain_graph and not create_graph)
    try:
        while heap:
            f = heappop(heap)[2]
            inputs = f.inputs
            if len(f.outputs) == 1 and not retain_grad:      # the common case, inlined
                out = f.outputs[0]()
                gys = [None if out is None else
                       grads.get(out) if out in keep else grads.pop(out, None)]
            else:
                gys = _output_grads(f, grads, keep, retain_grad)
            if len(inputs) == 1:
                indexes = (0,) if inputs[0].requires_grad and (
                    needed is None or inputs[0] in needed) else ()
            else:
                indexes = tuple([i for i, x in enumerate(inputs)
                                 if x.requires_grad and (needed is None or x in needed)])
            if not indexes or (gys[0] is None if len(gys) == 1 else
                               all([gy is None for gy in gys])):
                if readers:
                    handled(f)
                continue
            handed = () if create_graph or not f.overwritable_grads else _to_hand_over(f, gys)
            if handed:
                token = _HANDED_OVER.set(handed)
                try:
                    gxs = f.backward(indexes, *gys)
                finally:
                    _HANDED_OVER.reset(token)
            else:
                gxs = f.backward(indexes, *gys)
            del gys, handed
            if type(gxs) is Variable and len(inputs) == 1:   # the common case, unchecked
                gxs = [gxs]
            else:
                gxs = list(_checked_gradients(f, gxs))
            if not retain_graph:
                f.release()
            # Inlined for speed.  Every reference to a gradient held here is dropped before
            # the next ``_sole`` check (in-place sums and hand-overs count references).
            for i in indexes:
                gx, gxs[i] = gxs[i], None
                if gx is None:
                    continue
                node = inputs[i]
                array = gx._array
                if array.shape != node.shape or array.dtype != node.dtype:
                    gx = _fit(f, i, gx, node)
                if node in grads:
                    _add_gradient(grads, node, gx, create_graph)
                else:
                    grads[node] = gx
                gx = array = None
                if retain_grad and node.creator is not None and node.variable is not None:
                    node.variable.grad_var = grads[node]
                creator = node.creator
                if creator is not None and creator not in queued:
                    queued.add(creator)
                    heappush(heap, (-creator.generation, next(counter), creator))
            del gxs
            if readers:
                handled(f)
    finally:
        _RELEASING.reset(releasing_token)
        ENABLE_BACKPROP.reset(grad_token)
    for node in readers:                      # read only by ops no gradient reached
        g = grads.pop(node, None)
        if g is not None:
            _accumulate_into_leaf(node, g, create_graph)
    return grads


def backward(outputs: Sequence[Variable], grad_outputs: Sequence[Any] | None = None, *,
             retain_grad: bool = False, retain_graph: bool | None = None,
             create_graph: bool = False) -> None:
    """Accumulate gradients of ``outputs`` into the ``.grad`` of every leaf that requires grad.

    >>> import numpy as np, memsave as ms
    >>> w = ms.Variable(np.array([1.0, 2.0]))
    >>> backward([(w * w).sum()])
    >>> w.grad
    array([2., 4.])
    """
    outputs = list(outputs)
    _require_graph(outputs)
    grad_outputs = [None] * len(outputs) if grad_outputs is None else list(grad_outputs)
    retain_graph = create_graph if retain_graph is None else retain_graph
    grads = _run(outputs, grad_outputs, None, retain_graph, create_graph, retain_grad)
    for node, g in grads.items():
        if node.creator is None:
            _accumulate_into_leaf(node, g, create_graph)


def _as_list(values: Any, what: str) -> list[Any]:
    if isinstance(values, Variable):
        return [values]
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"grad() {what} must be a Variable or a list/tuple of Variables, got "
                        f"{type(values).__name__}")
    for i, v in enumerate(values):
        if not isinstance(v, Variable):
            raise TypeError(f"grad() {what}[{i}] must be a Variable, got {type(v).__name__}")
    return list(values)


def grad(outputs: Sequence[Variable] | Variable, inputs: Sequence[Variable] | Variable,
         grad_outputs: Sequence[Any] | None = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool = False, *,
         grad_inputs: Sequence[Any] | None = None, set_grad: bool = False,
         retain_grad: bool = False, enable_double_backprop: bool | None = None,
         ) -> tuple[Variable | None, ...]:
    """Return d(outputs)/d(inputs) as Variables, leaving every ``.grad`` untouched.

    With ``create_graph=True`` the result is differentiable again.  Chainer's options:
    ``grad_inputs`` (initial gradients added to the inputs' ones), ``set_grad=True`` (also
    store the results in the inputs' ``.grad_var``), ``retain_grad=True`` (keep the
    gradients of intermediate Variables in their ``.grad_var``), ``enable_double_backprop``
    (Chainer's name for ``create_graph``).

    >>> import numpy as np, memsave as ms
    >>> x = ms.Variable(np.array(2.0))
    >>> gx, = grad(x * x * x, x)
    >>> float(gx.array)
    12.0
    """
    outputs = _as_list(outputs, "outputs")
    inputs = _as_list(inputs, "inputs")
    if enable_double_backprop is not None:
        create_graph = enable_double_backprop
    for x in inputs:
        if not x.requires_grad:
            raise ValueError(f"grad() input {x.name or ''} (shape {x.shape}) has requires_grad=False")
    if not allow_unused:
        _require_graph(outputs)
    grad_outputs = [None] * len(outputs) if grad_outputs is None else list(grad_outputs)
    retain_graph = create_graph if retain_graph is None else retain_graph
    grads = _run(outputs, grad_outputs, {x.node for x in inputs}, retain_graph, create_graph,
                 retain_grad)
    result = tuple(grads.get(x.node) for x in inputs)
    if grad_inputs is not None:
        if len(grad_inputs) != len(inputs):
            raise ValueError(f"grad() got {len(inputs)} inputs but {len(grad_inputs)} grad_inputs")
        with using_config("enable_backprop", create_graph):
            result = tuple(_add_initial(g, g0) for g, g0 in zip(result, grad_inputs))
    if not allow_unused and any(g is None for g in result):
        missing = [i for i, g in enumerate(result) if g is None]
        raise RuntimeError(
            f"inputs {missing} do not appear in the graph of the outputs; "
            "pass allow_unused=True to get None for them"
        )
    if set_grad:
        for x, g in zip(inputs, result):
            x.grad_var = g
    return result


def _add_initial(g: Variable | None, g0: Any) -> Variable | None:
    if g0 is None:
        return g
    g0 = g0 if isinstance(g0, Variable) else Variable(backend.asarray(g0), requires_grad=False)
    return g0 if g is None else g + g0
