"""FunctionNode: one differentiable operation in the graph.

``forward`` works on raw arrays and declares what backward needs with
``retain_inputs``, ``retain_outputs`` (differentiable: backward gets Variables)
and ``save_for_backward`` (constants: backward gets arrays).  Everything kept
goes through the saved-array hooks.  ``backward`` gets output gradients as
Variables and returns input gradients built from memsave functions, so
``create_graph=True`` gives higher derivatives for free.

>>> import numpy as np
>>> class Cube(FunctionNode):
...     def forward(self, x):
...         self.retain_inputs(0)
...         return x ** 3
...     def backward(self, indexes, gy):
...         x, = self.retained_inputs()
...         return 3 * x * x * gy
>>> x = Variable(np.array(2.0))
>>> y, = Cube().apply(x)
>>> y.backward()
>>> float(x.grad)
12.0
"""
from __future__ import annotations

import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy

from memsave import backend
from memsave.config import ENABLE_BACKPROP as _ENABLE_BACKPROP
from memsave.core import hooks
from memsave.core.saved import SavedArray
from memsave.core.variable import Variable, VariableNode, as_variable

_NOTHING: Mapping[int, SavedArray] = MappingProxyType({})
"""No retained arrays (an op that retains none, or one released after backward)."""


class FunctionNode:
    """Base class of every op. Subclasses implement ``forward`` and ``backward``."""

    inputs: tuple[VariableNode, ...] = ()
    outputs: tuple[weakref.ref, ...] = ()
    generation = 0
    overwritable_grads: tuple[int, ...] = ()
    """Outputs whose gradient backward may write its result into when the engine hands it
    over (memsave.core.backprop: in-place gradients)."""
    _retained_out: Mapping[int, SavedArray] = _NOTHING   # replaced when outputs are retained
    _retain_out: tuple[int, ...] = ()                     # set by retain_outputs
    # What backward needs, set up by apply when it records (a list and a dict), dropped by
    # release (None and _NOTHING).
    _saved: list[SavedArray] | tuple[()] | None = ()
    _retained_in: Mapping[int, SavedArray] = _NOTHING

    # ----- forward ----------------------------------------------------------------
    def apply(self, *inputs: Any) -> tuple[Variable, ...]:
        """Run forward on Variables (or arrays) and, when recording, link the graph."""
        if not _ENABLE_BACKPROP.get() and not hooks.stack():
            return self._compute(inputs)
        # One plain loop over the inputs (comprehensions cost a function call each before 3.12).
        in_vars, in_arrays, in_nodes = [], [], []
        generation, any_requires_grad = 0, False
        for x in inputs:
            if not isinstance(x, Variable):
                x = as_variable(x)
            node = x._node
            in_vars.append(x)
            in_arrays.append(x._array)
            in_nodes.append(node)
            any_requires_grad = any_requires_grad or node.requires_grad
            if node.generation > generation:
                generation = node.generation
        recording = any_requires_grad and _ENABLE_BACKPROP.get()
        self._recording = recording
        self._forward_inputs = in_vars
        if recording:
            self._saved = []
            self._retained_in = {}
        stack = hooks.stack()
        try:
            if not stack or stack[-1].run_op is None:
                ys = self.forward(*in_arrays)
                ys = (ys,) if type(ys) is numpy.ndarray else _as_arrays(ys)
            else:
                ys = stack[-1].run_op(self, in_vars, lambda: _as_arrays(self.forward(*in_arrays)))
        finally:
            self._forward_inputs = ()
        if not recording:
            if len(ys) == 1:
                return (Variable._of_output(ys[0], None),)
            return tuple([Variable._of_output(y, None) for y in ys])
        self.generation = generation
        self.inputs = tuple(in_nodes)
        if len(ys) == 1:                           # the common case, without the loops
            y = Variable._of_output(ys[0], self)
            self.outputs = (weakref.ref(y._node),)
            outputs: tuple[Variable, ...] = (y,)
        else:
            outputs = tuple([Variable._of_output(y, self) for y in ys])
            self.outputs = tuple([weakref.ref(y._node) for y in outputs])
        if self._retain_out:
            self._retained_out = {}
            for i in self._retain_out:
                self._retained_out[i] = self._pack(ys[i])
        return outputs

    def _compute(self, inputs: tuple) -> tuple[Variable, ...]:
        """:meth:`apply` when no graph is built and no hook watches (a backward without
        create_graph, no_grad): the outputs only."""
        arrays = []
        for x in inputs:
            arrays.append(x._array if isinstance(x, Variable) else as_variable(x)._array)
        self._recording = False
        ys = self.forward(*arrays)
        if type(ys) is numpy.ndarray:
            return (Variable._of_output(ys, None),)
        return tuple([Variable._of_output(y, None) for y in _as_arrays(ys)])

    def forward(self, *xs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, target_input_indexes: tuple[int, ...], *grad_outputs: Variable | None) -> Any:
        """Return one gradient Variable (or None) per input, or a single one for a unary op."""
        raise NotImplementedError(f"{type(self).__name__} is not differentiable")

    @property
    def label(self) -> str:
        """A short name for error messages and reports."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{self.label} generation={self.generation}>"

    # ----- what backward needs ----------------------------------------------------
    def _pack(self, array: Any, by_reference: bool = False) -> SavedArray:
        hook = None if by_reference else hooks.current_hooks()
        if hook is None:
            return SavedArray(array)
        return SavedArray(hook.pack(array, self), hook.unpack)

    def retain_inputs(self, *indexes: int) -> None:
        """Keep these inputs for backward; read them with :meth:`retained_inputs`.

        A leaf input (a parameter, a user's array) is kept by reference: it is alive anyway.
        """
        if not self._recording:
            return
        for i in indexes:
            x = self._forward_inputs[i]
            self._retained_in[i] = self._pack(x._array, by_reference=x._node.creator is None)

    def retain_outputs(self, *indexes: int) -> None:
        """Keep these outputs for backward; read them with :meth:`retained_outputs`."""
        self._retain_out = indexes

    def save_for_backward(self, *arrays: Any) -> None:
        """Keep constant arrays (masks, indices) for backward; read them with :attr:`saved`."""
        if self._recording:
            self._saved.extend(self._pack(a) for a in arrays)

    def _check_alive(self) -> None:
        if self._saved is None:
            raise RuntimeError(
                f"Trying to backward through {self.label} a second time, but the arrays it saved "
                "were freed after the first backward. Pass retain_graph=True to the first "
                "backward() or grad() call if you need to backward twice."
            )

    def retained_inputs(self) -> tuple[Variable, ...]:
        """The retained inputs as Variables on their original graph nodes."""
        if self._saved is None:
            self._check_alive()
        retained, nodes = self._retained_in, self.inputs
        result = []
        for i in (retained if len(retained) == 1 else sorted(retained)):
            result.append(Variable._on_node(retained[i].get(self, "input", i), nodes[i]))
        return tuple(result)

    def retained_outputs(self) -> tuple[Variable, ...]:
        """The retained outputs as Variables on their graph nodes.

        An output whose node is gone (the user dropped it) gets a new node created by this
        function, so that a gradient built on it (create_graph) still reaches the inputs.
        """
        if self._saved is None:
            self._check_alive()
        retained, result = self._retained_out, []
        for i in (retained if len(retained) == 1 else sorted(retained)):
            array = retained[i].get(self, "output", i)
            node = self.outputs[i]()
            if node is None:
                var = Variable._of_output(array, self)
                self.outputs = self.outputs[:i] + (weakref.ref(var.node),) + self.outputs[i + 1:]
            else:
                var = Variable._on_node(array, node)
            result.append(var)
        return tuple(result)

    @property
    def saved(self) -> tuple[Any, ...]:
        """The arrays stored with :meth:`save_for_backward`, in order."""
        self._check_alive()
        return tuple([s.get(self, "saved array", k) for k, s in enumerate(self._saved)])

    def release_input(self, i: int) -> Any:
        """Drop the hold on retained input ``i`` and return its array, as a buffer to write
        into (memsave.core.backprop.take_input): its values are not checked."""
        self._check_alive()
        saved = self._retained_in.pop(i)
        return saved.packed if saved.unpack is None else saved.unpack(saved.packed)

    def release(self) -> None:
        """Drop everything kept for backward (called by backward unless retain_graph)."""
        self._saved = None
        self._retained_in = self._retained_out = _NOTHING


def _as_arrays(ys: Any) -> tuple:
    """An op's outputs as a tuple of arrays (NumPy reductions return scalars; the graph deals in
    arrays only)."""
    if type(ys) is numpy.ndarray:                  # the common case: one NumPy array
        return (ys,)
    if not isinstance(ys, tuple):
        ys = (ys,)
    arrays = []
    for y in ys:
        arrays.append(y if type(y) is numpy.ndarray or backend.is_array(y) else numpy.asarray(y))
    return tuple(arrays)
