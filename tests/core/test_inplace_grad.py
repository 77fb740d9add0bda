"""In-place gradients (memsave/core/backprop.py): backward() hands an op the buffer of an output
gradient only when nothing but the engine holds it, the op writes its input gradient there, and
a gradient reaching a node twice is summed into the first one's buffer.

Each "must not" case of the module docstring has a test showing the array that someone else
holds is left as it was; gradients are checked against the same computation without handover
and against central differences; tracemalloc shows the transient buffer is gone.
"""
import tracemalloc

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import Variable
from memsave.core import backprop
from memsave.core.function import FunctionNode
from memsave.functions import activation, noise, normalization


class Double(FunctionNode):
    """``2 x``, whose backward records whether gy was handed over and, if so, doubles it in
    place (so any other holder of that buffer would see it change)."""

    overwritable_grads = (0,)
    seen: list = []

    def forward(self, x):
        return x * 2

    def backward(self, indexes, gy):
        handed = backprop.handed_over(gy)
        Double.seen.append(handed)
        if handed:
            gy.array[...] *= 2
            return Variable(gy.array, requires_grad=False)
        return gy * 2.0


def double(x):
    return Double().apply(x)[0]


@pytest.fixture(autouse=True)
def _clear_seen(monkeypatch):
    Double.seen = []
    monkeypatch.setattr(backprop, "_HAND_OVER_MIN_BYTES", 0)    # small arrays in most tests


def test_small_gradients_are_not_handed_over(monkeypatch):
    monkeypatch.setattr(backprop, "_HAND_OVER_MIN_BYTES", 1 << 16)
    for n, handed in ((8191, False), (8192, True)):                # float64: 64 KiB
        x = Variable(np.ones(n))
        (double(x) * 3.0).sum().backward()
        assert Double.seen[-1] is handed
        np.testing.assert_array_equal(x.grad, np.full(n, 6.0))


