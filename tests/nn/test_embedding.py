"""memsave/nn/embedding.py: Embedding."""
import numpy as np
import pytest

from memsave import nn


def test_lookup_shape_and_values():
    emb = nn.Embedding(10, 4)
    ids = np.array([[1, 2, 3], [9, 9, 0]])
    y = emb(ids)
    assert y.shape == (2, 3, 4) and y.dtype == np.float32
    np.testing.assert_array_equal(y.array, emb.W.array[ids])


def test_init_statistics():
    emb = nn.Embedding(500, 64)
    assert emb.W.shape == (500, 64)
    assert emb.W.array.std() == pytest.approx(1.0, rel=0.2)
    assert nn.Embedding(500, 64, std=0.02).W.array.std() == pytest.approx(0.02, rel=0.2)
    assert repr(emb) == "Embedding(500, 64)"


def test_gradcheck_and_repeated_ids_accumulate(module_gradcheck):
    emb = nn.Embedding(5, 3, dtype=np.float64)
    ids = np.array([0, 3, 3, 1])
    assert module_gradcheck(emb, ids)
    emb(ids).sum().backward()
    np.testing.assert_array_equal(emb.W.grad[:, 0], [1, 1, 0, 2, 0])
