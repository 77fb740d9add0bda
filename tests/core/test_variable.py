"""Variable and Parameter: data access, gradients, operators, graph surgery (memsave/core/variable.py)."""
import gc
import weakref

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import Parameter, Variable


def var(values, **kwargs):
    return Variable(np.asarray(values, dtype=np.float64), **kwargs)


# ----- construction and data ---------------------------------------------------------------
def test_array_and_data_are_the_same_object():
    a = np.arange(6.0).reshape(2, 3)
    x = Variable(a)
    assert x.array is a
    assert x.data is a
    b = np.zeros((3, 2))
    x.data = b
    assert x.array is b
    assert x.shape == (3, 2)
    assert x.node.shape == (3, 2)


def test_array_setter_rejects_non_array():
    x = var([1.0])
    with pytest.raises(TypeError, match="list"):
        x.array = [1.0]


@pytest.mark.parametrize("bad, type_name", [([1.0, 2.0], "list"), (3.0, "float"), (7, "int"),
                                            ("ab", "str"), (None, "NoneType"),
                                            (np.float64(1.0), "float64")])
def test_non_array_input_raises_type_error_naming_the_type(bad, type_name):
    with pytest.raises(TypeError, match=rf"\b{type_name}\b"):
        Variable(bad)


def test_variable_of_variable_is_a_type_error():
    with pytest.raises(TypeError, match="detach"):
        Variable(var([1.0]))


def test_shape_ndim_size_dtype_len():
    x = Variable(np.zeros((2, 3, 4), dtype=np.float32))
    assert x.shape == (2, 3, 4)
    assert x.ndim == 3
    assert x.size == 24
    assert x.dtype == np.float32
    assert len(x) == 2
    assert x.xp is np


def test_len_of_zero_dim_variable_raises():
    with pytest.raises(TypeError):
        len(var(1.0))


def test_T_transposes_and_backprops():
    a = np.arange(6.0).reshape(2, 3)
    x = Variable(a)
    t = x.T
    assert isinstance(t, Variable)
    np.testing.assert_array_equal(t.array, a.T)
    (t * np.arange(6.0).reshape(3, 2)).sum().backward()
    np.testing.assert_array_equal(x.grad, np.arange(6.0).reshape(3, 2).T)


def test_name():
    x = var([1.0], name="x")
    assert x.name == "x"
    assert x.node.name == "x"
    x.name = "renamed"
    assert x.node.name == "renamed"
    assert var([1.0]).name is None


def test_repr_contains_array_and_name():
    x = var([1.0, 2.0], name="w")
    assert repr(x) == "Variable(array([1., 2.]), name='w')"
    assert repr(var([1.0])) == "Variable(array([1.]))"


@pytest.mark.parametrize("make, prefix", [(Variable, "Variable("), (Parameter, "Parameter(")])
def test_multiline_repr_keeps_rows_aligned(make, prefix):
    text = repr(make(np.zeros((2, 2))))
    first, second = text.splitlines()
    assert first.startswith(prefix + "array([[")
    # the second row's "[" sits under the first row's inner "["
    assert second.index("[") == first.index("[[") + 1, text


def test_variable_node_holds_no_array():
    x = var([1.0, 2.0], name="x")
    node = x.node
    assert not hasattr(node, "array") and not hasattr(node, "_array")
    assert not hasattr(node, "__dict__")  # slots only: nothing can be hung on it by accident
    assert (node.shape, node.dtype, node.name) == ((2,), np.float64, "x")
    assert node.variable is x
    assert repr(node) == "VariableNode(shape=(2,), dtype=float64, name='x')"


def test_requires_grad_default_and_setter():
    x = var([1.0])
    assert x.requires_grad is True
    c = var([1.0], requires_grad=False)
    assert c.requires_grad is False
    c.requires_grad = True
    assert c.requires_grad is True
    with pytest.raises(TypeError, match="requires_grad must be True or False"):
        c.requires_grad = "no"