def f64(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----- when the engine hands a gradient over ---------------------------------------------------
def test_a_fresh_gradient_is_handed_over_and_the_result_is_right():
    x = Variable(f64(3, 4))
    c = f64(3, 4, seed=1)
    (double(x) * c).sum().backward()
    assert Double.seen == [True]
    np.testing.assert_array_equal(x.grad, 2 * c)


def test_a_chain_hands_the_same_buffer_along():
    x = Variable(f64(5))
    c = f64(5, seed=1)
    (double(double(double(x))) * c).sum().backward()
    assert Double.seen == [True, True, True]
    np.testing.assert_array_equal(x.grad, 8 * c)


def test_an_op_that_does_not_list_the_output_is_never_handed_anything():
    calls = []

    class Quiet(Double):
        overwritable_grads = ()

        def backward(self, indexes, gy):
            calls.append(backprop.handed_over(gy))
            return gy * 2.0

    x = Variable(f64(4))
    (Quiet().apply(x)[0] * 3.0).sum().backward()
    assert calls == [False]


# ----- when it must not: each holder of the gradient keeps its values ------------------------
def test_retain_grad_keeps_the_intermediate_gradient():
    x = Variable(f64(4))
    c = f64(4, seed=1)
    y = double(x)
    (y * c).sum().backward(retain_grad=True)
    assert Double.seen == [False]
    np.testing.assert_array_equal(y.grad, c)
    np.testing.assert_array_equal(x.grad, 2 * c)


def test_create_graph_hands_nothing_over_and_second_derivatives_stay_right():
    x = Variable(f64(4))
    y = double(x)
    gx, = ms.grad((y * y).sum(), x, create_graph=True)    # 8 x
    assert Double.seen == [False]
    np.testing.assert_allclose(gx.array, 8 * x.array)
    ggx, = ms.grad(gx.sum(), x)
    np.testing.assert_allclose(ggx.array, np.full(4, 8.0))


def test_a_grad_target_gradient_is_returned_unchanged():
    x = Variable(f64(4))
    c = f64(4, seed=1)
    y = double(x)
    gy, gx = ms.grad((y * c).sum(), [y, x])
    assert Double.seen == [False]
    np.testing.assert_array_equal(gy.array, c)
    np.testing.assert_array_equal(gx.array, 2 * c)


@pytest.mark.parametrize("wrap", [lambda g: g, lambda g: Variable(g, requires_grad=False)],
                         ids=["array", "Variable"])
def test_user_grad_outputs_are_never_written(wrap):
    x = Variable(f64(4))
    g = f64(4, seed=1)
    before = g.copy()
    double(x).backward(wrap(g))
    assert Double.seen == [False]
    np.testing.assert_array_equal(g, before)
    np.testing.assert_array_equal(x.grad, 2 * before)


def test_a_temporary_grad_output_is_not_written_either():
    x = Variable(f64(4))
    ms.backward([double(x)], [np.ones(4)])
    assert Double.seen == [False]
    np.testing.assert_array_equal(x.grad, np.full(4, 2.0))


def test_a_gradient_shared_with_a_leaf_is_not_written():
    # Add hands the same gradient Variable to both inputs: the leaf w and double's output.
    x, w = Variable(f64(4)), Variable(f64(4, seed=2))
    c = f64(4, seed=1)
    ((double(x) + w) * c).sum().backward()
    assert Double.seen == [False]
    np.testing.assert_array_equal(w.grad, c)
    np.testing.assert_array_equal(x.grad, 2 * c)


def test_a_gradient_shared_by_two_ops_is_written_only_by_the_last_reader():
    a, b = Variable(f64(4)), Variable(f64(4, seed=2))
    c = f64(4, seed=1)
    ((double(a) + double(b)) * c).sum().backward()
    assert sorted(Double.seen) == [False, True]
    np.testing.assert_array_equal(a.grad, 2 * c)
    np.testing.assert_array_equal(b.grad, 2 * c)


def test_a_gradient_array_a_hook_kept_is_not_written():
    x, w = Variable(f64(4)), Variable(f64(4, seed=2))
    c = f64(4, seed=1)
    kept = []

    def keep_and_clear(v):                    # e.g. a gradient bucket for an all-reduce
        kept.append(v.grad)
        v.cleargrad()

    w.register_post_accumulate_grad_hook(keep_and_clear)
    ((double(x) + w) * c).sum().backward()
    assert Double.seen == [False]
    np.testing.assert_array_equal(kept[0], c)
    np.testing.assert_array_equal(x.grad, 2 * c)


def test_a_gradient_a_hook_dropped_is_handed_over():
    x, w = Variable(f64(4)), Variable(f64(4, seed=2))
    c = f64(4, seed=1)
    w.register_post_accumulate_grad_hook(lambda v: v.cleargrad())  # e.g. step_in_backward
    ((double(x) + w) * c).sum().backward()
    assert Double.seen == [True]
    np.testing.assert_array_equal(x.grad, 2 * c)


def test_a_view_of_a_gradient_someone_else_holds_is_not_written():
    # x1's gradient and the reshaped gradient reaching double share one buffer.
    x1, x2 = Variable(f64(2, 3)), Variable(f64(6, seed=2))
    c = f64(2, 3, seed=1)
    ((x1 + F.reshape(double(x2), (2, 3))) * c).sum().backward()
    assert Double.seen == [False]
    np.testing.assert_array_equal(x1.grad, c)
    np.testing.assert_array_equal(x2.grad, 2 * c.reshape(6))


class ReturnsItsInput(FunctionNode):
    """``x * 1`` whose (deliberately odd) backward returns its saved input as the gradient."""

    def forward(self, x):
        self.retain_inputs(0)
        return x * 1

    def backward(self, indexes, gy):
        x, = self.retained_inputs()
        return x


def test_a_saved_array_returned_as_a_gradient_is_not_written():
    # With retain_graph the saved input (double's output) is still needed: the second backward
    # would raise InPlaceError (or compute from changed values) had double written into it.
    # The last backward releases it first: then nobody else has it, and it is handed over.
    x = Variable(f64(4))
    y = ReturnsItsInput().apply(double(x))[0].sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    x.cleargrad()
    y.backward()
    assert Double.seen == [False, True]
    np.testing.assert_array_equal(x.grad, first)
    np.testing.assert_array_equal(first, 2 * 2 * x.array)


# ----- accumulation into the first gradient's buffer ------------------------------------------
def test_accumulation_is_right_and_retain_grad_sees_the_whole_sum():
    x = Variable(f64(3, 2))
    a, b, c = f64(3, 2, seed=1), f64(3, 2, seed=2), f64(3, 2, seed=3)
    y = F.tanh(x)
    (y * a + y * b + y * c).sum().backward(retain_grad=True)
    np.testing.assert_allclose(y.grad, a + b + c)
    np.testing.assert_allclose(x.grad, (a + b + c) * (1 - np.tanh(x.array) ** 2))


def test_accumulation_leaves_a_shared_gradient_alone():
    # (x + x): Add gives the same gradient Variable to both of x's slots.
    x = Variable(f64(4))
    g = Variable(f64(4, seed=1), requires_grad=False)
    gx, = ms.grad(double(x) + double(x), x, [g])
    np.testing.assert_array_equal(gx.array, 4 * g.array)
    np.testing.assert_array_equal(g.array, f64(4, seed=1))


# ----- the ops that overwrite their output gradient ------------------------------------------
OPS = {
    "tanh": (activation, F.tanh),
    "sigmoid": (activation, F.sigmoid),
    "relu": (activation, F.relu),
    "leaky_relu": (activation, lambda x: F.leaky_relu(x, 0.1)),
    "leaky_relu_negative": (activation, lambda x: F.leaky_relu(x, -0.5)),
    "gelu": (activation, F.gelu),
    "gelu_exact": (activation, lambda x: F.gelu(x, approximate="none")),
    "dropout": (noise, lambda x: F.dropout(x, 0.3, train=True)),
    "layer_norm": (normalization, lambda x: F.layer_norm(x, np.linspace(0.5, 1.5, x.shape[1]),
                                                          np.linspace(-1, 1, x.shape[1]))),
    "batch_norm": (normalization, lambda x: F.batch_norm(x, np.linspace(0.5, 1.5, x.shape[1]),
                                                         np.linspace(-1, 1, x.shape[1]),
                                                         train=True)),
}


@pytest.fixture
def handovers(monkeypatch):
    """Record what ``handed_over`` answers inside each op module."""
    answers = []

    def recording(gy):
        answers.append(backprop.handed_over(gy))
        return answers[-1]

    for module in (activation, noise, normalization):
        monkeypatch.setattr(module, "handed_over", recording)
    return answers


@pytest.mark.parametrize("name", OPS)
def test_ops_write_into_the_handed_gradient_with_the_same_result(name, handovers):
    _, op = OPS[name]
    x0 = f64(4, 5) + 0.01        # away from relu's kink
    c = f64(4, 5, seed=1)

    def gradient(handed):
        ms.random.seed(0)
        x = Variable(x0.copy())
        y = op(x)
        if handed:
            (y * c).sum().backward()              # Mul's gradient gy * c: fresh, the engine's
        else:
            y.backward(c.copy())                  # a user's array: never handed over
        return x.grad

    plain = gradient(False)
    assert handovers == [False]
    in_place = gradient(True)
    assert handovers == [False, True]
    np.testing.assert_array_equal(in_place, plain)


@pytest.mark.parametrize("name", OPS)
def test_ops_gradients_with_handover_match_central_differences(name):
    _, op = OPS[name]
    x0 = f64(3, 5) + 0.01

    def fn(x):
        ms.random.seed(0)
        return op(x) * 2.0                        # op's gradient then comes from Mul: handed

    assert ms.gradcheck(fn, [x0])
    assert ms.gradgradcheck(lambda x: fn(x) * (x * x).sum(), [x0])


def _backward_peak(fn, x0):
    """Peak bytes above the post-forward state while backward runs."""
    x = Variable(x0)
    loss = fn(x)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "relu", "gelu", "dropout", "layer_norm"])
