"""memsave/nn/dropout.py: Dropout follows the module's training flag and memsave's RNG."""
import numpy as np
import pytest

import memsave as ms
from memsave import nn


def test_training_drops_and_rescales():
    y = nn.Dropout(0.25)(np.ones(20000, dtype=np.float32)).array
    assert y.dtype == np.float32
    assert set(np.unique(y).tolist()) == {0.0, np.float32(1 / 0.75)}
    assert (y == 0).mean() == pytest.approx(0.25, abs=0.02)


def test_eval_is_the_identity_and_follows_the_parent():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.9))
    x = np.ones((3, 4), dtype=np.float32)
    net.eval()
    assert not net[1].training
    np.testing.assert_array_equal(net(x).array, net[0](x).array)
    net.train()
    assert (net(x).array == 0).mean() > 0.5


def test_masks_come_from_memsave_random():
    d = nn.Dropout(0.5)
    x = np.ones(64, dtype=np.float32)
    ms.random.seed(7)
    a = d(x).array
    ms.random.seed(7)
    b = d(x).array
    c = d(x).array
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


def test_ratio_is_checked_and_shown():
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        nn.Dropout(1.0)
    assert repr(nn.Dropout(0.1)) == "Dropout(ratio=0.1)"


def test_gradcheck_with_a_fixed_mask(module_gradcheck):
    x = np.random.default_rng(5).standard_normal((3, 4))
    assert module_gradcheck(nn.Dropout(0.5), x, fork_rng=True)
