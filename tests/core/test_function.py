"""FunctionNode: forward/backward protocol, graph links, what is kept for backward."""
import gc
import weakref

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import FunctionNode, Variable


def var(values, **kwargs):
    return Variable(np.asarray(values, dtype=np.float64), **kwargs)


class Scale(FunctionNode):
    """y = k * x, saving nothing."""

    def __init__(self, k):
        self.k = k
        self.seen_indexes = []

    def forward(self, x):
        return x * self.k

    def backward(self, indexes, gy):
        self.seen_indexes.append(indexes)
        return gy * self.k


class Split2(FunctionNode):
    """Two outputs: the first half and the second half of a 1-D array."""

    def forward(self, x):
        n = x.shape[0] // 2
        return x[:n].copy(), x[n:].copy()

    def backward(self, indexes, ga, gb):
        self.grads_seen = (ga, gb)
        n = self.inputs[0].shape[0] // 2
        ga = Variable(np.zeros(n), requires_grad=False) if ga is None else ga
        gb = Variable(np.zeros(n), requires_grad=False) if gb is None else gb
        return _concat(ga, gb, n)


def _concat(a, b, n):
    # [a, b] built from differentiable ops: a @ [I 0] + b @ [0 I]
    eye = np.eye(2 * n)
    return a @ eye[:n] + b @ eye[n:]


class AffineSaved(FunctionNode):
    """y = a * x + b with a constant `a` passed through save_for_backward."""

    def forward(self, x, a):
        self.save_for_backward(a)
        return a * x + 1.0

    def backward(self, indexes, gy):
        a, = self.saved
        assert isinstance(a, np.ndarray)  # saved constants come back as arrays
        return gy * a, None


def test_apply_returns_a_tuple_of_variables_linked_to_the_graph():
    x = var([1.0, 2.0])
    f = Scale(3.0)
    out = f.apply(x)
    assert isinstance(out, tuple) and len(out) == 1
    y, = out
    assert isinstance(y, Variable)
    np.testing.assert_array_equal(y.array, [3.0, 6.0])
    assert y.creator is f
    assert f.inputs == (x.node,)
    assert len(f.outputs) == 1 and isinstance(f.outputs[0], weakref.ref)
    assert f.outputs[0]() is y.node
    assert y.requires_grad


def test_generation_orders_the_graph():
    x = var([1.0])
    a = Scale(2.0).apply(x)[0]
    b = Scale(2.0).apply(a)[0]
    c = a + b
    assert x.generation == 0
    assert (a.creator.generation, a.generation) == (0, 1)
    assert (b.creator.generation, b.generation) == (1, 2)
    assert (c.creator.generation, c.generation) == (2, 3)


def test_ndarray_inputs_become_constants_and_other_types_are_rejected():
    f = Scale(2.0)
    y, = f.apply(np.array([1.0, 2.0]))
    assert y.creator is None and not y.requires_grad  # nothing to differentiate: no graph
    np.testing.assert_array_equal(y.array, [2.0, 4.0])
    with pytest.raises(TypeError, match="list"):
        Scale(2.0).apply([1.0, 2.0])


def test_scalar_results_of_forward_become_arrays():
    class Total(FunctionNode):
        def forward(self, x):
            return float(x.sum())  # a Python float, not an array

        def backward(self, indexes, gy):
            return F.broadcast_to(gy, self.inputs[0].shape)

    x = var([1.0, 2.0])
    y, = Total().apply(x)
    assert isinstance(y.array, np.ndarray) and y.shape == ()
    y.backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])


def test_backward_gets_only_the_indexes_that_need_grad():
    class Both(FunctionNode):
        def forward(self, a, b):
            return a * b

        def backward(self, indexes, gy):
            Both.seen = indexes
            return gy, gy

    x, c = var([1.0]), var([2.0], requires_grad=False)
    Both().apply(x, c)[0].backward()
    assert Both.seen == (0,)
    Both().apply(c, x)[0].backward()
    assert Both.seen == (1,)
    Both().apply(x, x)[0].backward()
    assert Both.seen == (0, 1)


def test_unary_backward_may_return_a_single_variable():
    x = var([1.0, 2.0])
    y, = Scale(5.0).apply(x)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [5.0, 5.0])


def test_backward_with_wrong_number_of_gradients_names_the_op():
    class Bad(FunctionNode):
        def forward(self, a, b):
            return a + b

        def backward(self, indexes, gy):
            return (gy,)

    y, = Bad().apply(var([1.0]), var([2.0]))
    with pytest.raises(RuntimeError, match=r"Bad\.backward returned 1 gradients for 2 inputs"):
        y.backward()