def test_the_transient_input_sized_buffer_is_gone(name):
    # Backward of (op(x) * c).sum(): Mul makes gy (one x-sized buffer); the op writes gx into
    # it, with chunk-sized temporaries (0.5 MiB each) on top.  Without the handover the op's
    # result is a second x-sized buffer: 2.07 x (dropout) to 2.3 x (gelu), measured.
    _, op = OPS[name]
    x0 = f64(1024, 1024)                          # 8 MiB
    c = f64(1024, 1024, seed=1)
    ms.random.seed(0)
    peak = _backward_peak(lambda x: (op(x) * c).sum(), x0)
    assert peak < 1.4 * x0.nbytes, (name, peak / x0.nbytes)


def test_accumulation_in_place_saves_a_buffer():
    # y feeds two Muls: their gradients meet at y. Summed in place, backward holds y's two
    # partial gradients at most (2 x), not a third for their sum.
    x0 = f64(1024, 1024)
    a, b = f64(1024, 1024, seed=1), f64(1024, 1024, seed=2)

    def fn(x):
        y = F.tanh(x)
        return (y * a + y * b).sum()

    peak = _backward_peak(fn, x0)
    assert peak < 2.25 * x0.nbytes, peak / x0.nbytes


# ----- a retained input's buffer taken for the input gradient (linear) ------------------------
def _linear_case(seed=0):
    rng = np.random.default_rng(seed)
    x0, W, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 4)), rng.standard_normal(4)
    c = rng.standard_normal((6, 4))
    return x0, W, b, c