def test_requires_grad_cannot_be_switched_off_on_non_leaf():
    y = var([1.0]) * 2.0
    with pytest.raises(ValueError, match="detach"):
        y.requires_grad = False


def test_constant_inputs_build_no_graph():
    c = var([1.0, 2.0], requires_grad=False)
    y = F.tanh(c) * 2.0
    assert y.creator is None
    assert y.requires_grad is False


# ----- gradients -----------------------------------------------------------------------------
def test_grad_is_array_and_grad_var_is_variable():
    x = var([1.0, 2.0])
    assert x.grad is None and x.grad_var is None
    (x * x).sum().backward()
    assert isinstance(x.grad, np.ndarray)
    assert isinstance(x.grad_var, Variable)
    assert x.grad is x.grad_var.array
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_grad_setter_wraps_and_checks_shape():
    x = var([1.0, 2.0])
    x.grad = np.array([5.0, 6.0])
    assert isinstance(x.grad_var, Variable)
    assert x.grad_var.requires_grad is False
    np.testing.assert_array_equal(x.grad, [5.0, 6.0])
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        x.grad = np.zeros(3)
    with pytest.raises(ValueError):
        x.grad_var = var(np.zeros((2, 1)))
    x.grad = None
    assert x.grad_var is None


def test_cleargrad():
    x = var([1.0, 2.0])
    (x * 3.0).sum().backward()
    assert x.grad is not None
    x.cleargrad()
    assert x.grad is None and x.grad_var is None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])  # not 6: the old grad is gone


# ----- operators ------------------------------------------------------------------------------
A = np.array([[0.5, -1.5, 2.0], [1.25, 0.75, -0.3]])
B = np.array([[1.5, 0.5, -2.5], [0.4, 2.0, 1.1]])
POS = np.array([[0.5, 1.5, 2.0], [1.25, 0.75, 0.3]])
POS_B = np.array([[1.5, 0.5, 2.5], [0.4, 2.0, 1.1]])  # pow: positive bases either way round


def _num_grad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[i] += eps
        down[i] -= eps
        g[i] = (f(up).sum() - f(down).sum()) / (2 * eps)
    return g


