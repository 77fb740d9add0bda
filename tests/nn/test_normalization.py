"""memsave/nn/normalization.py: LayerNorm and BatchNorm (running statistics as buffers)."""
import numpy as np
import pytest

import memsave as ms
from memsave import nn


def _data(shape, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * 3 + 1).astype(np.float32)


# ----- LayerNorm ------------------------------------------------------------------------

def test_layer_norm_normalises_the_last_axis():
    ln = nn.LayerNorm(6)
    assert (ln.gamma.array == 1).all() and (ln.beta.array == 0).all()
    x = _data((2, 3, 6))
    y = ln(x).array
    assert y.shape == (2, 3, 6) and y.dtype == np.float32
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    assert repr(ln) == "LayerNorm(6, eps=1e-05)"


def test_layer_norm_applies_gamma_and_beta():
    ln = nn.LayerNorm(3, eps=1e-3, dtype=np.float64)
    ln.gamma.array[...] = [1.0, 2.0, 3.0]
    ln.beta.array[...] = [0.0, 1.0, -1.0]
    x = np.array([[1.0, 2.0, 4.0]])
    z = (x - x.mean()) / np.sqrt(x.var() + 1e-3)
    np.testing.assert_allclose(ln(x).array, z * [1, 2, 3] + [0, 1, -1], rtol=1e-7)


def test_layer_norm_gradcheck(module_gradcheck):
    ln = nn.LayerNorm(4, dtype=np.float64)
    ln.gamma.array[...] = [1.0, 0.5, -1.0, 2.0]
    ln.beta.array[...] = [0.1, 0.2, 0.3, 0.4]
    assert module_gradcheck(ln, np.random.default_rng(3).standard_normal((3, 4)))


# ----- BatchNorm ------------------------------------------------------------------------

def test_batch_norm_buffers_and_state_dict():
    bn = nn.BatchNorm(3)
    assert [n for n, _ in bn.named_parameters()] == ["gamma", "beta"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var"]
    assert (bn.running_mean == 0).all() and (bn.running_var == 1).all()
    assert bn.running_mean.dtype == np.float32
    assert list(bn.state_dict()) == ["gamma", "beta", "running_mean", "running_var"]
    assert repr(bn) == "BatchNorm(3, decay=0.9, eps=2e-05)"


@pytest.mark.parametrize("shape", [(16, 3), (4, 3, 2, 5)])
def test_batch_norm_training_uses_batch_statistics_and_updates_running_ones(shape):
    bn = nn.BatchNorm(3, decay=0.8)
    x = _data(shape)
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    m = x.size // 3
    y = bn(x).array
    bshape = (1, 3) + (1,) * (x.ndim - 2)
    expected = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 2e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    # r = decay * r + (1 - decay) * batch statistic; the variance is the unbiased one
    np.testing.assert_allclose(bn.running_mean, 0.2 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * var * m / (m - 1), rtol=1e-5)
    running_mean = bn.running_mean.copy()
    bn(x)
    np.testing.assert_allclose(bn.running_mean, 0.8 * running_mean + 0.2 * mean, rtol=1e-5)


def test_batch_norm_eval_uses_running_statistics_and_leaves_them():
    bn = nn.BatchNorm(2).eval()
    bn.running_mean[...] = [1.0, -1.0]
    bn.running_var[...] = [4.0, 0.25]
    bn.gamma.array[...] = [2.0, 1.0]
    bn.beta.array[...] = [0.0, 0.5]
    x = _data((5, 2))
    expected = (x - [1.0, -1.0]) / np.sqrt(np.array([4.0, 0.25]) + 2e-5) * [2.0, 1.0] + [0, 0.5]
    np.testing.assert_allclose(bn(x).array, expected, rtol=1e-5, atol=1e-5)
    assert bn.running_mean.tolist() == [1.0, -1.0] and bn.running_var.tolist() == [4.0, 0.25]


def test_batch_norm_updates_once_when_a_checkpoint_recomputes_it():
    """A checkpoint runs the block again in backward under config.in_recompute."""
    plain, checkpointed = nn.BatchNorm(3), nn.BatchNorm(3)
    x = _data((8, 3))
    plain(x)
    y1 = checkpointed(x)                              # the forward pass
    with ms.using_config("in_recompute", True):       # what the recompute in backward does
        y2 = checkpointed(x)
    np.testing.assert_array_equal(y1.array, y2.array)
    np.testing.assert_array_equal(checkpointed.running_mean, plain.running_mean)
    np.testing.assert_array_equal(checkpointed.running_var, plain.running_var)
    assert not (plain.running_mean == 0).all()


def test_batch_norm_running_statistics_round_trip_through_state_dict():
    src, dst = nn.BatchNorm(3), nn.BatchNorm(3)
    src(_data((8, 3)))
    dst.load_state_dict(src.state_dict())
    np.testing.assert_array_equal(dst.running_mean, src.running_mean)
    np.testing.assert_array_equal(dst.running_var, src.running_var)
    x = _data((4, 3), seed=1)
    np.testing.assert_array_equal(src.eval()(x).array, dst.eval()(x).array)


def test_batch_norm_gradcheck(module_gradcheck):
    bn = nn.BatchNorm(2, dtype=np.float64)
    bn.gamma.array[...] = [1.5, -0.5]
    bn.beta.array[...] = [0.2, 0.1]
    x = np.random.default_rng(4).standard_normal((3, 2, 2, 2))
    assert module_gradcheck(bn, x)
    assert module_gradcheck(bn.eval(), x)


def test_batch_norm_inside_real_checkpoints_matches_the_plain_run():
    def make():
        ms.random.seed(0)
        return nn.Sequential(nn.Linear(4, 32), nn.BatchNorm(32), ms.functions.relu,
                             nn.Linear(32, 32), nn.BatchNorm(32), nn.Linear(32, 2))

    x = _data((8, 4))
    plain, ckpt = make(), make()
    plain(x).sum().backward()
    ms.checkpoint_sequential(ckpt, x, segments=2).sum().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-5, atol=1e-6, err_msg=name)
    for (name, a), b in zip(plain.named_buffers(), ckpt.buffers()):
        np.testing.assert_array_equal(b, a, err_msg=name)    # updated once, not twice
