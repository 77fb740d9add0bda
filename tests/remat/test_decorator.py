"""@checkpointed on functions, methods, static/class methods, callables and Module-like instances."""
import inspect

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave.remat.decorator import CheckpointedModule

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")


def _two_tanh(x):
    return F.tanh(F.tanh(x))


def _grads(fn, x):
    v = ms.Variable(x.copy())
    (fn(v) ** 2).sum().backward()
    return v.grad


def test_bare_decorator_keeps_name_doc_signature_and_gradients():
    @ms.checkpointed
    def block(x, scale: float = 2.0):
        """Docstring kept."""
        return F.tanh(F.tanh(x) * scale)

    assert block.__name__ == "block"
    assert block.__doc__ == "Docstring kept."
    assert list(inspect.signature(block).parameters) == ["x", "scale"]
    x = np.random.default_rng(0).standard_normal((3, 4))
    plain = _grads(lambda v: F.tanh(F.tanh(v) * 2.0), x)
    np.testing.assert_allclose(_grads(block, x), plain, atol=1e-12)


def test_decorator_with_options_is_plain_when_disabled():
    calls = []

    @ms.checkpointed(enabled=False)
    def block(x):
        calls.append(1)
        return _two_tanh(x)

    v = ms.Variable(np.ones(3))
    block(v).sum().backward()
    assert len(calls) == 1  # no recomputation


def test_decorator_recomputes_once_in_backward():
    calls = []

    @ms.checkpointed(preserve_rng_state=False)
    def block(x):
        calls.append(1)
        return _two_tanh(x)

    v = ms.Variable(np.ones(3))
    block(v).sum().backward()
    assert len(calls) == 2


class Net:
    def __init__(self):
        self.w = ms.Parameter(np.full((3, 3), 0.5))

    @ms.checkpointed
    def method(self, x):
        return F.tanh(F.tanh(x @ self.w))

    @staticmethod
    @ms.checkpointed
    def static(x):
        return _two_tanh(x)

    @classmethod
    @ms.checkpointed
    def klass(cls, x):
        assert cls is Net
        return _two_tanh(x)


def test_method_binds_instance_and_param_gets_grad():
    net = Net()
    x = np.random.default_rng(1).standard_normal((2, 3))
    net.method(ms.Variable(x)).sum().backward()
    got = net.w.grad.copy()
    net.w.cleargrad()
    F.tanh(F.tanh(ms.Variable(x) @ net.w)).sum().backward()
    np.testing.assert_allclose(got, net.w.grad, atol=1e-12)


def test_static_and_class_methods():
    x = np.random.default_rng(2).standard_normal(4)
    expected = _grads(_two_tanh, x)
    np.testing.assert_allclose(_grads(Net.static, x), expected, atol=1e-12)
    np.testing.assert_allclose(_grads(Net().static, x), expected, atol=1e-12)
    np.testing.assert_allclose(_grads(Net.klass, x), expected, atol=1e-12)


class Block:
    """A minimal module: callable instance with parameters and attributes."""

    def __init__(self):
        self.w = ms.Parameter(np.eye(3) * 0.7)
        self.width = 3
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return F.tanh(F.tanh(x @ self.w))

    def __repr__(self):
        return "Block(width=3)"


def test_module_instance_becomes_transparent_proxy():
    block = Block()
    wrapped = ms.checkpointed(block)
    assert isinstance(wrapped, Block)
    assert isinstance(wrapped, CheckpointedModule)
    assert wrapped.width == 3 and wrapped.w is block.w
    assert "Block(width=3)" in repr(wrapped)
    x = ms.Variable(np.ones((2, 3)))
    wrapped(x).sum().backward()
    assert block.calls == 2  # forward + recompute
    got = block.w.grad.copy()
    block.w.cleargrad()
    block(ms.Variable(np.ones((2, 3)))).sum().backward()
    np.testing.assert_allclose(got, block.w.grad, atol=1e-12)


def test_module_proxy_with_options_disabled():
    block = Block()
    wrapped = ms.checkpointed(enabled=False)(block)
    wrapped(ms.Variable(np.ones((2, 3)))).sum().backward()
    assert block.calls == 1


def test_ndarray_arguments_become_variables_and_others_pass_through():
    seen = {}

    @ms.checkpointed
    def block(x, factor, *, label):
        seen.update(x=type(x), factor=factor, label=label)
        return F.tanh(F.tanh(x)) * factor

    y = block(np.ones(2), 3.0, label="hi")
    assert seen == {"x": ms.Variable, "factor": 3.0, "label": "hi"}
    assert isinstance(y, ms.Variable)


def test_checkpointing_switch_and_no_grad_make_plain_calls():
    calls = []

    @ms.checkpointed
    def block(x):
        calls.append(1)
        return _two_tanh(x)

    with ms.checkpointing(False):
        block(ms.Variable(np.ones(3))).sum().backward()
    assert len(calls) == 1
    assert ms.config.checkpointing_enabled
    with ms.no_grad():
        y = block(ms.Variable(np.ones(3)))
    assert y.creator is None and len(calls) == 2


def test_checkpointed_module_class_checkpoints_every_instance():
    calls = []

    class Block(ms.nn.Module):
        def __init__(self, width):
            super().__init__()
            self.lin = ms.nn.Linear(width, width)

        def __call__(self, x):
            calls.append(1)
            return F.tanh(F.tanh(self.lin(x)))

    Checkpointed = ms.checkpointed(Block)
    block = Checkpointed(4)
    assert isinstance(block, Block)
    x = ms.Variable(np.ones((2, 4), dtype=np.float32))
    y = F.tanh(block(x) * 2.0)
    calls.clear()
    y.sum().backward()
    assert calls == [1]                       # recomputed once in backward: it was checkpointed
    assert block.lin.W.grad is not None


@pytest.mark.parametrize("bad", [3, "f", None.__class__.__name__])
def test_checkpointed_rejects_what_it_cannot_wrap(bad):
    with pytest.raises(TypeError, match="checkpointed needs a function"):
        ms.checkpointed(bad)
