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


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.booleans(), st.booleans(),
       st.integers(1, 4))
def test_gradients(lq, lk, d, causal, masked, block_size):
    q, k, v = rand(2, lq, d, seed=lq), rand(2, lk, d, seed=lk), rand(2, lk, 2, seed=d)
    mask = None
    if masked:
        mask = np.random.default_rng(5).random((2, lq, lk)) < 0.6
        mask[..., 0] = True

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, mask=mask, causal=causal,
                                              block_size=block_size)

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


# ----- the fused kernel: blocks, backward paths, dropout, bounded memory --------------------

def composed_attention(q, k, v, mask=None, causal=False):
    """The unfused composition of memsave ops (what the op replaced), for comparison."""
    scores = F.matmul(q * (1 / np.sqrt(q.shape[-1])), F.transpose(k, (0, 2, 1)))
    allowed = np.ones(scores.shape[-2:], dtype=bool) if mask is None else mask
    if causal:
        allowed = allowed & np.tril(np.ones(scores.shape[-2:], dtype=bool))
    bias = np.where(allowed, 0.0, np.finfo(np.float64).min / 2)
    return F.matmul(F.softmax(scores + bias, axis=-1), v)


def _grads(fn, arrays, seed=0, create_graph=False):
    xs = [ms.Variable(a) for a in arrays]
    y = fn(*xs)
    gy = np.random.default_rng(seed).standard_normal(y.shape)
    return y.array, [g.array for g in ms.grad([y], xs, [gy], create_graph=create_graph)]


@pytest.mark.parametrize("block_size", [1, 3, 4, 64])
@pytest.mark.parametrize("causal, masked", [(False, False), (True, False), (False, True),
                                            (True, True)])
def test_fused_equals_the_composition_for_every_block_size(block_size, causal, masked):
    q, k, v = rand(2, 9, 4, seed=1), rand(2, 7, 4, seed=2), rand(2, 7, 3, seed=3)
    mask = None
    if masked:
        mask = np.random.default_rng(4).random((9, 7)) < 0.6
        mask[:, 0] = True  # no fully masked row (tested below)

    def fused(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, mask=mask, causal=causal,
                                              block_size=block_size)

    y, grads = _grads(fused, [q, k, v])
    y_ref, grads_ref = _grads(lambda q, k, v: composed_attention(q, k, v, mask, causal), [q, k, v])
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=0, atol=1e-12)
    # the differentiable (create_graph) backward gives the same numbers as the fused one
    _, grads_graph = _grads(fused, [q, k, v], create_graph=True)
    for g, g_graph in zip(grads, grads_graph):
        np.testing.assert_allclose(g, g_graph, rtol=0, atol=1e-12)


def test_fully_masked_query_is_constant_in_q_and_k():
    q, k, v = rand(1, 3, 2, seed=1), rand(1, 4, 2, seed=2), rand(1, 4, 2, seed=3)
    mask = np.ones((3, 4), dtype=bool)
    mask[1] = False

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, mask=mask, block_size=2)

    y, (gq, gk, gv) = _grads(f, [q, k, v])
    np.testing.assert_allclose(y[0, 1], v[0].mean(0), rtol=1e-12)
    np.testing.assert_array_equal(gq[0, 1], 0.0)
    assert ms.gradcheck(f, [q, k, v])
    assert ms.gradgradcheck(f, [q, k, v])


def _seeded_dropout(ratio, causal=False, block_size=2, mask=None):
    def f(q, k, v):
        ms.random.seed(7)
        return F.scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, dropout=ratio,
                                              block_size=block_size)
    return f


@pytest.mark.parametrize("causal", [False, True])
def test_dropout_gradients_and_second_derivatives(causal):
    q, k, v = rand(2, 5, 3, seed=1), rand(2, 5, 3, seed=2), rand(2, 5, 2, seed=3)
    f = _seeded_dropout(0.3, causal)
    assert ms.gradcheck(f, [q, k, v])
    assert ms.gradgradcheck(f, [q, k, v])
    _, fused = _grads(f, [q, k, v])
    _, graph = _grads(f, [q, k, v], create_graph=True)
    for a, b in zip(fused, graph):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_dropout_zeroes_probabilities_at_the_ratio_and_is_off_in_eval():
    lk = 400
    q, k = rand(1, 50, 4, seed=1), rand(1, lk, 4, seed=2)
    v = np.eye(lk)[None]  # output row i = row i of the (dropped, rescaled) probabilities
    p = F.scaled_dot_product_attention(q, k, v, dropout=0.25, block_size=16).array
    assert abs((p == 0).mean() - 0.25) < 0.01
    plain = F.scaled_dot_product_attention(q, k, v).array
    np.testing.assert_allclose(p[p != 0], plain[p != 0] / 0.75, rtol=1e-12)
    with ms.using_config("train", False):
        np.testing.assert_array_equal(
            F.scaled_dot_product_attention(q, k, v, dropout=0.25).array, plain)
    np.testing.assert_array_equal(
        F.scaled_dot_product_attention(q, k, v, dropout=0.25, train=False).array, plain)


