"""Numerical gradient checks (memsave/gradcheck.py)."""
import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import FunctionNode, Variable
from memsave.gradcheck import GradcheckError, gradcheck, gradgradcheck, numerical_grad

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4))
Y = RNG.standard_normal((3, 4))
W = RNG.standard_normal((4, 2))


class WrongSquare(FunctionNode):
    """x**2 whose backward is wrong at one element: (1, 2) gets 3x instead of 2x."""

    def forward(self, x):
        self.retain_inputs(0)
        return x * x

    def backward(self, indexes, gy):
        x, = self.retained_inputs()
        scale = np.full(x.shape, 2.0)
        scale[1, 2] = 3.0
        return gy * x * scale


class FrozenSquare(FunctionNode):
    """x**2 with a correct first derivative that is invisible to double backprop:
    backward uses a constant copy of x instead of the retained Variable."""

    def forward(self, x):
        self.save_for_backward(x.copy())
        return x * x

    def backward(self, indexes, gy):
        x, = self.saved
        return gy * (2.0 * x)


def test_numerical_grad_matches_analytic():
    g, = numerical_grad(lambda x: x * x * x, [X], [np.ones_like(X)])
    np.testing.assert_allclose(g, 3 * X ** 2, rtol=1e-6)
    gw = RNG.standard_normal((3, 2))
    gx, gw_ = numerical_grad(lambda x, w: x @ w, [X, W], [gw])
    np.testing.assert_allclose(gx, gw @ W.T, rtol=1e-6)
    np.testing.assert_allclose(gw_, X.T @ gw, rtol=1e-6)


def test_numerical_grad_does_not_modify_inputs_and_skips_integer_inputs():
    x = X.copy()
    labels = np.array([0, 2, 1])
    gx, gl = numerical_grad(lambda a, i: a[np.arange(3), i.array], [x, labels], [np.ones(3)])
    np.testing.assert_array_equal(x, X)
    expected = np.zeros_like(X)
    expected[np.arange(3), labels] = 1.0
    np.testing.assert_allclose(gx, expected, atol=1e-8)
    np.testing.assert_array_equal(gl, 0)


@pytest.mark.parametrize("fn, inputs", [
    (F.tanh, [X]),
    (F.sigmoid, [X]),
    (lambda x, y: x * y + x / (y * y + 1.0), [X, Y]),
    (lambda x, w: F.tanh(x @ w).sum(axis=0), [X, W]),
    (lambda x: (x ** 3).mean(axis=1), [X]),
    (lambda x: x[1:, ::2].T.reshape(-1), [X]),
    (lambda x, y: (x - y, x * 2.0), [X, Y]),  # several outputs
])
def test_gradcheck_passes_on_correct_ops(fn, inputs):
    assert gradcheck(fn, inputs) is True


def test_gradcheck_with_explicit_grad_outputs():
    assert gradcheck(lambda x: x * x, [X], grad_outputs=[np.ones_like(X)])


def test_gradcheck_names_the_input_and_element_of_a_wrong_backward():
    with pytest.raises(GradcheckError, match=r"input 0: gradient mismatch at index \(1, 2\)"):
        gradcheck(lambda x: WrongSquare().apply(x)[0], [X])
    with pytest.raises(GradcheckError, match=r"input 1: .*index \(1, 2\).*1 of 12 elements"):
        gradcheck(lambda a, b: a * 2.0 + WrongSquare().apply(b)[0], [X, Y])


def test_gradcheck_names_the_input_by_its_position_among_all_inputs():
    # An integer input (labels) is not differentiated, but the message must still name
    # the wrong input by its position in `inputs`.
    labels = np.array([0, 1, 2])

    def fn(i, a, b):
        return a[np.arange(3), i.array] + WrongSquare().apply(b)[0][np.arange(3), 2]

    with pytest.raises(GradcheckError, match=r"input 2: gradient mismatch at index \(1, 2\)"):
        gradcheck(fn, [labels, X, Y])


