"""The backend-sensitive code paths, run on both backends through the ``xp`` fixture.

Every test runs on NumPy; the CuPy variants run where cupy sees a CUDA GPU and skip,
with the reason, elsewhere.  References are computed on the host in float64
(numerical gradients, NumPy runs), so each variant can fail on its own.
``benchmarks/gpu_suite.sh`` runs them on a GPU machine and records the results.
"""
import numpy as np
import pytest

import memsave as ms
import memsave.distributed as dist
import memsave.functions as F
from memsave import backend, nn
from memsave.optim import SGD
from memsave.testing import assert_checkpoint_equivalent

pytestmark = pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning")


def device(xp) -> str:
    return "cpu" if xp is np else "gpu"


def test_ops_and_gradients_match_numerical_gradients(xp):
    x = np.random.default_rng(0).standard_normal((4, 5))
    w = np.random.default_rng(1).standard_normal((3, 5))
    gy = np.random.default_rng(2).standard_normal(3)

    def f(a, b):
        return F.softmax(F.linear(F.tanh(a), b)).sum(axis=0) * 2.0

    vx, vw = ms.Variable(xp.asarray(x)), ms.Parameter(xp.asarray(w))
    y = f(vx, vw)
    assert backend.get_array_module(y.array) is xp
    y.backward(xp.asarray(gy))
    numeric = ms.numerical_grad(f, [x, w], [gy])
    for analytic, expected in zip((vx.grad, vw.grad), numeric):
        assert backend.get_array_module(analytic) is xp
        np.testing.assert_allclose(backend.to_cpu(analytic), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scatter_add_gradients_with_repeated_indices(xp, dtype):
    # embed_id and get_item backpropagate through backend.scatter_add (cupyx on the GPU).
    table = np.random.default_rng(3).standard_normal((5, 3)).astype(dtype)
    ids = np.array([0, 2, 0, 4, 2, 0])
    W = ms.Parameter(xp.asarray(table))
    (F.embed_id(xp.asarray(ids), W) * 1.5).sum().backward()
    expected = np.zeros_like(table)
    np.add.at(expected, ids, 1.5)
    np.testing.assert_array_equal(backend.to_cpu(W.grad), expected)

    x = ms.Variable(xp.asarray(table))
    F.get_item(x, xp.asarray(ids)).sum().backward()
    np.testing.assert_array_equal(backend.to_cpu(x.grad), expected / 1.5)


def test_dropout_draws_the_same_mask_on_both_backends(xp):
    x = np.ones((64, 16))
    ms.random.seed(5)
    on_device = backend.to_cpu(F.dropout(ms.Variable(xp.asarray(x)), 0.5).array)
    ms.random.seed(5)
    on_host = F.dropout(ms.Variable(x), 0.5).array
    np.testing.assert_array_equal(on_device, on_host)
    assert 0.3 < (on_host == 0).mean() < 0.7


def test_checkpoint_with_dropout_replays(xp):
    x = xp.asarray(np.random.default_rng(2).standard_normal((16, 8)))

    def block(v):
        return F.tanh(F.dropout(F.tanh(v), 0.3))

    assert_checkpoint_equivalent(block, x, second_order=True)


def test_measure_sees_what_a_checkpoint_frees(xp):
    w = ms.Parameter(xp.asarray(np.eye(256, dtype=np.float32) * 0.5))
    x = ms.Variable(xp.asarray(np.ones((1024, 256), dtype=np.float32)))
    layer_bytes = 1024 * 256 * 4

    def block(v):
        for _ in range(8):
            v = F.tanh(F.linear(v, w))
        return v

    with ms.memory.measure(device(xp)) as plain:
        y_plain = block(x)                  # the graph keeps every layer's output
    with ms.memory.measure(device(xp)) as ckpt:
        y_ckpt = ms.checkpoint(block, x)    # only the block's output is left
    assert plain.current >= 8 * layer_bytes
    assert ckpt.current < 2 * layer_bytes
    assert ckpt.peak >= layer_bytes         # the forward did run
    y_plain.sum().backward()
    g_plain = backend.to_cpu(w.grad).copy()
    w.cleargrad()
    y_ckpt.sum().backward()
    np.testing.assert_array_equal(backend.to_cpu(w.grad), g_plain)


def test_measure_blocks_nest(xp):
    with ms.memory.measure(device(xp)) as outer:
        with ms.memory.measure(device(xp)) as inner:
            a = xp.ones(1 << 18, dtype=np.float32)
        del a
    assert inner.peak >= 1 << 20 and outer.peak >= 1 << 20


def test_measure_reads_live_inside_its_block(xp):
    with ms.memory.measure(device(xp)) as m:
        a = xp.ones(1 << 18, dtype=np.float32)
        inside = m.current
        del a
    assert inside >= 1 << 20 and m.peak >= inside and m.current < inside


def test_training_on_the_device_matches_the_host(xp):
    def train(model_xp):
        ms.random.seed(0)
        model = nn.Sequential(nn.Linear(6, 8, dtype=np.float64), nn.BatchNorm(8, dtype=np.float64),
                              F.tanh, nn.Linear(8, 3, dtype=np.float64))
        if model_xp is not np:
            model.to_gpu()
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
        rng = np.random.default_rng(4)
        for _ in range(3):
            x, t = rng.standard_normal((10, 6)), rng.integers(0, 3, 10)
            opt.zero_grad()
            F.softmax_cross_entropy(model(model_xp.asarray(x)), model_xp.asarray(t)).backward()
            opt.step()
        return model.state_dict()

    got, expected = train(xp), train(np)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_data_parallel_keeps_arrays_on_their_device(xp):
    layer = nn.Linear(4, 2, dtype=np.float64)
    if xp is not np:
        layer.to_gpu()
    net = dist.DataParallel(layer)
    x = xp.asarray(np.random.default_rng(6).standard_normal((3, 4)))
    net(x).sum().backward()
    before = backend.to_cpu(layer.W.grad).copy()
    stats = net.allreduce_grads()
    assert stats.bytes == (4 * 2 + 2) * 8
    assert backend.get_array_module(layer.W.grad) is xp
    np.testing.assert_array_equal(backend.to_cpu(layer.W.grad), before)   # 1 rank: the mean is itself
