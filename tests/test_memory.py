"""memory.measure (tracemalloc, nesting) and saved_residuals/saved_bytes."""
import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave.memory import measure, saved_bytes, saved_residuals


def test_measure_sees_numpy_buffers_exactly():
    with measure() as m:
        a = np.ones(1_000_000)  # 8 MB
        b = a * 2
        del a, b
    assert 16_000_000 <= m.peak < 16_100_000
    assert abs(m.current) < 50_000


def test_measure_current_counts_what_survives():
    with measure() as m:
        keep = np.ones(500_000)
    assert 4_000_000 <= m.current < 4_050_000
    del keep


def test_nested_measure_keeps_outer_peak():
    with measure() as outer:
        big = np.ones(2_000_000)  # 16 MB
        del big
        with measure() as inner:
            small = np.ones(100_000)
            del small
    assert inner.peak < 1_000_000
    assert outer.peak >= 16_000_000


def test_measure_rejects_unknown_device():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'gpu'"):
        measure("tpu")


def test_saved_residuals_lists_what_backward_keeps():
    x = ms.Variable(np.ones((4, 8)))
    w = ms.Parameter(np.ones((8, 8)))

    def net(v):
        h = F.tanh(F.linear(v, w))   # linear keeps v (leaf) and w (leaf): not listed
        return F.tanh(F.linear(h, w))  # keeps h (already listed by Tanh) and its own output

    residuals = saved_residuals(net, x)
    assert [r.op for r in residuals] == ["Tanh", "Tanh"]
    assert all(r.shape == (4, 8) and r.nbytes == 4 * 8 * 8 for r in residuals)
    assert saved_bytes(net, x) == 2 * 4 * 8 * 8


def test_saved_bytes_of_a_checkpoint_is_its_kept_input():
    w = ms.Parameter(np.ones((8, 8)) * 0.1)

    def block(v):
        for _ in range(4):
            v = F.tanh(F.linear(v, w))
        return v

    def net(x):
        h = F.tanh(x * 2.0)  # a non-leaf input for the checkpoint
        return ms.checkpoint(block, h)

    x = ms.Variable(np.ones((4, 8)))
    plain = saved_bytes(lambda v: block(F.tanh(v * 2.0)), x)
    checkpointed = saved_bytes(net, x)
    assert plain == 5 * 4 * 8 * 8
    assert checkpointed == 4 * 8 * 8  # only h, kept for recomputation


def test_measure_sees_checkpoint_savings_on_a_deep_block():
    w = ms.Parameter(np.eye(64) * 0.5)

    def block(v):
        for _ in range(8):
            v = F.tanh(F.linear(v, w))
        return v

    x = ms.Variable(np.ones((256, 64)))
    with measure() as plain:
        y = block(x)
    del y
    with measure() as ckpt:
        y = ms.checkpoint(block, x)
    del y
    assert ckpt.current < plain.current / 4
