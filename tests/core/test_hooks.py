"""Saved-array hooks: pack/unpack, nesting, disabling, leaf inputs by reference (memsave/core/hooks.py)."""
import asyncio
import threading

import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave import FunctionNode, Variable
from memsave.core.hooks import current_hooks, disable_saved_array_hooks, saved_array_hooks


def var(values, **kwargs):
    return Variable(np.asarray(values, dtype=np.float64), **kwargs)


class Recorder:
    """pack/unpack pair that logs its calls and wraps the array in a tagged tuple."""

    def __init__(self, tag):
        self.tag = tag
        self.packed = []     # (array, function) pairs
        self.unpacked = []

    def pack(self, array, fn):
        self.packed.append((array, fn))
        return (self.tag, array)

    def unpack(self, packed):
        tag, array = packed
        assert tag == self.tag  # the unpack of the hook that packed it
        self.unpacked.append(array)
        return array


def test_pack_gets_the_array_and_the_function_node_and_unpack_is_used():
    rec = Recorder("r")
    x = var([0.2, -0.4])
    with saved_array_hooks(rec.pack, rec.unpack):
        y = F.tanh(x)
    assert len(rec.packed) == 1
    array, fn = rec.packed[0]
    assert array is y.array
    assert isinstance(fn, FunctionNode) and fn is y.creator
    assert rec.unpacked == []
    y.sum().backward()  # outside the block: the pair stored with the array still applies
    assert len(rec.unpacked) == 1 and rec.unpacked[0] is y.array
    np.testing.assert_allclose(x.grad, 1 - np.tanh([0.2, -0.4]) ** 2)


def test_save_for_backward_goes_through_the_hooks():
    rec = Recorder("r")
    x = var([-2.0, 3.0])
    with saved_array_hooks(rec.pack, rec.unpack):
        y = abs(x)  # Absolute saves sign(x) with save_for_backward
    assert len(rec.packed) == 1
    np.testing.assert_array_equal(rec.packed[0][0], [-1.0, 1.0])
    y.sum().backward()
    assert len(rec.unpacked) == 1
    np.testing.assert_array_equal(x.grad, [-1.0, 1.0])


def test_unpacked_value_is_what_backward_uses():
    a0 = np.array([0.3, -1.1, 0.77, 2.0])

    def reference():
        x = Variable(a0.copy())
        F.tanh(x).sum().backward()
        return x.grad

    def compressed():
        x = Variable(a0.copy())
        with saved_array_hooks(lambda a, fn: a.astype(np.float16),
                               lambda a: a.astype(np.float64)):
            y = F.tanh(x)
        y.sum().backward()
        return x.grad

    exact, lossy = reference(), compressed()
    y16 = np.tanh(a0).astype(np.float16).astype(np.float64)
    np.testing.assert_array_equal(lossy, 1 - y16 * y16)
    assert not np.array_equal(lossy, exact)
    np.testing.assert_allclose(lossy, exact, atol=2e-3)


def test_unpack_result_changes_gradient_visibly():
    x = var([1.0, 2.0])
    with saved_array_hooks(lambda a, fn: a, lambda a: a * 10.0):
        h = x * 1.0
        y = (h * h).sum()  # Mul packs the non-leaf h twice
    y.backward()
    # d/dh (h*h) = a + b with both unpacked as 10 h
    np.testing.assert_array_equal(x.grad, 20.0 * np.array([1.0, 2.0]))


def test_nesting_innermost_wins_and_outer_is_restored():
    outer, inner = Recorder("outer"), Recorder("inner")
    x = var([0.5])
    assert current_hooks() is None
    with saved_array_hooks(outer.pack, outer.unpack):
        F.tanh(x)
        with saved_array_hooks(inner.pack, inner.unpack):
            assert current_hooks()[:2] == (inner.pack, inner.unpack)
            F.tanh(x)
            F.tanh(x)
        assert current_hooks()[:2] == (outer.pack, outer.unpack)
        F.tanh(x)
    assert current_hooks() is None
    assert (len(outer.packed), len(inner.packed)) == (2, 2)


def test_hooks_are_restored_after_an_exception():
    rec = Recorder("r")
    with pytest.raises(KeyError), saved_array_hooks(rec.pack, rec.unpack):
        raise KeyError("boom")
    assert current_hooks() is None


def test_disable_saved_array_hooks():
    rec = Recorder("r")
    x = var([0.5, 0.25])
    with saved_array_hooks(rec.pack, rec.unpack):
        with disable_saved_array_hooks():
            assert current_hooks() is None
            y = F.tanh(x)
        assert current_hooks()[:2] == (rec.pack, rec.unpack)
        F.tanh(x)
    assert len(rec.packed) == 1  # only the op outside the disabled block
    y.sum().backward()
    assert rec.unpacked == []


def test_leaf_inputs_are_kept_by_reference_without_pack():
    # By design: a leaf (parameter, user array) is alive anyway, so packing it (to offload
    # or recompute) would save nothing; only non-leaf arrays go through pack.
    rec = Recorder("r")
    w = ms.Parameter(np.array([2.0, 3.0]))
    c = np.array([4.0, 5.0])  # an ndarray argument: a constant leaf
    x = var([1.0, -1.0])
    with saved_array_hooks(rec.pack, rec.unpack):
        y = x * w          # both leaves: no pack
        z = (x * c).sum()  # leaf and constant: no pack
        assert rec.packed == []
        h = x * 1.0        # non-leaf
        u = h * w          # retains h (packed) and w (by reference)
    assert len(rec.packed) == 1
    assert rec.packed[0][0] is h.array and rec.packed[0][1] is u.creator
    kept_w = u.creator._retained_in[1].packed
    assert kept_w is w.array  # the very array, not a copy
    (y.sum() + z + u.sum()).backward()
    np.testing.assert_array_equal(w.grad, [2.0, -2.0])
    np.testing.assert_array_equal(x.grad, [2.0 + 4.0 + 2.0, 3.0 + 5.0 + 3.0])


def test_no_pack_under_no_grad_or_for_constants():
    rec = Recorder("r")
    x = var([0.5])
    c = var([0.5], requires_grad=False)
    with saved_array_hooks(rec.pack, rec.unpack):
        with ms.no_grad():
            F.tanh(F.tanh(x) * 2.0)
        F.tanh(F.tanh(c) * 2.0)  # nothing requires grad: no graph, nothing saved
    assert rec.packed == []


def test_hooks_are_per_thread():
    rec = Recorder("r")
    seen = {}

    def worker():
        seen["hooks"] = current_hooks()

    with saved_array_hooks(rec.pack, rec.unpack):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert seen["hooks"] is None


def test_hooks_are_per_asyncio_task():
    rec_a, rec_b = Recorder("a"), Recorder("b")

    async def task(rec, n):
        with saved_array_hooks(rec.pack, rec.unpack):
            for _ in range(n):
                await asyncio.sleep(0)
                F.tanh(var([0.1]))
                assert current_hooks()[:2] == (rec.pack, rec.unpack)

    async def main():
        await asyncio.gather(task(rec_a, 5), task(rec_b, 3))

    asyncio.run(main())
    assert (len(rec_a.packed), len(rec_b.packed)) == (5, 3)
