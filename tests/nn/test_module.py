"""memsave/nn/module.py: registration, traversal, modes, state dicts, files, devices, repr."""
import re

import numpy as np
import pytest

import memsave as ms
from memsave import backend, nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm(4)
        self.scale = 2.0                      # plain attribute
        self.note = ms.Variable(np.ones(1))   # a Variable, not a Parameter: not registered

    def forward(self, x):
        return self.bn(self.fc(x)) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = Block()
        self.w = ms.Parameter(np.zeros((4,), dtype=np.float32))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.block(x) + self.w)


def test_parameters_are_registered_in_assignment_order_with_dotted_names():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "w", "block.fc.W", "block.fc.b", "block.bn.gamma", "block.bn.beta", "head.W", "head.b"]
    assert [p.shape for p in net.parameters()] == [
        (4,), (4, 3), (4,), (4,), (4,), (2, 4), (2,)]
    assert all(isinstance(p, ms.Parameter) for p in net.parameters())
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["w"]
    assert [n for n, _ in net.named_parameters(prefix="net")][:2] == ["net.w", "net.block.fc.W"]


def test_children_and_modules_walk_the_tree_in_order():
    net = Net()
    assert [n for n, _ in net.named_children()] == ["block", "head"]
    assert list(net.children()) == [net.block, net.head]
    assert [n for n, _ in net.named_modules()] == ["", "block", "block.fc", "block.bn", "head"]
    assert [type(m).__name__ for m in net.modules()] == [
        "Net", "Block", "Linear", "BatchNorm", "Linear"]


def test_plain_attributes_pass_through():
    block = Block()
    assert block.scale == 2.0
    assert "note" not in dict(block.named_parameters())
    assert "scale" in block.__dict__ and "fc" not in block.__dict__
    assert "fc" in dir(block)


def test_shared_parameters_and_modules_are_listed_once():
    net = nn.Module()
    shared = nn.Linear(2, 2)
    net.a = shared
    net.b = shared
    assert [n for n, _ in net.named_parameters()] == ["a.W", "a.b"]
    assert len(list(net.modules())) == 2
    assert sorted(net.state_dict()) == ["a.W", "a.b", "b.W", "b.b"]


def test_reassignment_and_deletion_update_the_registry():
    net = Net()
    net.head = nn.Linear(4, 3)
    assert dict(net.named_parameters())["head.W"].shape == (3, 4)
    net.head = None
    assert net.head is None and "head.W" not in dict(net.named_parameters())
    del net.w
    assert "w" not in dict(net.named_parameters())
    with pytest.raises(AttributeError, match="no attribute 'w'"):
        net.w  # noqa: B018
    net.block.fc.b = None                     # e.g. dropping a bias
    assert "block.fc.b" not in dict(net.named_parameters())
    # A registered name may take None or its own kind, nothing else.
    with pytest.raises(TypeError, match="parameter 'W'.*expected a memsave.Parameter"):
        net.block.fc.W = np.zeros((4, 3))
    with pytest.raises(TypeError, match="buffer 'running_mean'.*ndarray"):
        net.block.bn.running_mean = [0.0] * 4
    net.block.bn.running_mean = np.full(4, 3.0, dtype=np.float32)
    assert net.block.bn.state_dict()["running_mean"].tolist() == [3.0] * 4


def test_forgetting_super_init_is_explained():
    class Broken(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\)"):
        Broken()


def test_register_helpers_check_types():
    m = nn.Module()
    with pytest.raises(TypeError, match="Parameter"):
        m.register_parameter("w", ms.Variable(np.zeros(1)))
    with pytest.raises(TypeError, match="ndarray"):
        m.register_buffer("b", 3.0)
    with pytest.raises(TypeError, match="Module"):
        m.add_module("x", lambda x: x)
    m.register_parameter("bias", None)
    assert m.bias is None and list(m.parameters()) == []


def test_call_runs_forward_and_base_forward_is_abstract():
    net = Net()
    y = net(np.ones((5, 3), dtype=np.float32))
    assert y.shape == (5, 2) and y.dtype == np.float32
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        nn.Module()(1)


def test_train_and_eval_propagate_to_every_descendant():
    net = Net()
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.block.train()
    assert net.block.bn.training and not net.training
    net.train(True)
    assert all(m.training for m in net.modules())


