"""scaled_dot_product_attention against NumPy: plain, causal, masked; derivatives."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import memsave as ms
import memsave.functions as F


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def attention_reference(q, k, v, mask=None, causal=False, scale=None):
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    allowed = np.ones(s.shape, dtype=bool)
    if mask is not None:
        allowed &= mask
    if causal:
        allowed &= np.tril(np.ones(s.shape[-2:], dtype=bool))
    s = np.where(allowed, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True) @ v


def test_plain_attention_matches_reference():
    q, k, v = rand(2, 3, 4, seed=1), rand(2, 5, 4, seed=2), rand(2, 5, 3, seed=3)
    y = F.scaled_dot_product_attention(ms.Variable(q), ms.Variable(k), ms.Variable(v))
    assert y.shape == (2, 3, 3)
    np.testing.assert_allclose(y.array, attention_reference(q, k, v), rtol=1e-12, atol=1e-12)
    y = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    np.testing.assert_allclose(y.array, attention_reference(q, k, v, scale=0.3), rtol=1e-12)


@pytest.mark.parametrize("lq, lk", [(4, 4), (3, 5), (5, 3)])
def test_causal_matches_reference(lq, lk):
    q, k, v = rand(2, lq, 3, seed=1), rand(2, lk, 3, seed=2), rand(2, lk, 2, seed=3)
    y = F.scaled_dot_product_attention(q, k, v, causal=True)
    np.testing.assert_allclose(y.array, attention_reference(q, k, v, causal=True), rtol=1e-12,
                               atol=1e-12)
    # the first query sees only the first key
    np.testing.assert_allclose(y.array[:, 0], v[:, 0], rtol=1e-12)


def test_mask_broadcasts_and_combines_with_causal():
    q, k, v = rand(2, 3, 4, 5, seed=1), rand(2, 3, 6, 5, seed=2), rand(2, 3, 6, 2, seed=3)
    key_padding = np.array([True] * 4 + [False] * 2)[None, None, None, :]  # (1, 1, 1, Lk)
    y = F.scaled_dot_product_attention(q, k, v, mask=key_padding)
    np.testing.assert_allclose(y.array, attention_reference(q, k, v, key_padding), rtol=1e-12)
    mask = np.random.default_rng(4).random((4, 6)) < 0.7
    mask[:, 0] = True  # every query attends to something
    y = F.scaled_dot_product_attention(q, k, v, mask=mask, causal=True)
    np.testing.assert_allclose(y.array, attention_reference(q, k, v, mask, causal=True),
                               rtol=1e-12)


def test_query_with_nothing_to_attend_averages_values_not_nan():
    q, k, v = rand(1, 2, 3, seed=1), rand(1, 4, 3, seed=2), rand(1, 4, 2, seed=3)
    mask = np.array([[False] * 4, [True, False, True, False]])
    y = F.scaled_dot_product_attention(ms.Variable(q), ms.Variable(k), ms.Variable(v), mask=mask)
    np.testing.assert_allclose(y.array[0, 0], v[0].mean(0), rtol=1e-12)
    np.testing.assert_allclose(y.array[0, 1], attention_reference(q[:, 1:], k, v, mask[1:])[0, 0],
                               rtol=1e-12)
    assert np.isfinite(y.array).all()


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.booleans(), st.booleans())
def test_gradients(lq, lk, d, causal, masked):
    q, k, v = rand(2, lq, d, seed=lq), rand(2, lk, d, seed=lk), rand(2, lk, 2, seed=d)
    mask = None
    if masked:
        mask = np.random.default_rng(5).random((2, lq, lk)) < 0.6
        mask[..., 0] = True

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, mask=mask, causal=causal)

    np.testing.assert_allclose(f(q, k, v).array, attention_reference(q, k, v, mask, causal),
                               rtol=1e-12, atol=1e-12)
    assert ms.gradcheck(f, [q, k, v])
    assert ms.gradgradcheck(f, [q, k, v])


def test_float32_stays_float32():
    q = np.ones((2, 3, 4), dtype=np.float32)
    y = F.scaled_dot_product_attention(q, q, q, causal=True, mask=np.ones((3, 3), dtype=bool))
    assert y.dtype == np.float32 and np.isfinite(y.array).all()


def test_errors():
    q, k, v = np.ones((2, 3, 4)), np.ones((2, 5, 4)), np.ones((2, 5, 6))
    with pytest.raises(ms.ShapeError, match=r"q \(2, 3, 4\), k \(2, 5, 3\)"):
        F.scaled_dot_product_attention(q, np.ones((2, 5, 3)), v)
    with pytest.raises(ms.ShapeError, match=r"v \(2, 4, 6\)"):
        F.scaled_dot_product_attention(q, k, np.ones((2, 4, 6)))
    with pytest.raises(ms.DTypeError, match="boolean"):
        F.scaled_dot_product_attention(q, k, v, mask=np.ones((3, 5)))
    with pytest.raises(ms.ShapeError, match=r"mask of shape \(3, 4\)"):
        F.scaled_dot_product_attention(q, k, v, mask=np.ones((3, 4), dtype=bool))
    with pytest.raises(ms.ShapeError, match=r"mask of shape \(7, 3, 5\)"):
        F.scaled_dot_product_attention(q, k, v, mask=np.ones((7, 3, 5), dtype=bool))
