"""Reverse-mode differentiation over the graph: ``backward`` and ``grad``.

The walk is iterative: a heap ordered by generation (newest first), so a
10,000-layer chain never touches Python's recursion limit.  Each output
gradient is dropped as soon as its function has used it, and each function's
saved arrays are released right after its backward unless ``retain_graph``.
Broadcast gradients are reduced to the input's shape here, once, not per op.

>>> import numpy as np, memsave as ms
>>> x = ms.Variable(np.array(3.0))
>>> y = x ** 3
>>> gx, = grad([y], [x], create_graph=True)
>>> ggx, = grad([gx], [x])
>>> float(gx.array), float(ggx.array)
(27.0, 18.0)
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from typing import Any

from memsave import backend
from memsave.config import using_config
from memsave.core.function import FunctionNode
from memsave.core.variable import Variable, VariableNode


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
            gy = Variable(y.xp.ones_like(y.array), requires_grad=False)
        elif not isinstance(gy, Variable):
            gy = Variable(backend.asarray(gy), requires_grad=False)
        if gy.shape != y.shape:
            raise ValueError(f"grad_output shape {gy.shape} does not match output shape {y.shape}")
        node = y.node
        grads[node] = gy if node not in grads else grads[node] + gy
    return grads


def _needed_nodes(outputs: Sequence[Variable], targets: set[VariableNode]) -> set[VariableNode]:
    """Nodes on some path from a target to an output: only those get gradients."""
    functions: dict[FunctionNode, None] = {}
    stack = [y.creator for y in outputs if y.creator is not None]
    while stack:
        f = stack.pop()
        if f in functions:
            continue
        functions[f] = None
        stack.extend(x.creator for x in f.inputs if x.creator is not None)
    needed = set(targets)
    for f in sorted(functions, key=lambda f: f.generation):
        if any(x in needed for x in f.inputs):
            needed.update(r() for r in f.outputs)
    needed.discard(None)
    return needed


def _run(outputs: Sequence[Variable], grad_outputs: Sequence[Any], targets: set[VariableNode] | None,
         retain_graph: bool, create_graph: bool, retain_grad: bool) -> dict[VariableNode, Variable]:
    """Propagate gradients; return those of leaves (targets=None) or of the targets."""
    from memsave.functions.array import sum_to

    grads = _seed_grads(outputs, grad_outputs)
    needed = None if targets is None else _needed_nodes(outputs, targets)
    keep = targets or set()
    counter = itertools.count()
    heap: list[tuple[int, int, FunctionNode]] = []
    queued: set[FunctionNode] = set()

    def push(f: FunctionNode | None) -> None:
        if f is not None and f not in queued:
            queued.add(f)
            heapq.heappush(heap, (-f.generation, next(counter), f))

    for y in outputs:
        push(y.creator)
    with using_config("enable_backprop", create_graph):
        while heap:
            f = heapq.heappop(heap)[2]
            gys = []
            for ref in f.outputs:
                node = ref()
                gy = None if node is None else (grads.get(node) if node in keep else grads.pop(node, None))
                if retain_grad and gy is not None and node.variable is not None:
                    node.variable.grad_var = gy
                gys.append(gy)
            indexes = tuple(i for i, x in enumerate(f.inputs)
                            if x.requires_grad and (needed is None or x in needed))
            if not indexes or all(gy is None for gy in gys):
                continue
            gxs = f.backward(indexes, *gys)
            del gys
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            if len(gxs) != len(f.inputs):
                raise RuntimeError(f"{f.label}.backward returned {len(gxs)} gradients "
                                   f"for {len(f.inputs)} inputs")
            if not retain_graph:
                f.release()
            for i in indexes:
                gx, node = gxs[i], f.inputs[i]
                if gx is None:
                    continue
                if gx.shape != node.shape:
                    gx = sum_to(gx, node.shape)
                grads[node] = gx if node not in grads else grads[node] + gx
                push(node.creator)
            del gxs
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
    grad_outputs = [None] * len(outputs) if grad_outputs is None else list(grad_outputs)
    retain_graph = create_graph if retain_graph is None else retain_graph
    grads = _run(outputs, grad_outputs, None, retain_graph, create_graph, retain_grad)
    with using_config("enable_backprop", create_graph):
        for node, g in grads.items():
            var = node.variable
            if node.creator is None and node.requires_grad and var is not None:
                var.grad_var = g if var.grad_var is None else var.grad_var + g


def grad(outputs: Sequence[Variable] | Variable, inputs: Sequence[Variable] | Variable,
         grad_outputs: Sequence[Any] | None = None, retain_graph: bool | None = None,
         create_graph: bool = False, allow_unused: bool = False) -> tuple[Variable | None, ...]:
    """Return d(outputs)/d(inputs) as Variables, leaving every ``.grad`` untouched.

    With ``create_graph=True`` the result is differentiable again.

    >>> import numpy as np, memsave as ms
    >>> x = ms.Variable(np.array(2.0))
    >>> gx, = grad(x * x * x, x)
    >>> float(gx.array)
    12.0
    """
    outputs = [outputs] if isinstance(outputs, Variable) else list(outputs)
    inputs = [inputs] if isinstance(inputs, Variable) else list(inputs)
    for x in inputs:
        if not isinstance(x, Variable):
            raise TypeError(f"grad() inputs must be Variables, got {type(x).__name__}")
        if not x.requires_grad:
            raise ValueError(f"grad() input {x.name or ''} has requires_grad=False")
    grad_outputs = [None] * len(outputs) if grad_outputs is None else list(grad_outputs)
    retain_graph = create_graph if retain_graph is None else retain_graph
    grads = _run(outputs, grad_outputs, {x.node for x in inputs}, retain_graph, create_graph, False)
    result = tuple(grads.get(x.node) for x in inputs)
    if not allow_unused and any(g is None for g in result):
        missing = [i for i, g in enumerate(result) if g is None]
        raise RuntimeError(
            f"inputs {missing} do not appear in the graph of the outputs; "
            "pass allow_unused=True to get None for them"
        )
    return result