def test_missing_forward_and_backward_raise_not_implemented():
    class NoBackward(FunctionNode):
        def forward(self, x):
            return x

    with pytest.raises(NotImplementedError, match="Forwardless"):
        type("Forwardless", (FunctionNode,), {})().apply(var([1.0]))
    y, = NoBackward().apply(var([1.0]))
    with pytest.raises(NotImplementedError, match="NoBackward is not differentiable"):
        y.backward()


def test_multi_output_function_gets_none_for_unused_output():
    x = var([1.0, 2.0, 3.0, 4.0])
    f = Split2()
    a, _ = f.apply(x)
    (a * 3.0).sum().backward()
    ga, gb = f.grads_seen
    assert gb is None
    np.testing.assert_array_equal(ga.array, [3.0, 3.0])
    np.testing.assert_array_equal(x.grad, [3.0, 3.0, 0.0, 0.0])


def test_save_for_backward_returns_constants_as_arrays():
    x = var([1.0, 2.0])
    a = np.array([4.0, 5.0])
    f = AffineSaved()
    y, = f.apply(x, a)
    np.testing.assert_array_equal(y.array, [5.0, 11.0])
    assert f.saved[0] is a
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, a)


def test_retained_inputs_and_outputs_stand_for_the_graph_nodes():
    x = var([0.3, -0.7])
    y = F.tanh(x)
    z = y * x  # Mul retains both inputs
    mul = z.creator
    ry, rx = mul.retained_inputs()
    assert ry.node is y.node and rx.node is x.node
    np.testing.assert_array_equal(ry.array, y.array)
    (ty,) = y.creator.retained_outputs()
    assert ty.node is y.node
    np.testing.assert_array_equal(ty.array, y.array)


def test_label_and_repr():
    y = F.tanh(var([1.0]) * 2.0)
    assert y.creator.label == "Tanh"
    assert repr(y.creator) == "<Tanh generation=1>"


def test_an_intermediate_array_is_freed_when_no_op_saved_it():
    x = var(np.ones(1000))
    h = x + 1.0           # Add saves nothing
    y = (h + 2.0).sum()   # neither does the second Add
    h_array = weakref.ref(h.array)
    del h
    assert h_array() is None  # the graph holds h's node, not its array
    y.backward()
    np.testing.assert_array_equal(x.grad, np.ones(1000))


def test_an_intermediate_array_saved_by_an_op_lives_until_backward():
    x = var(np.ones(1000))
    h = x + 1.0
    y = (h * h).sum()     # Mul retains h (a non-leaf)
    h_array = weakref.ref(h.array)
    del h
    assert h_array() is not None
    y.backward()
    assert h_array() is None  # released right after Mul's backward
    np.testing.assert_array_equal(x.grad, np.full(1000, 4.0))


def test_release_frees_saved_arrays_and_second_use_explains_retain_graph():
    x = var([1.0, 2.0])
    y = F.tanh(x * 2.0)
    f = y.creator
    f.release()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        f.retained_outputs()
    with pytest.raises(RuntimeError, match="Tanh"):
        _ = f.saved


def test_outputs_are_weak_references():
    x = var([1.0])
    y = x * 2.0
    f = y.creator
    ref = f.outputs[0]
    assert ref() is y.node
    del y
    gc.collect()
    assert ref() is None
    assert f.inputs[0] is x.node  # inputs stay strong


def test_function_nodes_support_double_backprop_through_their_backward():
    x = var(1.5)
    y = F.tanh(x)
    gx, = ms.grad(y, x, create_graph=True)
    assert gx.creator is not None  # backward built a graph of memsave ops
    ggx, = ms.grad(gx, x)
    t = np.tanh(1.5)
    np.testing.assert_allclose(ggx.array, -2 * t * (1 - t * t))


class Exp2(FunctionNode):
    """y = exp(x), retaining its output (Chainer's TestGradDelRetainedOutput2 shape)."""

    def forward(self, x):
        self.retain_outputs(0)
        return np.exp(x)

    def backward(self, indexes, gy):
        y, = self.retained_outputs()
        return gy * y


def test_second_derivative_survives_dropping_a_retained_output():
    x = var([0.3, -0.7])
    y, = Exp2().apply(x)
    z = (y * 1.0).sum()
    del y                              # the retained output's Variable is gone
    gx, = ms.grad(z, x, create_graph=True)
    assert gx.creator is not None      # was a constant: second derivatives were lost
    ggx, = ms.grad(gx.sum(), x)
    np.testing.assert_allclose(ggx.array, np.exp(x.array), rtol=1e-12)
