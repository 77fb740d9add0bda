"""memsave/nn/containers.py: Sequential and MLP."""
import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import nn


def _x():
    return np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)


def test_sequential_runs_layers_in_order():
    a, b = nn.Linear(3, 4), nn.Linear(4, 2)
    net = nn.Sequential(a, F.tanh, b)
    np.testing.assert_array_equal(net(_x()).array, b(F.tanh(a(_x()))).array)


def test_sequential_indexing_slicing_iteration_len():
    layers = [nn.Linear(3, 4), F.relu, nn.Linear(4, 4), F.tanh, nn.Linear(4, 1)]
    net = nn.Sequential(*layers)
    assert len(net) == 5
    assert list(net) == layers
    assert net[0] is layers[0] and net[-1] is layers[-1] and net[1] is F.relu
    head = net[:2]
    assert isinstance(head, nn.Sequential) and list(head) == layers[:2]
    assert list(net[::2]) == layers[::2]
    assert head[0] is net[0]                       # slices share layers
    np.testing.assert_array_equal(net[2:](net[:2](_x())).array, net(_x()).array)
    with pytest.raises(IndexError):
        net[5]


def test_sequential_registers_modules_by_index():
    net = nn.Sequential(nn.Linear(3, 4), F.relu)
    net.append(nn.Linear(4, 2))
    net.extend([F.sigmoid, nn.LayerNorm(2)])
    assert [n for n, _ in net.named_parameters()] == [
        "0.W", "0.b", "2.W", "2.b", "4.gamma", "4.beta"]
    assert [n for n, _ in net.named_children()] == ["0", "2", "4"]
    assert net(_x()).shape == (5, 2)
    with pytest.raises(TypeError, match="callable"):
        net.append(3)


def test_sequential_is_a_list_of_callables_for_checkpointing():
    net = nn.Sequential(nn.Linear(3, 3), F.tanh, nn.Linear(3, 3))
    x = _x()
    for layer in net:                # what checkpoint_sequential does with each segment
        x = layer(x)
    np.testing.assert_array_equal(x.array, net(_x()).array)
    assert all(callable(layer) for layer in net)


def test_sequential_repr_lists_functions_by_name():
    net = nn.Sequential(nn.Linear(3, 2), F.relu)
    assert repr(net) == ("Sequential(\n"
                         "  (0): Linear(in_features=3, out_features=2, bias=True)\n"
                         "  (1): relu\n"
                         ")")
    assert repr(nn.Sequential()) == "Sequential()"


def test_mlp_structure():
    mlp = nn.MLP([3, 8, 8, 2])
    assert isinstance(mlp, nn.Sequential) and len(mlp) == 5
    assert [getattr(layer, "out_features", layer) for layer in mlp] == [8, F.relu, 8, F.relu, 2]
    assert mlp.sizes == [3, 8, 8, 2]
    assert mlp(_x()).shape == (5, 2)
    assert isinstance(mlp[:3], nn.Sequential)


def test_mlp_activations_bias_and_dtype():
    mlp = nn.MLP([3, 4, 2], activation=F.tanh, final_activation=F.sigmoid, bias=False,
                 dtype=np.float64)
    assert list(mlp)[1::2] == [F.tanh, F.sigmoid]
    assert [n for n, _ in mlp.named_parameters()] == ["0.W", "2.W"]
    y = mlp(_x().astype(np.float64)).array
    assert y.dtype == np.float64 and ((y > 0) & (y < 1)).all()
    with pytest.raises(ValueError, match="at least"):
        nn.MLP([3])


def test_mlp_gradcheck(module_gradcheck):
    mlp = nn.MLP([3, 4, 2], activation=F.tanh, dtype=np.float64)
    assert module_gradcheck(mlp, np.random.default_rng(1).standard_normal((2, 3)))


def test_checkpoint_sequential_takes_a_sequential():
    ms.random.seed(0)
    net = nn.MLP([3, 32, 32, 32, 2], activation=F.tanh)
    x = _x()
    net(x).sum().backward()
    expected = [p.grad.copy() for p in net.parameters()]
    net.zero_grad()
    y = ms.checkpoint_sequential(net, x, segments=2)
    np.testing.assert_array_equal(y.array, net(x).array)
    y.sum().backward()
    for p, g in zip(net.parameters(), expected):
        np.testing.assert_allclose(p.grad, g, rtol=1e-5, atol=1e-7)