def test_gradcheck_reports_wrong_gradient_shape():
    class WrongShape(FunctionNode):
        def forward(self, x):
            return x.sum(axis=0)

        def backward(self, indexes, gy):
            return Variable(np.ones((9,)), requires_grad=False)

    with pytest.raises(ms.ShapeError, match=r"\(9,\).*\(3, 4\)"):  # refused, never passed
        gradcheck(lambda x: WrongShape().apply(x)[0], [X])


def test_gradgradcheck_passes_on_correct_second_derivatives():
    assert gradgradcheck(F.tanh, [X])
    assert gradgradcheck(lambda x, w: F.tanh(x @ w), [X, W])
    assert gradgradcheck(lambda x: x ** 3, [X])


def test_gradgradcheck_catches_a_frozen_first_derivative():
    # The first derivative is right: gradcheck passes ...
    assert gradcheck(lambda x: FrozenSquare().apply(x)[0], [X])
    # ... but it is built from a constant, so its own derivative comes out as zero.
    with pytest.raises(GradcheckError, match="input 0: gradient mismatch"):
        gradgradcheck(lambda x: FrozenSquare().apply(x)[0], [X])


def test_gradcheck_error_is_an_assertion_error():
    assert issubclass(GradcheckError, AssertionError)
    assert ms.gradcheck is gradcheck and ms.gradgradcheck is gradgradcheck


# ----- float32 inputs: tolerances picked by dtype, with a warning --------------------------
X32 = X.astype(np.float32)
W32 = RNG.standard_normal((5, 4)).astype(np.float32)
GAMMA32 = RNG.standard_normal(4).astype(np.float32)
BETA32 = RNG.standard_normal(4).astype(np.float32)
FLOAT32_CASES = {
    "tanh": (F.tanh, [X32]),
    "exp": (F.exp, [X32]),
    "softmax": (F.softmax, [X32]),
    "layer_norm": (F.layer_norm, [X32, GAMMA32, BETA32]),
    "linear": (F.linear, [X32, W32]),
}
WEAK = r"on float32 inputs is weak.*cast the inputs to float64"


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_checks_pass_on_correct_ops_and_warn(name):
    fn, inputs = FLOAT32_CASES[name]
    with pytest.warns(UserWarning, match="gradcheck " + WEAK):
        assert gradcheck(fn, inputs)
    with pytest.warns(UserWarning, match="gradgradcheck " + WEAK):
        assert gradgradcheck(fn, inputs)


def test_float32_checks_used_to_fail_with_float64_tolerances():
    # What picking by dtype fixes: float64's step and tolerances fail a correct tanh.
    with pytest.warns(UserWarning, match=WEAK), pytest.raises(GradcheckError, match="mismatch"):
        gradcheck(F.tanh, [X32], eps=1e-6, atol=1e-5, rtol=1e-4)


def test_float32_checks_still_catch_a_wrong_backward():
    with pytest.warns(UserWarning, match=WEAK), \
            pytest.raises(GradcheckError, match=r"input 0: gradient mismatch at index \(1, 2\)"):
        gradcheck(lambda x: WrongSquare().apply(x)[0], [X32])
    with pytest.warns(UserWarning, match=WEAK), \
            pytest.raises(GradcheckError, match="input 0: gradient mismatch"):
        gradgradcheck(lambda x: FrozenSquare().apply(x)[0], [X32])


def test_float64_checks_do_not_warn(recwarn):
    assert gradcheck(F.tanh, [X]) and gradgradcheck(F.tanh, [X])
    assert not [w for w in recwarn if "weak" in str(w.message)]


def test_numerical_grad_divides_by_the_step_actually_taken():
    # 1 + 1e-3 is not a float32 number: dividing by 2e-3 would be off by about 1e-4 relative.
    x = np.array([1.0, 3.0], dtype=np.float32)
    g, = numerical_grad(lambda v: v * 1.0, [x], [np.ones(2)], eps=1e-3)
    np.testing.assert_allclose(g, [1.0, 1.0], rtol=1e-6)