def test_dropout_is_replayed_by_a_checkpoint():
    q, k, v = (ms.Variable(rand(2, 6, 3, seed=s)) for s in (1, 2, 3))

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, causal=True, dropout=0.5, block_size=4)

    results = []
    for run in (f, lambda *xs: ms.checkpoint(f, *xs)):
        ms.random.seed(3)
        y = run(q, k, v)
        for x in (q, k, v):
            x.cleargrad()
        (y * y).sum().backward()
        results.append([y.array] + [x.grad for x in (q, k, v)])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    ms.random.seed(4)
    assert not np.array_equal(f(q, k, v).array, results[0][0])  # a new draw, a new mask


def test_keeps_only_q_k_v_output_and_row_logsumexp():
    from memsave.memory import saved_residuals

    q, k, v = (ms.Variable(rand(2, 16, 4, seed=s)) for s in (1, 2, 3))

    def f(q, k, v):  # inputs made by ops, so that keeping them shows up
        return F.scaled_dot_product_attention(q * 1.0, k * 1.0, v * 1.0, causal=True,
                                              block_size=4)

    kept = sorted(r.shape for r in saved_residuals(f, q, k, v) if r.op == "ScaledDotProductAttention")
    assert kept == sorted([(2, 16, 4)] * 4 + [(2, 16, 1)])  # q, k, v, output; lse


def test_transient_memory_is_a_block_of_rows_not_the_score_matrix():
    from memsave.memory import measure

    t, d, block = 1024, 16, 64
    q, k, v = (ms.Variable(rand(1, t, d, seed=s)) for s in (1, 2, 3))
    gy = rand(1, t, d, seed=4)
    scores_bytes = t * t * 8        # one T x T float64 array: 8 MiB
    block_bytes = block * t * 8     # one block of scores: 512 KiB
    operand_bytes = t * d * 8       # q, k, v, the output, each gradient: 128 KiB
    for causal in (False, True):
        with measure() as m:
            y = F.scaled_dot_product_attention(q, k, v, causal=causal, block_size=block)
            y.backward(gy)
            del y
        assert m.peak < 4 * block_bytes + 6 * operand_bytes < scores_bytes / 2, (causal, m.peak)
    with measure() as m_composed:
        y = composed_attention(q, k, v, causal=True)
        y.backward(gy)
        del y
    assert m_composed.peak > 2 * scores_bytes  # the composition keeps T x T arrays


def test_argument_errors():
    q = np.ones((2, 3, 4))
    with pytest.raises(ms.DTypeError, match="one floating dtype, got float64, float32 and float64"):
        F.scaled_dot_product_attention(q, q.astype(np.float32), q)
    with pytest.raises(ms.DTypeError, match="one floating dtype, got int64"):
        F.scaled_dot_product_attention(np.ones((2, 3), dtype=np.int64), np.ones((2, 3), np.int64),
                                       np.ones((2, 3), np.int64))
    with pytest.raises(ms.ShapeError, match="leading dimensions"):
        F.scaled_dot_product_attention(q, np.ones((3, 3, 4)), np.ones((3, 3, 4)))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=f"block_size must be a positive int, got {bad!r}"):
            F.scaled_dot_product_attention(q, q, q, block_size=bad)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        F.scaled_dot_product_attention(q, q, q, dropout=1.0)


@pytest.mark.parametrize("causal", [False, True])
def test_leading_dimensions_broadcast_in_both_backwards(causal):
    q, k, v = rand(2, 3, 5, 4, seed=1), rand(1, 3, 6, 4, seed=2), rand(6, 2, seed=3)

    def f(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, causal=causal, block_size=2)

    assert f(q, k, v).shape == (2, 3, 5, 2)
    np.testing.assert_allclose(f(q, k, v).array, attention_reference(q, k, v, causal=causal),
                               rtol=1e-12, atol=1e-12)
    assert ms.gradcheck(f, [q, k, v])
    assert ms.gradgradcheck(f, [q, k, v])
