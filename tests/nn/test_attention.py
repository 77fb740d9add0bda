"""memsave/nn/attention.py: MultiHeadAttention against a plain NumPy reference."""
import numpy as np
import pytest

from memsave import nn


def _reference(mha, x, causal, mask=None):
    """Fused qkv -> heads -> softmax(q k^T / sqrt(d)) v -> merge heads -> projection."""
    *lead, L, D = x.shape
    H, d = mha.heads, D // mha.heads
    qkv = x @ mha.qkv.W.array.T + mha.qkv.b.array
    qkv = qkv.reshape(*lead, L, 3, H, d)
    q, k, v = (np.moveaxis(qkv[..., i, :, :], -2, -3) for i in range(3))   # (..., H, L, d)
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(d)
    if causal:
        scores = np.where(np.tril(np.ones((L, L), bool)), scores, -np.inf)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.moveaxis(weights @ v, -3, -2).reshape(*lead, L, D)
    return out @ mha.proj.W.array.T + mha.proj.b.array


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 8), (5, 8), (2, 3, 4, 8)])
def test_matches_numpy_reference(shape, causal):
    mha = nn.MultiHeadAttention(8, heads=2, causal=causal, dtype=np.float64)
    rng = np.random.default_rng(0)
    mha.qkv.b.array[...] = rng.standard_normal(24) * 0.1
    mha.proj.b.array[...] = rng.standard_normal(8) * 0.1
    x = rng.standard_normal(shape)
    y = mha(x)
    assert y.shape == shape
    np.testing.assert_allclose(y.array, _reference(mha, x, causal), rtol=1e-7, atol=1e-9)


def test_mask_is_passed_to_attention():
    mha = nn.MultiHeadAttention(4, heads=2, dtype=np.float64)
    x = np.random.default_rng(4).standard_normal((2, 3, 4))
    mask = np.array([True, True, False])          # no query may attend to the last key
    np.testing.assert_allclose(mha(x, mask=mask).array, _reference(mha, x, False, mask),
                               rtol=1e-7, atol=1e-9)
    assert not np.allclose(mha(x, mask=mask).array, mha(x).array)


def test_parameters_and_default_dtype():
    mha = nn.MultiHeadAttention(12, heads=3)
    assert [(n, p.shape) for n, p in mha.named_parameters()] == [
        ("qkv.W", (36, 12)), ("qkv.b", (36,)), ("proj.W", (12, 12)), ("proj.b", (12,))]
    y = mha(np.ones((1, 2, 12), dtype=np.float32))
    assert y.dtype == np.float32
    assert "MultiHeadAttention(\n  dim=12, heads=3, causal=False\n  (qkv): Linear" in repr(mha)


def test_causal_output_does_not_see_the_future():
    mha = nn.MultiHeadAttention(4, heads=2, causal=True, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((1, 4, 4))
    x2 = x.copy()
    x2[:, -1] += 5.0
    a, b = mha(x).array, mha(x2).array
    np.testing.assert_allclose(a[:, :-1], b[:, :-1], rtol=1e-12)
    assert not np.allclose(a[:, -1], b[:, -1])
    mha.causal = False
    assert not np.allclose(mha(x).array[:, 0], mha(x2).array[:, 0])


def test_dim_must_split_into_heads():
    with pytest.raises(ValueError, match="divisible by heads"):
        nn.MultiHeadAttention(10, heads=3)
    with pytest.raises(ValueError, match="last axis 6"):
        nn.MultiHeadAttention(4, heads=2)(np.ones((2, 6), dtype=np.float32))


def test_dropout_is_off_in_eval():
    mha = nn.MultiHeadAttention(4, heads=2, dropout=0.5)
    x = np.random.default_rng(2).standard_normal((3, 4)).astype(np.float32)
    mha.eval()
    np.testing.assert_array_equal(mha(x).array, mha(x).array)
    mha.train()
    assert (mha(x).array == 0).any()


def test_attention_dropout_drops_probabilities_in_training_only():
    mha = nn.MultiHeadAttention(4, heads=2, attention_dropout=0.5, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((2, 6, 4))
    mha.eval()
    reference = mha(x).array
    np.testing.assert_array_equal(mha(x).array, reference)
    mha.train()
    assert not np.allclose(mha(x).array, reference)
    with pytest.raises(ValueError, match=r"attention_dropout must be in \[0, 1\), got 1.5"):
        nn.MultiHeadAttention(4, heads=2, attention_dropout=1.5)


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck(module_gradcheck, causal):
    mha = nn.MultiHeadAttention(4, heads=2, causal=causal, dtype=np.float64)
    mha.qkv.b.array[...] = np.linspace(-0.3, 0.3, 12)
    x = np.random.default_rng(3).standard_normal((1, 3, 4))
    assert module_gradcheck(mha, x)


def test_merging_heads_does_not_copy_the_attention_output():
    """The fused op lays its (..., H, L, d) output out as (..., L, H, d), so the transpose and
    reshape that merge heads are views: the output is stored once, not twice."""
    import memsave as ms

    mha = nn.MultiHeadAttention(8, heads=2, dtype=np.float64)
    x = ms.Variable(np.random.default_rng(5).standard_normal((2, 5, 8)))
    saved = []
    with ms.saved_array_hooks(lambda a, fn: saved.append((type(fn).__name__, a)) or a, lambda a: a):
        y = mha(x * 1.0)
    attention_output = [a for name, a in saved if name == "ScaledDotProductAttention"
                        and a.shape == (2, 2, 5, 4)][-1]
    proj_input = [a for name, a in saved if name == "Linear" and a.shape == (2, 5, 8)][-1]
    assert np.shares_memory(attention_output, proj_input)
    y.sum().backward()
    assert x.grad.shape == x.shape