BINARY = {
    "add": (lambda a, b: a + b, A, B),
    "sub": (lambda a, b: a - b, A, B),
    "mul": (lambda a, b: a * b, A, B),
    "div": (lambda a, b: a / b, A, B),
    "pow": (lambda a, b: a ** b, POS, POS_B),
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_operator_variable_variable(name):
    # every binary operator: value, and both gradients against central differences
    op, a, b = BINARY[name]
    x, y = Variable(a.copy()), Variable(b.copy())
    z = op(x, y)
    assert isinstance(z, Variable)
    np.testing.assert_allclose(z.array, op(a, b))
    z.sum().backward()
    np.testing.assert_allclose(x.grad, _num_grad(lambda t: op(t, b), a), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(y.grad, _num_grad(lambda t: op(a, t), b), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("left", ["ndarray", "scalar"])
def test_reflected_operator_with_non_variable_on_the_left(name, left):
    op, a, b = BINARY[name]
    other = 1.75 if left == "scalar" else b
    y = Variable(a.copy())
    z = op(other, y)
    assert isinstance(z, Variable), type(z)
    np.testing.assert_allclose(z.array, op(other, a))
    z.sum().backward()
    np.testing.assert_allclose(y.grad, _num_grad(lambda t: op(other, t), a), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("right", ["ndarray", "scalar", "int"])
def test_operator_with_non_variable_on_the_right(name, right):
    op, a, b = BINARY[name]
    other = {"scalar": 1.75, "int": 2, "ndarray": b}[right]
    x = Variable(a.copy())
    z = op(x, other)
    np.testing.assert_allclose(z.array, op(a, other))
    z.sum().backward()
    np.testing.assert_allclose(x.grad, _num_grad(lambda t: op(t, other), a), rtol=1e-6, atol=1e-8)


def test_numpy_scalar_on_the_left():
    x = var([1.0, 2.0])
    z = np.float64(3.0) * x
    assert isinstance(z, Variable)
    np.testing.assert_array_equal(z.array, [3.0, 6.0])


def test_python_scalar_keeps_float32_dtype():
    x = Variable(np.ones(3, dtype=np.float32))
    for z in (x + 1.5, 1.5 + x, x * 2.0, 2.0 - x, x / 3.0, 3.0 / x, x ** 2, 2.0 ** x):
        assert z.dtype == np.float32, z


def test_neg_and_abs():
    x = var([1.0, -2.0, 3.0])
    z = -x
    np.testing.assert_array_equal(z.array, [-1.0, 2.0, -3.0])
    z.sum().backward()
    np.testing.assert_array_equal(x.grad, [-1.0, -1.0, -1.0])
    x.cleargrad()
    abs(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, -1.0, 1.0])


def test_broadcasting_gradient_is_reduced_to_input_shape():
    x = var(np.ones((2, 3)))
    b = var([1.0, 2.0, 3.0])
    ((x * b) + b).sum().backward()
    assert b.grad.shape == (3,)
    np.testing.assert_array_equal(b.grad, [4.0, 4.0, 4.0])  # 2 rows of x, plus 2 broadcasts
    np.testing.assert_array_equal(x.grad, np.tile([1.0, 2.0, 3.0], (2, 1)))


def test_matmul_and_reflected_matmul():
    a = np.arange(6.0).reshape(2, 3)
    w = np.arange(12.0).reshape(3, 4) / 10
    x, W = Variable(a.copy()), Variable(w.copy())
    z = x @ W
    np.testing.assert_allclose(z.array, a @ w)
    z.sum().backward()
    np.testing.assert_allclose(x.grad, np.ones((2, 4)) @ w.T)
    np.testing.assert_allclose(W.grad, a.T @ np.ones((2, 4)))

    W2 = Variable(w.copy())
    z2 = a @ W2                                     # ndarray on the left
    assert isinstance(z2, Variable)
    np.testing.assert_allclose(z2.array, a @ w)
    z2.sum().backward()
    np.testing.assert_allclose(W2.grad, a.T @ np.ones((2, 4)))

    v = var([1.0, 2.0, 3.0])                       # 1-D on the left, NumPy semantics
    z3 = v @ Variable(w.copy())
    assert z3.shape == (4,)
    np.testing.assert_allclose(z3.array, np.array([1.0, 2.0, 3.0]) @ w)


def test_matmul_of_two_vectors_is_their_dot_product():
    # NumPy semantics: (n,) @ (n,) is a 0-d scalar
    a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    x, y = Variable(a.copy()), Variable(b.copy())
    z = x @ y
    assert z.shape == ()
    assert float(z.array) == 32.0
    z.backward()
    np.testing.assert_array_equal(x.grad, b)
    np.testing.assert_array_equal(y.grad, a)


@pytest.mark.parametrize("op, expected", [
    (lambda x, o: x < o, [True, False, False]),
    (lambda x, o: x <= o, [True, True, False]),
    (lambda x, o: x > o, [False, False, True]),
    (lambda x, o: x >= o, [False, True, True]),
    (lambda x, o: x == o, [False, True, False]),
    (lambda x, o: x != o, [True, False, True]),
])
@pytest.mark.parametrize("other", ["scalar", "ndarray", "variable"])
def test_comparisons_return_plain_arrays(op, expected, other):
    x = var([1.0, 2.0, 3.0])
    o = {"scalar": 2.0, "ndarray": np.full(3, 2.0), "variable": var(np.full(3, 2.0))}[other]
    result = op(x, o)
    assert type(result) is np.ndarray
    np.testing.assert_array_equal(result, expected)


def test_comparison_with_ndarray_on_the_left_returns_array():
    x = var([1.0, 2.0, 3.0])
    result = np.full(3, 2.0) < x
    assert type(result) is np.ndarray
    np.testing.assert_array_equal(result, [False, False, True])


def test_variables_stay_hashable_by_identity():
    x, y = var([1.0]), var([1.0])
    assert len({x, y}) == 2
    assert {x: 1}[x] == 1


# ----- array methods ---------------------------------------------------------------------------
def test_getitem_basic_and_advanced_with_gradients():
    a = np.arange(12.0).reshape(3, 4)
    x = Variable(a.copy())
    np.testing.assert_array_equal(x[1].array, a[1])
    np.testing.assert_array_equal(x[:, 2].array, a[:, 2])
    np.testing.assert_array_equal(x[1:, ::2].array, a[1:, ::2])
    idx = np.array([0, 0, 2])
    y = x[idx]
    np.testing.assert_array_equal(y.array, a[idx])
    y.sum().backward()
    expected = np.zeros_like(a)
    expected[0] = 2.0  # row 0 picked twice: gradients add up
    expected[2] = 1.0
    np.testing.assert_array_equal(x.grad, expected)
    x.cleargrad()
    x[a > 5].sum().backward()
    np.testing.assert_array_equal(x.grad, (a > 5).astype(float))


@pytest.mark.parametrize("args", [((3, 2),), (3, 2), ((-1,),), (-1,)])
def test_reshape_accepts_tuple_or_varargs(args):
    a = np.arange(6.0).reshape(2, 3)
    x = Variable(a.copy())
    y = x.reshape(*args)
    np.testing.assert_array_equal(y.array, a.reshape(*args))
    (y * np.arange(6.0).reshape(y.shape)).sum().backward()
    np.testing.assert_array_equal(x.grad, np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("args", [(), ((2, 0, 1),), (2, 0, 1), (1, 2, 0)])
def test_transpose_method(args):
    a = np.arange(24.0).reshape(2, 3, 4)
    x = Variable(a.copy())
    y = x.transpose(*args)
    expected = a.transpose(*args)
    np.testing.assert_array_equal(y.array, expected)
    weight = np.arange(24.0).reshape(expected.shape)
    (y * weight).sum().backward()
    # the gradient is the weight moved back to x's layout
    axes = args[0] if args and isinstance(args[0], tuple) else (args or None)
    inverse = np.argsort(axes) if axes is not None else None
    np.testing.assert_array_equal(x.grad, weight.transpose(inverse))


@pytest.mark.parametrize("axis, keepdims", [(None, False), (0, False), (1, True), ((0, 2), False),
                                            (-1, False), (None, True)])
def test_sum_and_mean_methods(axis, keepdims):
    a = np.arange(24.0).reshape(2, 3, 4)
    x = Variable(a.copy())
    s = x.sum(axis=axis, keepdims=keepdims)
    np.testing.assert_array_equal(s.array, a.sum(axis=axis, keepdims=keepdims))
    s.sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones_like(a))
    x.cleargrad()
    m = x.mean(axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(m.array, a.mean(axis=axis, keepdims=keepdims))
    m.sum().backward()
    np.testing.assert_allclose(x.grad, np.full_like(a, m.size / a.size))


# ----- graph surgery -------------------------------------------------------------------------
def test_unchain_makes_a_leaf_and_frees_the_graph_behind_it():
    x = var([0.5, -1.0])
    h = F.tanh(x * 2.0)
    tanh_node = weakref.ref(h.creator)
    mul_node = weakref.ref(h.creator.inputs[0].creator)
    gc.disable()
    try:
        h.unchain()
        assert h.creator is None
        assert tanh_node() is None and mul_node() is None  # freed by refcounting alone
    finally:
        gc.enable()
    np.testing.assert_allclose(h.array, np.tanh([1.0, -2.0]))
    (h * 3.0).sum().backward()
    np.testing.assert_array_equal(h.grad, [3.0, 3.0])
    assert x.grad is None


def test_unchain_cuts_history_for_ops_already_built_on_it():
    # Chainer semantics: unchain removes the creator from the variable's graph node, so
    # an op built on `h` before the unchain backprops into `h`, not past it, and the
    # history behind `h` is not kept alive by that op.
    x = var([0.5, -1.0])
    h = F.tanh(x)
    tanh_node = weakref.ref(h.creator)
    y = (h * 2.0).sum()
    h.unchain()
    gc.collect()
    assert tanh_node() is None
    y.backward()
    assert x.grad is None
    np.testing.assert_array_equal(h.grad, [2.0, 2.0])


def test_detach_shares_the_array_and_has_no_history():
    x = var([1.0, 2.0], name="x")
    y = F.tanh(x)
    d = y.detach()
    assert d.array is y.array
    assert d.requires_grad is False
    assert d.creator is None
    assert d.name == y.name
    z = F.tanh(d) * 2.0
    assert z.creator is None  # a constant input builds no graph
    (y.sum() + (d * 5.0).sum()).backward()
    np.testing.assert_allclose(x.grad, 1 - np.tanh([1.0, 2.0]) ** 2)  # nothing via d
    assert d.grad is None


def test_as_variable():
    x = var([1.0])
    assert ms.as_variable(x) is x
    a = np.ones(2)
    c = ms.as_variable(a)
    assert isinstance(c, Variable) and c.array is a and c.requires_grad is False
    with pytest.raises(TypeError, match="list"):
        ms.as_variable([1.0])


def test_parameter():
    p = Parameter(np.zeros(3), name="w")
    assert isinstance(p, Variable)
    assert p.requires_grad is True
    assert p.name == "w"
    assert repr(p).startswith("Parameter(array([0., 0., 0.])")
    (p * 2.0 + 1.0).sum().backward()
    np.testing.assert_array_equal(p.grad, [2.0, 2.0, 2.0])
    with pytest.raises(TypeError, match="list"):
        Parameter([1.0])


def test_deepcopy_is_independent_of_the_original():
    import copy
    v = var([1.0, 2.0])
    v.grad = np.array([0.5, 0.5])
    v2 = copy.deepcopy(v)
    (v2 * 2).sum().backward()
    np.testing.assert_array_equal(v.grad, [0.5, 0.5])
    np.testing.assert_array_equal(v2.grad, [2.5, 2.5])
    v2.array[0] = 9.0
    assert v.array[0] == 1.0


def test_deepcopy_of_a_module_has_its_own_parameters():
    import copy
    lin = ms.nn.Linear(3, 2)
    ref = copy.deepcopy(lin)
    lin(Variable(np.ones((1, 3), dtype=np.float32))).sum().backward()
    assert all(p.grad is None for p in ref.parameters())
    assert all(p.grad is not None for p in lin.parameters())


def test_zerograd_fills_zeros_and_cleargrad_sets_none():
    v = var([1.0, 2.0])
    v.zerograd()
    np.testing.assert_array_equal(v.grad, [0.0, 0.0])
    (v * 3).sum().backward()
    np.testing.assert_array_equal(v.grad, [3.0, 3.0])
    v.cleargrad()
    assert v.grad is None


def test_unchain_backward_cuts_the_whole_graph():
    x = var([1.0, 2.0])
    h = x * 2
    y = h * 3
    y.unchain_backward()
    assert y.creator is None and h.creator is None


def test_integer_arrays_are_constants_by_default_and_cannot_require_grad():
    labels = Variable(np.arange(3))
    assert labels.requires_grad is False
    with pytest.raises(ms.DTypeError, match="only floating-point arrays can require gradients"):
        Variable(np.arange(3), requires_grad=True)
    with pytest.raises(ms.DTypeError):
        ms.Parameter(np.arange(3))
    with pytest.raises(ms.DTypeError):
        Variable(np.array([True]), requires_grad=True)


def test_grad_of_wrong_dtype_or_shape_is_rejected():
    v = var([1.0, 2.0])
    with pytest.raises(ms.DTypeError, match="gradient dtype float32 does not match"):
        v.grad = np.ones(2, dtype=np.float32)
    with pytest.raises(ms.ShapeError, match="gradient shape"):
        v.grad = np.ones(3)