def _expected_linear_grad(x0, W, b, c):
    h = np.tanh(x0)
    return (c @ W) * (1 - h * h)


def test_linear_writes_gx_into_its_input_buffer_when_nothing_else_holds_it(monkeypatch):
    x0, W, b, c = _linear_case()
    taken = []
    from memsave.functions import connection
    monkeypatch.setattr(connection, "take_input",
                        lambda f, i: taken.append(backprop.take_input(f, i)) or taken[-1])
    x = Variable(x0.copy())
    (F.linear(F.tanh(x) * 1.0, W, b) * c).sum().backward()   # tanh(x) * 1.0: held by Linear only
    assert taken[0] is not None
    np.testing.assert_allclose(x.grad, _expected_linear_grad(x0, W, b, c))


@pytest.mark.parametrize("case", ["user holds x", "x read twice", "x a leaf", "retain_graph",
                                  "create_graph"])
def test_linear_leaves_an_input_someone_else_holds(case, monkeypatch):
    x0, W, b, c = _linear_case()
    taken = []
    from memsave.functions import connection
    monkeypatch.setattr(connection, "take_input",
                        lambda f, i: taken.append(backprop.take_input(f, i)) or taken[-1])
    x = Variable(x0.copy())
    h = F.tanh(x) * 1.0
    before = h.array.copy()
    if case == "x read twice":                 # a second op keeps h for its own backward
        loss = (F.linear(h, W, b) * c).sum() + (h * h).sum()
    elif case == "x a leaf":
        h = Variable(before.copy())
        loss = (F.linear(h, W, b) * c).sum()
    else:
        loss = (F.linear(h, W, b) * c).sum()
    if case == "retain_graph":
        loss.backward(retain_graph=True)
        first = x.grad.copy()
        x.cleargrad()
        loss.backward()                          # reads the kept input again
        np.testing.assert_allclose(x.grad, first)
    elif case == "create_graph":
        gx, = ms.grad(loss, x, create_graph=True)
        np.testing.assert_allclose(gx.array, _expected_linear_grad(x0, W, b, c))
    else:
        loss.backward()
    assert taken[0] is None
    if case in ("user holds x", "x a leaf"):
        np.testing.assert_array_equal(h.array, before)
    if case == "x read twice":
        t = np.tanh(x0)
        np.testing.assert_allclose(x.grad, (c @ W + 2 * t) * (1 - t * t))


def test_linear_in_a_checkpoint_takes_the_recomputed_input_but_not_the_checkpoints_own():
    x0, W, b, c = _linear_case()
    x = Variable(x0.copy())
    y = ms.checkpoint(lambda v: F.linear(F.tanh(v) * 1.0, W, b), x)
    (y * c).sum().backward()
    np.testing.assert_allclose(x.grad, _expected_linear_grad(x0, W, b, c))
    # The checkpoint's own input z is kept for the recomputation, which runs after linear's
    # backward here (for tanh's output): linear must not write its gradient into z.
    x = Variable(x0.copy())
    z = F.tanh(x) * 1.0
    y = ms.checkpoint(lambda v: F.linear(v, W, b) + F.tanh(v), z)
    del z
    (y * c).sum().backward()
    t = np.tanh(x0)
    gz = c @ W + c * (1 - np.tanh(t) ** 2)
    np.testing.assert_allclose(x.grad, gz * (1 - t * t))


def test_linear_backward_needs_no_buffer_for_gx():
    # Backward of linear(h) with h held by linear alone: gx takes h's buffer, so backward
    # allocates gy (Mul's), gW and gb, not a second h-sized array.
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((2048, 256))                  # 4 MiB
    W, c = rng.standard_normal((256, 256)) * 0.05, rng.standard_normal((2048, 256))

    def fn(x):
        return (F.linear(x * 1.0, W) * c).sum()

    peak = _backward_peak(fn, x0)
    assert peak < 1.2 * x0.nbytes, peak / x0.nbytes


def test_the_two_gradients_of_y_times_y_are_summed_in_place():
    # Mul(y, y) gives y two gradients in one backward call; the engine lets go of the first
    # before adding the second into it: backward holds 2 y-sized buffers at most, not 3.
    x0 = f64(1024, 1024)

    def fn(x):
        y = F.tanh(x)
        return (y * y).sum()

    peak = _backward_peak(fn, x0)
    assert peak < 2.25 * x0.nbytes, peak / x0.nbytes
    x = Variable(x0.copy())
    fn(x).backward()
    t = np.tanh(x0)
    np.testing.assert_allclose(x.grad, 2 * t * (1 - t * t))
