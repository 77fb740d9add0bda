"""Chainer's forget behaviours, ported: same gradients, ndarray inputs, tuple outputs, nesting;
plus the two limits Chainer admits, lifted: dropout and double backprop."""
import numpy as np
import pytest

import memsave as ms
import memsave.functions as F

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")


def f(a, b):
    return a + b + a


def g(a, b):
    return F.tanh(a * b) * a, F.sigmoid(b) + a


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, 5), rng.uniform(-1, 1, 5)


def _backward(fn, x, y, use_forget):
    vx, vy = ms.Variable(x.copy()), ms.Variable(y.copy())
    out = ms.forget(fn, vx, vy) if use_forget else fn(vx, vy)
    outs = out if isinstance(out, tuple) else (out,)
    gys = [np.random.default_rng(i).standard_normal(o.shape) for i, o in enumerate(outs)]
    ms.backward(list(outs), gys)
    return [o.array for o in outs], vx.grad, vy.grad


@pytest.mark.parametrize("fn", [f, g])
def test_forget_gradients_equal_plain(fn, xy):
    plain, forgotten = _backward(fn, *xy, False), _backward(fn, *xy, True)
    for p, q in zip(plain[0], forgotten[0]):
        np.testing.assert_allclose(q, p, atol=1e-12)
    np.testing.assert_allclose(forgotten[1], plain[1], atol=1e-12)
    np.testing.assert_allclose(forgotten[2], plain[2], atol=1e-12)


def test_tuple_output_stays_tuple_and_single_stays_variable(xy):
    x, y = xy
    assert isinstance(ms.forget(f, ms.Variable(x), ms.Variable(y)), ms.Variable)
    out = ms.forget(g, ms.Variable(x), ms.Variable(y))
    assert isinstance(out, tuple) and len(out) == 2


def test_ndarray_inputs_are_converted(xy):
    x, y = xy
    seen = []

    def h(a, b):
        seen.append((type(a), type(b)))
        return f(a, b)

    z = ms.forget(h, x, y)
    assert seen == [(ms.Variable, ms.Variable)]
    assert isinstance(z, ms.Variable)
    np.testing.assert_allclose(z.array, 2 * x + y)


def test_nested_forget(xy):
    x, y = xy

    def outer(a, b):
        return ms.forget(g, F.tanh(a), b)[0] * 2

    plain = _backward(lambda a, b: g(F.tanh(a), b)[0] * 2, x, y, False)
    nested = _backward(outer, x, y, True)
    np.testing.assert_allclose(nested[1], plain[1], atol=1e-12)
    np.testing.assert_allclose(nested[2], plain[2], atol=1e-12)


def test_forget_rejects_bad_arguments_and_returns():
    with pytest.raises(TypeError, match="argument 0 must be a Variable or an ndarray, got list"):
        ms.forget(f, [1.0, 2.0], np.ones(2))
    with pytest.raises(RuntimeError, match="must return a Variable or a tuple of Variables, got list"):
        ms.forget(lambda a: [F.tanh(a)], np.ones(2))
    with pytest.raises(RuntimeError, match="the 2nd element of the tuple returned by func is not a "
                                           "Variable but int"):
        ms.forget(lambda a: (F.tanh(a), 3), np.ones(2))


def test_forget_unwraps_a_one_tuple_like_chainer(xy):
    x, y = xy
    out = ms.forget(lambda a, b: (F.tanh(a * b),), ms.Variable(x), ms.Variable(y))
    assert isinstance(out, ms.Variable)
    np.testing.assert_allclose(out.array, np.tanh(x * y))


def test_checkpointing_switch_needs_a_bool():
    with pytest.raises(TypeError, match="needs True or False"):
        ms.checkpointing("no")


def test_forget_replays_random_draws():
    """Chainer's forget does not support dropout; ours replays the RNG."""
    x = np.random.default_rng(3).standard_normal(20)

    def noisy(a):
        mask = ms.random.get_generator().random(a.shape) > 0.5
        return F.tanh(F.tanh(a) * mask)

    ms.random.seed(7)
    _, gx_plain, _ = _backward(lambda a, b: noisy(a) + b, x, x, False)
    ms.random.seed(7)
    _, gx_forget, _ = _backward(lambda a, b: noisy(a) + b, x, x, True)
    np.testing.assert_allclose(gx_forget, gx_plain, atol=1e-12)


def test_forget_supports_double_backprop(xy):
    """Chainer's forget does not support double backprop; ours does."""
    x, y = xy
    assert ms.gradgradcheck(lambda a, b: ms.forget(g, a, b)[0], [x, y])
