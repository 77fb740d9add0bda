"""memsave/nn/transformer.py: TransformerBlock (pre-norm, GELU MLP, residuals)."""
import numpy as np

import memsave as ms
import memsave.functions as F
from memsave import nn


def test_shape_children_and_parameter_count():
    block = nn.TransformerBlock(8, heads=2)
    assert [n for n, _ in block.named_children()] == ["ln1", "attn", "ln2", "fc1", "fc2", "dropout"]
    assert block.fc1.W.shape == (32, 8) and block.fc2.W.shape == (8, 32)
    n = sum(p.size for p in block.parameters())
    assert n == 2 * 16 + (8 * 24 + 24) + (8 * 8 + 8) + (8 * 32 + 32) + (32 * 8 + 8)
    y = block(np.ones((2, 5, 8), dtype=np.float32))
    assert y.shape == (2, 5, 8) and y.dtype == np.float32
    assert block.attn.causal and not nn.TransformerBlock(8, 2, causal=False).attn.causal


def test_both_branches_are_residual():
    block = nn.TransformerBlock(4, heads=2, mlp_ratio=2, dtype=np.float64)
    for linear in (block.attn.proj, block.fc2):      # zero the last layer of each branch
        linear.W.array[...] = 0.0
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(block(x).array, x)


def test_pre_norm_composition():
    block = nn.TransformerBlock(4, heads=2, mlp_ratio=2, dtype=np.float64).eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    h = x + block.attn(block.ln1(x)).array
    expected = h + block.fc2(F.gelu(block.fc1(block.ln2(h)))).array
    np.testing.assert_allclose(block(x).array, expected, rtol=1e-12)


def test_causal_block_does_not_see_the_future():
    block = nn.TransformerBlock(4, heads=2, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((1, 4, 4))
    x2 = x.copy()
    x2[:, 2:] -= 3.0
    np.testing.assert_allclose(block(x).array[:, :2], block(x2).array[:, :2], rtol=1e-12)


def test_gradcheck(module_gradcheck):
    block = nn.TransformerBlock(4, heads=2, mlp_ratio=2, dtype=np.float64)
    x = np.random.default_rng(3).standard_normal((1, 3, 4))
    assert module_gradcheck(block, x)


def test_checkpointed_block_with_dropout_gives_the_same_gradients():
    def make():
        ms.random.seed(0)
        return nn.TransformerBlock(8, heads=2, dropout=0.2, attention_dropout=0.3)

    x = np.random.default_rng(4).standard_normal((2, 5, 8)).astype(np.float32)
    plain, inner = make(), make()
    block = ms.checkpointed(inner)
    assert isinstance(block, nn.Module) and repr(block).startswith("checkpointed(Transformer")
    ms.random.seed(1)
    y_plain = plain(x)
    y_plain.sum().backward()
    ms.random.seed(1)
    y_ckpt = block(x)
    y_ckpt.sum().backward()
    np.testing.assert_array_equal(y_ckpt.array, y_plain.array)
    for (name, p), q in zip(plain.named_parameters(), block.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-5, atol=1e-6, err_msg=name)


def test_block_keeps_no_sequence_by_sequence_array():
    """Fused attention: nothing of shape (..., T, T) is kept, whatever the sequence length."""
    from memsave.memory import saved_residuals

    block = nn.TransformerBlock(8, heads=2, dtype=np.float64)
    for t in (12, 24):  # not 32, the MLP width
        x = ms.Variable(np.random.default_rng(5).standard_normal((2, t, 8)))
        kept = saved_residuals(lambda h: block(h * 1.0), x)
        assert not [r for r in kept if tuple(r.shape[-2:]) == (t, t)], kept
        # the kept bytes grow linearly in T: doubling T doubles them (no T^2 term)
        total = sum(r.nbytes for r in kept)
        if t == 12:
            first = total
    assert total == 2 * first