def test_zero_grad_clears_every_parameter():
    net = Net()
    net(np.ones((5, 3), dtype=np.float32)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_state_dict_copies_parameters_and_buffers():
    net = Net()
    state = net.state_dict()
    assert list(state) == ["w", "block.fc.W", "block.fc.b", "block.bn.gamma", "block.bn.beta",
                           "block.bn.running_mean", "block.bn.running_var", "head.W", "head.b"]
    assert all(type(v) is np.ndarray for v in state.values())
    state["head.W"][...] = 7.0
    assert not (net.head.W.array == 7.0).any()   # a copy, not a view


def test_load_state_dict_round_trip_in_place():
    src, dst = Net(), Net()
    src.block.bn.running_mean[...] = 0.5
    W = dst.head.W
    array = W.array
    assert dst.load_state_dict(src.state_dict()) == ([], [])
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert dst.head.W is W and W.array is array   # optimizers keep working


def test_load_state_dict_keeps_the_model_dtype():
    net = nn.Linear(2, 2)
    state = {k: v.astype(np.float64) + 1 for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    assert net.W.dtype == np.float32
    np.testing.assert_allclose(net.W.array, state["W"], rtol=1e-6)


def test_load_state_dict_reports_missing_keys():
    net = Net()
    state = net.state_dict()
    del state["head.b"], state["block.bn.running_var"]
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(state)
    message = str(info.value)
    assert "Net" in message
    assert "missing keys: ['block.bn.running_var', 'head.b']" in message
    assert "unexpected" not in message


def test_load_state_dict_reports_unexpected_keys():
    net = Net()
    state = net.state_dict()
    state["head.extra"] = np.zeros(2)
    with pytest.raises(nn.StateDictError, match=re.escape("unexpected keys: ['head.extra']")):
        net.load_state_dict(state)


def test_load_state_dict_reports_shape_mismatch_with_both_shapes():
    net = Net()
    state = net.state_dict()
    state["head.W"] = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(state, strict=False)     # shapes are checked even when not strict
    message = str(info.value)
    assert "'head.W'" in message and "expected (2, 4)" in message and "got (4, 2)" in message


def test_load_state_dict_lists_every_problem_and_changes_nothing_on_error():
    net = Net()
    before = net.state_dict()
    state = {k: np.full_like(v, 9.0) for k, v in before.items()}
    del state["w"]
    state["bogus"] = np.zeros(1)
    state["block.fc.W"] = np.zeros((3, 3))
    with pytest.raises(nn.StateDictError) as info:
        net.load_state_dict(state)
    message = str(info.value)
    assert "missing keys: ['w']" in message
    assert "unexpected keys: ['bogus']" in message
    assert "'block.fc.W': expected (4, 3)" in message and "got (3, 3)" in message
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_load_state_dict_non_strict_loads_what_fits():
    net = Net()
    state = {"head.b": np.array([1.0, 2.0], dtype=np.float32), "other": np.zeros(3)}
    result = net.load_state_dict(state, strict=False)
    assert result.unexpected_keys == ["other"]
    assert "head.b" not in result.missing_keys and "head.W" in result.missing_keys
    assert net.head.b.array.tolist() == [1.0, 2.0]


def test_save_and_load_npz_round_trip(tmp_path):
    src, dst = Net(), Net()
    src.block.bn.running_var[...] = 3.0
    path = tmp_path / "model.npz"
    src.save(path)
    assert path.exists()
    assert dst.load(path) == ([], [])
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    with np.load(path) as data:
        assert sorted(data.files) == sorted(src.state_dict())


def test_load_finds_the_npz_suffix_numpy_added(tmp_path):
    src, dst = nn.Linear(2, 2), nn.Linear(2, 2)
    src.save(str(tmp_path / "fc"))
    assert (tmp_path / "fc.npz").exists()
    dst.load(str(tmp_path / "fc"))
    np.testing.assert_array_equal(src.W.array, dst.W.array)


def test_load_from_file_with_wrong_model_raises(tmp_path):
    nn.Linear(2, 3).save(tmp_path / "fc.npz")
    with pytest.raises(nn.StateDictError, match=r"expected \(2, 2\).*got \(3, 2\)"):
        nn.Linear(2, 2).load(tmp_path / "fc.npz")


def test_to_cpu_keeps_parameter_identity_and_to_gpu_needs_a_gpu():
    net = Net()
    params = list(net.parameters())
    assert net.to_cpu() is net
    assert list(net.parameters()) == params
    assert all(type(p.array) is np.ndarray for p in params)
    assert all(type(b) is np.ndarray for b in net.buffers())
    if backend.is_gpu_available():
        net.to_gpu()
        assert all(backend.get_array_module(p.array).__name__ == "cupy" for p in params)
        net.to_cpu()
        assert all(type(p.array) is np.ndarray for p in params)
    else:
        with pytest.raises(RuntimeError, match="cupy"):
            net.to_gpu()


def test_repr_is_nested_like_torch():
    assert repr(Net()) == (
        "Net(\n"
        "  (block): Block(\n"
        "    (fc): Linear(in_features=3, out_features=4, bias=True)\n"
        "    (bn): BatchNorm(4, decay=0.9, eps=2e-05)\n"
        "  )\n"
        "  (head): Linear(in_features=4, out_features=2, bias=True)\n"
        ")")
    assert repr(nn.Module()) == "Module()"


def test_modules_wrapped_in_a_transparent_proxy_still_register_and_switch_modes():
    """memsave.checkpointed wraps a Module in a wrapt.ObjectProxy; the tree must see through it."""
    import wrapt

    class Proxy(wrapt.ObjectProxy):
        def __call__(self, *args, **kwargs):
            return self.__wrapped__(*args, **kwargs)

    net = nn.Sequential(Proxy(nn.Linear(2, 3)), Proxy(nn.BatchNorm(3)))
    assert [n for n, _ in net.named_parameters()] == ["0.W", "0.b", "1.gamma", "1.beta"]
    assert list(net.state_dict())[-2:] == ["1.running_mean", "1.running_var"]
    net.eval()
    assert net[1].__wrapped__.training is False
    assert net(np.ones((4, 2), dtype=np.float32)).shape == (4, 3)
