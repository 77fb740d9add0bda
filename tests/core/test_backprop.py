"""backward() and grad(): accumulation, retain/create graph, deep graphs, memory."""
import gc
import subprocess
import sys
import textwrap
import tracemalloc
import weakref

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import Variable


def var(values, **kwargs):
    return Variable(np.asarray(values, dtype=np.float64), **kwargs)


# ----- basic propagation -----------------------------------------------------------------------
def test_fan_out_accumulates_gradients():
    x = var([1.0, -2.0])
    (x + x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    x.cleargrad()
    (x * x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 3 * np.array([1.0, -2.0]) ** 2)


def test_diamond_graph():
    a0 = np.array([0.3, -0.8, 1.2])
    x = Variable(a0.copy())
    a = F.tanh(x)
    b = a * 2.0
    c = a * 3.0
    (b * c).sum().backward()  # 6 tanh(x)^2
    t = np.tanh(a0)
    np.testing.assert_allclose(x.grad, 12 * t * (1 - t * t))


def test_nested_diamonds_visit_each_function_once():
    calls = []

    class Count(ms.FunctionNode):
        def forward(self, x):
            return x.copy()

        def backward(self, indexes, gy):
            calls.append(self)
            return gy

    x = var([1.0])
    h = Count().apply(x)[0]
    for _ in range(5):
        h = Count().apply(h)[0] + Count().apply(h)[0]
    h.backward()
    assert len(calls) == len(set(map(id, calls))) == 11
    np.testing.assert_array_equal(x.grad, [32.0])


def test_gradients_accumulate_across_backward_calls():
    a0 = np.array([1.0, 2.0])
    x = Variable(a0.copy())
    (x * x).sum().backward()
    (3.0 * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * a0 + 3.0)


def test_backward_of_a_leaf_seeds_its_own_grad():
    x = var(2.0)
    x.backward()
    np.testing.assert_array_equal(x.grad, 1.0)


def test_retain_grad_keeps_intermediate_gradients():
    x = var([0.5, 1.0])
    h = x * 2.0
    y = (h * h).sum()
    y.backward()
    assert h.grad is None and y.grad is None
    x.cleargrad()
    h = x * 2.0
    y = (h * h).sum()
    y.backward(retain_grad=True)
    np.testing.assert_allclose(h.grad, 2 * np.array([1.0, 2.0]))
    np.testing.assert_array_equal(y.grad, 1.0)
    np.testing.assert_allclose(x.grad, 4 * h.array)


def test_implicit_seed_only_for_single_element_outputs():
    x = var([[1.0, 2.0]])
    (x * 2.0)[:, :1].backward()  # shape (1, 1): ones are implied
    np.testing.assert_array_equal(x.grad, [[2.0, 0.0]])
    with pytest.raises(ValueError, match=r"single-element.*\(1, 2\).*grad_outputs"):
        (x * 2.0).backward()


def test_explicit_seed_for_vector_output():
    x = var([1.0, 2.0, 3.0])
    (x * x).backward(np.array([1.0, 0.0, -1.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 0.0, -6.0])
    with pytest.raises(ValueError, match=r"\(2,\).*\(3,\)"):
        (x * x).backward(np.ones(2))


def test_backward_function_with_several_outputs():
    x = var([1.0, 2.0])
    ms.backward([(x * x).sum(), (x * 3.0).sum()])
    np.testing.assert_array_equal(x.grad, [5.0, 7.0])
    with pytest.raises(ValueError, match="2 outputs but 1 grad_outputs"):
        ms.backward([(x * x).sum(), x.sum()], [None])
    with pytest.raises(TypeError, match="ndarray"):
        ms.backward([np.ones(1)])


# ----- retain_graph ---------------------------------------------------------------------------
def test_second_backward_without_retain_graph_raises():
    x = var([0.5, -0.5])
    y = F.tanh(x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_second_backward_with_retain_graph_doubles_gradients():
    a0 = np.array([0.5, -0.5])
    x = Variable(a0.copy())
    y = F.tanh(x * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    np.testing.assert_allclose(first, 2 * a0 * (1 - np.tanh(a0 * a0) ** 2))
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * first)


def test_grad_without_retain_graph_frees_the_graph_too():
    x = var([0.5])
    y = F.tanh(x).sum()
    ms.grad(y, x)
    with pytest.raises(RuntimeError, match="retain_graph"):
        ms.grad(y, x)


# ----- create_graph: higher derivatives -----------------------------------------------------
def test_third_derivative_of_cube():
    x = var(2.0)
    y = x ** 3
    g1, = ms.grad(y, x, create_graph=True)
    g2, = ms.grad(g1, x, create_graph=True)
    g3, = ms.grad(g2, x)
    assert (float(g1.array), float(g2.array), float(g3.array)) == (12.0, 12.0, 6.0)


def test_third_derivative_of_tanh():
    a0 = np.array([-1.3, -0.2, 0.0, 0.4, 2.1])
    x = Variable(a0.copy())
    g1, = ms.grad(F.tanh(x).sum(), x, create_graph=True)
    g2, = ms.grad(g1.sum(), x, create_graph=True)
    g3, = ms.grad(g2.sum(), x)
    t = np.tanh(a0)
    np.testing.assert_allclose(g1.array, 1 - t ** 2)
    np.testing.assert_allclose(g2.array, -2 * t * (1 - t ** 2), atol=1e-12)
    np.testing.assert_allclose(g3.array, (1 - t ** 2) * (6 * t ** 2 - 2))


def test_backward_create_graph_gives_differentiable_grad_var():
    a0 = np.array([0.5, 1.5])
    x = Variable(a0.copy())
    (x ** 3).sum().backward(create_graph=True)
    gx = x.grad_var
    assert gx.creator is not None
    np.testing.assert_allclose(gx.array, 3 * a0 ** 2)
    x.cleargrad()
    gx.sum().backward()
    np.testing.assert_allclose(x.grad, 6 * a0)


def test_without_create_graph_gradients_have_no_graph():
    x = var([0.5, 1.5])
    (x ** 3).sum().backward()
    assert x.grad_var.creator is None
    assert x.grad_var.requires_grad is False
    gx, = ms.grad((x ** 3).sum(), x)
    assert gx.creator is None


def test_mixed_second_derivative():
    x, y = var(1.5), var(-0.5)
    gx, = ms.grad(x * x * y, x, create_graph=True)  # 2xy
    gxy, = ms.grad(gx, y)                           # 2x
    assert float(gxy.array) == 3.0


# ----- grad() ---------------------------------------------------------------------------------
def test_grad_allow_unused():
    x, unused = var([1.0]), var([2.0])
    y = (x * 3.0).sum()
    with pytest.raises(RuntimeError, match=r"\[1\].*allow_unused=True"):
        ms.grad(y, [x, unused], retain_graph=True)
    gx, gu = ms.grad(y, [x, unused], allow_unused=True)
    np.testing.assert_array_equal(gx.array, [3.0])
    assert gu is None


def test_grad_with_respect_to_non_leaf_inputs():
    a0 = np.array([0.2, -0.6])
    x = Variable(a0.copy())
    h = x * x
    y = F.tanh(h).sum()
    gh, gx = ms.grad(y, [h, x])
    np.testing.assert_allclose(gh.array, 1 - np.tanh(a0 ** 2) ** 2)
    np.testing.assert_allclose(gx.array, gh.array * 2 * a0)
    assert x.grad is None and h.grad is None


def test_grad_stops_at_a_non_leaf_input():
    calls = []

    class Spy(ms.FunctionNode):
        def forward(self, x):
            return x * 2

        def backward(self, indexes, gy):
            calls.append(1)
            return gy * 2

    x = var([1.0])
    h = Spy().apply(x)[0]
    y = (h * 5.0).sum()
    gh, = ms.grad(y, h)
    np.testing.assert_array_equal(gh.array, [5.0])
    assert calls == []  # nothing below h was differentiated


def test_grad_outputs_weight_the_outputs():
    x = var([1.0, 2.0, 3.0])
    gx, = ms.grad([x * x], [x], grad_outputs=[np.array([1.0, 10.0, 100.0])])
    np.testing.assert_array_equal(gx.array, [2.0, 40.0, 600.0])
    y1, y2 = x * 2.0, x.sum()
    gx, = ms.grad([y1, y2], x, grad_outputs=[var([1.0, 1.0, 1.0], requires_grad=False), None])
    np.testing.assert_array_equal(gx.array, [3.0, 3.0, 3.0])


def test_grad_does_not_touch_dot_grad():
    x = var([1.0, 2.0])
    gx, = ms.grad((x * x).sum(), x)
    assert x.grad is None
    x.grad = np.array([7.0, 7.0])
    gx, = ms.grad((x * x).sum(), x)
    np.testing.assert_array_equal(x.grad, [7.0, 7.0])
    np.testing.assert_array_equal(gx.array, [2.0, 4.0])


def test_grad_rejects_bad_inputs():
    c = var([1.0], requires_grad=False)
    with pytest.raises(ValueError, match="requires_grad=False"):
        ms.grad((c * 2.0).sum(), c)
    with pytest.raises(TypeError, match="ndarray"):
        ms.grad(var(1.0) * 2.0, [np.ones(1)])


def test_grad_of_output_with_respect_to_itself():
    x = var([1.0, 2.0])
    gx, = ms.grad(x.sum(), x)
    np.testing.assert_array_equal(gx.array, [1.0, 1.0])


# ----- deep graphs -----------------------------------------------------------------------------
DEPTH = 10_000


def test_deep_chain_backprops_without_recursion_error():
    x = var(0.9)
    y = x
    for _ in range(DEPTH):
        y = F.tanh(y) * 1.0
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(500)  # far below the depth: any recursion would fail loudly
    try:
        y.backward()
    finally:
        sys.setrecursionlimit(limit)
    value, expected = 0.9, 1.0
    for _ in range(DEPTH):
        value = np.tanh(value)
        expected *= 1 - value * value
    np.testing.assert_allclose(x.grad, expected, rtol=1e-10)


def test_deep_chain_grad_and_create_graph():
    x = var(0.3)
    y = x
    for _ in range(2000):
        y = y * 1.0 + 0.0
    gx, = ms.grad(y, x, create_graph=True)
    assert float(gx.array) == 1.0


def test_deep_graph_is_freed_without_recursion_error():
    # In a subprocess: a recursive deallocation would crash the interpreter, not raise.
    code = textwrap.dedent(f"""
        import gc, sys, weakref
        import numpy as np, memsave as ms, memsave.functions as F
        gc.disable()
        x = ms.Variable(np.array(0.5))
        y = x
        for _ in range({DEPTH}):
            y = F.tanh(y) * 1.0
        first = weakref.ref(x.node)
        last = weakref.ref(y.creator)
        del y
        assert last() is None, "graph not freed by refcounting"
        y = x
        for _ in range({DEPTH}):
            y = F.tanh(y) * 1.0
        y.backward()
        del y
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "RecursionError" not in proc.stderr and "Exception ignored" not in proc.stderr


# ----- memory: no cycles, everything released ---------------------------------------------
def _mlp(x, Ws):
    h = x
    for W in Ws:
        h = F.tanh(h @ W)
    return h


def _make_mlp(width=64, depth=16, batch=128):
    rng = np.random.default_rng(0)
    x = Variable(rng.standard_normal((batch, width)), requires_grad=False)
    Ws = [ms.Parameter(rng.standard_normal((width, width)) / np.sqrt(width)) for _ in range(depth)]
    return x, Ws


def test_graph_is_freed_by_refcounting_alone():
    x, Ws = _make_mlp(width=8, depth=4, batch=4)
    gc.collect()
    gc.disable()
    try:
        y = _mlp(x, Ws).sum()
        nodes = []
        f = y.creator
        while f is not None:
            nodes.append(weakref.ref(f))
            f = f.inputs[0].creator
        assert len(nodes) == 1 + 2 * 4
        y.backward()
        del y, f
        alive = [r() for r in nodes if r() is not None]
        assert alive == []
        # forward only, never backward: still no cycle
        y = _mlp(x, Ws).sum()
        ref = weakref.ref(y.creator)
        del y
        assert ref() is None
    finally:
        gc.enable()


def test_no_memsave_object_is_left_in_reference_cycles():
    from memsave.core.saved import SavedArray
    kinds = (ms.FunctionNode, ms.Variable, ms.VariableNode, SavedArray)
    x, Ws = _make_mlp(width=8, depth=4, batch=4)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        y = _mlp(x, Ws).sum()
        y.backward(create_graph=True)
        gx, = ms.grad((Ws[0].grad_var ** 2).sum(), Ws[0])
        del y, gx
        for W in Ws:
            W.cleargrad()
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, kinds)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []


def test_memory_returns_to_baseline_after_forward_backward():
    x, Ws = _make_mlp()
    act_bytes = x.array.nbytes  # 64 KiB per activation
    for _ in range(2):  # warm up caches (NumPy, imports) outside the measurement
        _mlp(x, Ws).sum().backward()
        for W in Ws:
            W.cleargrad()
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        y = _mlp(x, Ws).sum()
        after_forward = tracemalloc.get_traced_memory()[0]
        assert after_forward - baseline >= 16 * act_bytes  # the activations really are kept
        tracemalloc.reset_peak()
        y.backward()
        after_backward, peak = tracemalloc.get_traced_memory()
        grad_bytes = sum(W.array.nbytes for W in Ws)
        # saved arrays went away during backward; what is left is the gradients of the Ws
        assert after_backward - baseline <= grad_bytes + act_bytes
        # the backward pass never held much more than the forward left behind
        assert peak - after_forward <= grad_bytes + 4 * act_bytes
        del y
        for W in Ws:
            W.cleargrad()
        # A full collection also empties CPython's free lists (tuples, dicts), which tracemalloc
        # counts as allocated; it must find no unreachable objects: nothing was in a cycle.
        assert gc.collect() == 0
        end = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert end - baseline < 16 * 1024, end - baseline


def test_saved_arrays_are_released_one_by_one_during_backward():
    class Box:
        def __init__(self, array):
            self.array = array

    boxes = []
    live_at_unpack = []

    def pack(array, fn):
        box = Box(array)
        boxes.append(weakref.ref(box))
        return box

    def unpack(box):
        live_at_unpack.append(sum(r() is not None for r in boxes))
        return box.array

    n = 12
    x = var(np.linspace(-1, 1, 5))
    with ms.saved_array_hooks(pack, unpack):
        y = x
        for _ in range(n):
            y = F.tanh(y)  # saves its output: one box per layer
        y = y.sum()
    assert len(boxes) == n
    y.backward()
    assert live_at_unpack == list(range(n, 0, -1))
    assert all(r() is None for r in boxes)


def test_no_grad_builds_no_graph_and_saves_nothing():
    packed = []
    x = var([0.5, 1.0])
    with ms.saved_array_hooks(lambda a, fn: packed.append(a) or a, lambda a: a):
        with ms.no_grad():
            y = F.tanh(x * x) @ np.ones((2, 3))
            y = F.sigmoid(y).sum()
        assert y.creator is None and y.requires_grad is False
        assert packed == []
        with ms.no_grad(), ms.enable_grad():
            z = F.tanh(x * x).sum()
        assert z.creator is not None
        # Mul keeps its leaf input x by reference (no pack); Tanh packs its output
        assert len(packed) == 1


def _custom(backward_result):
    class Custom(ms.FunctionNode):
        def forward(self, x):
            return x * 2

        def backward(self, indexes, gy):
            return backward_result(gy)

    return Custom


@pytest.mark.parametrize("result, error, match", [
    (lambda gy: gy.array, TypeError, r"Custom\.backward returned ndarray"),
    (lambda gy: [gy], TypeError, r"Custom\.backward returned list"),
    (lambda gy: (gy, gy), RuntimeError, r"Custom\.backward returned 2 gradients for 1 inputs"),
    (lambda gy: ms.Variable(np.ones(3, dtype=np.int64)), ms.DTypeError,
     r"Custom\.backward returned a int64 gradient for input 0"),
    (lambda gy: ms.Variable(np.ones(4)), ms.ShapeError,
     r"Custom\.backward returned a gradient of shape \(4,\) for input 0 of shape \(3,\)"),
])
def test_bad_custom_backward_results_raise_naming_the_op(result, error, match):
    x = ms.Variable(np.ones(3))
    y, = _custom(result)().apply(x)
    with pytest.raises(error, match=match):
        y.sum().backward()


def test_gradient_keeps_the_variables_dtype():
    x = ms.Variable(np.ones(3, dtype=np.float32))
    (x * np.full(3, 2.0)).sum().backward()      # float32 * float64
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_backward_of_an_output_computed_under_no_grad_raises():
    x = ms.Variable(np.ones(2))
    with ms.no_grad():
        y = (x * 2).sum()
    with pytest.raises(RuntimeError, match="no_grad"):
        y.backward()


def test_grad_rejects_non_variables():
    x = ms.Variable(np.ones(2))
    with pytest.raises(TypeError, match="grad\\(\\) outputs must be a Variable"):
        ms.grad(3.0, x)
    with pytest.raises(TypeError, match=r"grad\(\) inputs\[0\] must be a Variable"):
        ms.grad((x * x).sum(), [np.ones(2)])


def test_grad_chainer_options():
    x = ms.Variable(np.array([1.0, 2.0]))
    h = x * 3
    y = (h * h).sum()
    gx, = ms.grad([y], [x], grad_inputs=[np.ones(2)], set_grad=True, retain_grad=True)
    np.testing.assert_allclose(gx.array, 18 * x.array + 1)
    np.testing.assert_allclose(x.grad, gx.array)            # set_grad
    np.testing.assert_allclose(h.grad, 2 * h.array)         # retain_grad: intermediates too
    gx2, = ms.grad((x * x * x).sum(), x, enable_double_backprop=True)
    assert gx2.creator is not None
