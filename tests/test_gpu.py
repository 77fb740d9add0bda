"""The same code paths on CuPy arrays. Skipped, cleanly, where no CUDA GPU is available."""
import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import backend
from memsave.testing import assert_checkpoint_equivalent

pytestmark = [
    pytest.mark.skipif(not backend.is_gpu_available(), reason="needs cupy and a CUDA GPU"),
    pytest.mark.filterwarnings("ignore::memsave.UselessCheckpointWarning"),
]


def test_ops_and_gradients_match_numpy():
    x = np.random.default_rng(0).standard_normal((4, 5))
    w = np.random.default_rng(1).standard_normal((3, 5))

    def run(xp_x, xp_w):
        vx, vw = ms.Variable(xp_x), ms.Parameter(xp_w)
        y = F.softmax(F.linear(F.tanh(vx), vw)).sum(axis=0)
        (y * y).sum().backward()
        return backend.to_cpu(vx.grad), backend.to_cpu(vw.grad)

    cpu = run(x, w)
    gpu = run(backend.to_gpu(x), backend.to_gpu(w))
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    assert backend.get_array_module(backend.to_gpu(x)).__name__ == "cupy"


def test_checkpoint_with_dropout_replays_on_gpu():
    x = backend.to_gpu(np.random.default_rng(2).standard_normal((16, 8)))

    def block(v):
        return F.tanh(F.dropout(F.tanh(v), 0.3))

    assert_checkpoint_equivalent(block, x, second_order=True)


def test_measure_gpu_sees_checkpoint_savings():
    w = ms.Parameter(backend.to_gpu(np.eye(256, dtype=np.float32) * 0.5))
    x = ms.Variable(backend.to_gpu(np.ones((1024, 256), dtype=np.float32)))

    def block(v):
        for _ in range(8):
            v = F.tanh(F.linear(v, w))
        return v

    with ms.memory.measure("gpu") as plain:
        block(x).sum().backward()
    with ms.memory.measure("gpu") as ckpt:
        ms.checkpoint(block, x).sum().backward()
    assert ckpt.peak < plain.peak
