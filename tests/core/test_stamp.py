"""The stamps behind in-place detection (memsave/core/saved.py) on small, transposed and strided
arrays."""
import numpy as np
import pytest

from memsave.core.saved import SavedArray, stamp
from memsave.errors import InPlaceError


@pytest.mark.parametrize("index", range(16))
def test_a_write_to_any_element_of_a_small_array_is_caught(index):
    a = np.arange(16.0).reshape(4, 4)
    kept = SavedArray(a)
    a.flat[index] = -1.0
    with pytest.raises(InPlaceError, match=r"Mul: input 1 \(shape \(4, 4\), float64[,)]"):
        kept.get("Mul", "input", 1)


@pytest.mark.parametrize("view", [lambda a: a.T, lambda a: a[:, ::3], lambda a: a[::2, 1:]],
                         ids=["transposed", "strided columns", "strided rows"])
def test_views_are_stamped_without_error_and_their_writes_caught(view):
    base = np.arange(300.0).reshape(20, 15)
    a = view(base)
    kept = SavedArray(a)
    assert stamp(a) == kept.stamp
    np.testing.assert_array_equal(kept.get("Tanh", "output", 0), a)   # unmodified: passes
    base[...] = 0.0                                                   # whole update, via the base
    with pytest.raises(InPlaceError, match="Tanh: output 0"):
        kept.get("Tanh", "output", 0)


def test_first_and_last_elements_are_sampled():
    for position in (0, -1):
        a = np.arange(1000.0)
        kept = SavedArray(a)
        a[position] = 7.5
        with pytest.raises(InPlaceError, match="saved array 2"):
            kept.get("Dropout", "saved array", 2)


def test_owner_is_named_by_its_label_when_it_is_not_a_string():
    class Op:
        label = "MatMul"
    a = np.ones(3)
    kept = SavedArray(a)
    a[1] = 2.0
    with pytest.raises(InPlaceError, match=r"^MatMul: input 0 "):
        kept.get(Op(), "input", 0)


def test_empty_arrays_have_no_stamp():
    assert stamp(np.ones((0, 3))) is None
    assert SavedArray(np.ones((0, 3))).get("Sum", "input", 0).shape == (0, 3)


@pytest.mark.parametrize("view", [lambda a: a[:, :, :64].transpose(0, 2, 1), lambda a: a[:, ::2],
                                  lambda a: a.transpose(2, 0, 1)],
                         ids=["sliced and transposed", "strided", "permuted"])
def test_stamping_a_view_never_copies_it(view):
    # A saved view (q, k, v split off a fused projection, then transposed) is sampled in place:
    # stamping and checking it allocate a few hundred bytes, not a copy of the array.
    import tracemalloc
    a = view(np.ones((8, 128, 128)))
    stamp(a)                                             # caches of the sample positions
    tracemalloc.start()
    try:
        kept = SavedArray(a)
        kept.get("Attention", "input", 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4096 < a.nbytes // 16


def test_a_saved_view_is_named_with_the_shape_of_the_array_written_into():
    # matmul keeps a 1-D operand as a (1, n) view: the error also names the (n,) array the
    # user holds and wrote into.
    import memsave as ms
    h = ms.Variable(np.arange(3.0)) * 1.0
    y = h @ ms.Variable(np.ones((3, 2)))
    h.array[...] = 0.0
    with pytest.raises(InPlaceError, match=r"MatMul: input 0 \(shape \(1, 3\), float64, a view of "
                                           r"an array of shape \(3,\)\)"):
        y.sum().backward()
