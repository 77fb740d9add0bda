"""Shape, indexing and selection ops (memsave/functions/array.py): values against NumPy,
first and second derivatives against central differences, errors, what is kept for backward."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import memsave as ms
import memsave.functions as F
from memsave.memory import saved_residuals

from ._strategies import arrays, check_grads, distinct_arrays, shapes, var


def axes_for(ndim):
    """None, one axis (possibly negative) or a tuple of distinct axes of an ndim-array."""
    one = st.integers(-ndim, ndim - 1) if ndim else st.nothing()
    many = st.lists(st.integers(0, ndim - 1), min_size=1, unique=True).map(tuple) if ndim \
        else st.just(())
    return st.none() | one | many


# ----- reshape / transpose ---------------------------------------------------------------
@given(data=st.data())
def test_reshape_with_minus_one(data):
    x = data.draw(arrays(shapes(min_dims=1)))
    target = data.draw(st.permutations(list(x.shape))).copy()
    target[data.draw(st.integers(0, len(target) - 1))] = -1
    y = F.reshape(var(x), tuple(target))
    np.testing.assert_array_equal(y.array, x.reshape(target))
    check_grads(lambda a: F.reshape(a, tuple(target)), x)


def test_reshape_method_forms_and_identity():
    v = var(np.arange(6.0))
    assert v.reshape(2, 3).shape == (2, 3) and v.reshape((3, -1)).shape == (3, 2)
    assert F.reshape(v, (6,)) is v  # same shape: no new node


@given(data=st.data())
def test_transpose(data):
    x = data.draw(arrays(shapes()))
    axes = data.draw(st.none() | st.permutations(range(x.ndim)).map(tuple))
    y = F.transpose(var(x), axes)
    np.testing.assert_array_equal(y.array, np.transpose(x, axes))
    check_grads(lambda a: F.transpose(a, axes), x)


def test_transpose_method_and_T():
    x = np.arange(24.0).reshape(2, 3, 4)
    v = var(x)
    np.testing.assert_array_equal(v.T.array, x.T)
    np.testing.assert_array_equal(v.transpose(1, 2, 0).array, x.transpose(1, 2, 0))
    np.testing.assert_array_equal(v.transpose((2, 0, 1)).array, x.transpose(2, 0, 1))


# ----- sum / sum_to / broadcast_to --------------------------------------------------------
@given(data=st.data())
def test_sum(data):
    x = data.draw(arrays(shapes()))
    axis = data.draw(axes_for(x.ndim))
    keepdims = data.draw(st.booleans())
    y = F.sum(var(x), axis=axis, keepdims=keepdims)
    expected = x.sum(axis=axis, keepdims=keepdims)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y.array, expected, rtol=1e-12, atol=1e-14)
    check_grads(lambda a: a.sum(axis=axis, keepdims=keepdims), x)


@given(data=st.data())
def test_sum_to_and_broadcast_to_are_inverse_shapes(data):
    (small,), big = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=1, max_dims=3,
                                                                max_side=3))
    x = data.draw(arrays(big))
    y = F.sum_to(var(x), small)
    lead = x.ndim - len(small)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(small)
                                      if n == 1 and x.shape[lead + i] != 1)
    np.testing.assert_allclose(y.array, x.sum(axis=axes, keepdims=True).reshape(small),
                               rtol=1e-12, atol=1e-14)
    check_grads(lambda a: F.sum_to(a, small), x)

    s = data.draw(arrays(small))
    b = F.broadcast_to(var(s), big)
    np.testing.assert_array_equal(b.array, np.broadcast_to(s, big))
    check_grads(lambda a: F.broadcast_to(a, big), s)


def test_sum_to_rejects_shapes_it_cannot_reach():
    with pytest.raises(ms.ShapeError, match=r"\(2, 3\).*\(4,\)"):
        F.sum_to(var(np.ones((2, 3))), (4,))


# ----- get_item -----------------------------------------------------------------------------
@given(data=st.data())
def test_get_item_basic_indices(data):
    # slices with any step (negative included), integers, None, Ellipsis
    x = data.draw(arrays(shapes(min_dims=1)))
    index = data.draw(hnp.basic_indices(x.shape, allow_newaxis=True, allow_ellipsis=True))
    y = var(x)[index]
    np.testing.assert_array_equal(y.array, x[index])
    check_grads(lambda a: a[index], x)


@given(data=st.data())
def test_get_item_integer_arrays_with_repeats(data):
    x = data.draw(arrays(shapes(min_dims=1)))
    index = data.draw(hnp.integer_array_indices(x.shape, result_shape=hnp.array_shapes(
        min_dims=1, max_dims=2, max_side=4)))
    y = F.get_item(var(x), index)
    np.testing.assert_array_equal(y.array, x[index])
    check_grads(lambda a: F.get_item(a, index), x)


def test_get_item_repeated_indices_accumulate():
    v = var([1.0, 2.0, 3.0])
    y = v[np.array([0, 0, 2, 0])]
    np.testing.assert_array_equal(y.array, [1.0, 1.0, 3.0, 1.0])
    (y * var([1.0, 2.0, 3.0, 4.0])).sum().backward()
    np.testing.assert_array_equal(v.grad, [7.0, 0.0, 3.0])


@given(data=st.data())
def test_get_item_boolean_mask(data):
    x = data.draw(arrays(shapes(min_dims=1)))
    mask = data.draw(hnp.arrays(bool, x.shape))
    y = var(x)[mask]
    np.testing.assert_array_equal(y.array, x[mask])
    check_grads(lambda a: a[mask], x)
    rows = data.draw(hnp.arrays(bool, x.shape[:1]))  # a mask over the first axis only
    np.testing.assert_array_equal(var(x)[rows].array, x[rows])
    check_grads(lambda a: a[rows], x)


def test_get_item_negative_step_gradient():
    x = np.arange(12.0).reshape(3, 4)
    v = var(x)
    y = v[::-1, 3:0:-2]
    np.testing.assert_array_equal(y.array, x[::-1, 3:0:-2])
    y.backward(np.arange(6.0).reshape(3, 2))
    expected = np.zeros((3, 4))
    expected[::-1, 3:0:-2] = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(v.grad, expected)


@pytest.mark.parametrize("index", [
    (slice(None), np.array([2, 0, 2])),
    (1, Ellipsis, np.array([3, 3])),
    (np.array([True, False]), 1, np.array([2, 0, 2])),
    (np.array([1, 0, 1]), np.array([0, 2, 0]), slice(None, None, -1)),
])
def test_get_item_mixed_basic_and_advanced(index):
    x = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(var(x)[index].array, x[index])
    check_grads(lambda a: a[index], x)


def test_get_item_accepts_variables_as_indices():
    x = np.arange(12.0).reshape(3, 4)
    idx = ms.Variable(np.array([2, 0, 2]), requires_grad=False)
    np.testing.assert_array_equal(var(x)[idx].array, x[[2, 0, 2]])
    np.testing.assert_array_equal(var(x)[:, idx].array, x[:, [2, 0, 2]])


# ----- concat / split / stack -------------------------------------------------------------
@st.composite
def concat_inputs(draw):
    """2-3 arrays that agree on every axis but ``axis``."""
    shape = list(draw(shapes(min_dims=1, max_side=3)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    xs = []
    for _ in range(draw(st.integers(2, 3))):
        shape[axis] = draw(st.integers(1, 3))
        xs.append(draw(arrays(tuple(shape))))
    return xs, axis


@given(concat_inputs())
def test_concat(case):
    xs, axis = case
    y = F.concat([var(x) for x in xs], axis=axis)
    np.testing.assert_array_equal(y.array, np.concatenate(xs, axis=axis))
    check_grads(lambda *vs: F.concat(vs, axis=axis), *xs)


def test_concat_mixes_variables_and_constants():
    a = var(np.ones((2, 2)))
    y = F.concat([a, np.zeros((1, 2))])
    np.testing.assert_array_equal(y.array, [[1, 1], [1, 1], [0, 0]])
    (y * var(np.arange(6.0).reshape(3, 2))).sum().backward()
    np.testing.assert_array_equal(a.grad, [[0.0, 1.0], [2.0, 3.0]])


@pytest.mark.parametrize("xs, match", [
    ([np.ones((2, 3)), np.ones((2, 4))], r"\(2, 3\), \(2, 4\)"),
    ([np.ones((2, 3)), np.ones(3)], r"\(2, 3\), \(3,\)"),
    ([], "non-empty"),
])
def test_concat_errors(xs, match):
    with pytest.raises((ms.ShapeError, TypeError), match=match):
        F.concat([var(x) for x in xs], axis=0)


@given(data=st.data())
def test_split_sections_and_indices(data):
    x = data.draw(arrays(shapes(min_dims=1)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    how = data.draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0])
                    | st.lists(st.integers(0, n), max_size=3).map(sorted))
    ys = F.split(var(x), how, axis=axis)
    expected = np.split(x, how, axis=axis)
    assert isinstance(ys, tuple) and len(ys) == len(expected)
    for y, e in zip(ys, expected):
        np.testing.assert_array_equal(y.array, e)
    check_grads(lambda a: F.split(a, how, axis=axis), x)


def test_split_fills_zeros_for_unused_outputs():
    x = var(np.arange(6.0))
    _, b, _ = F.split(x, 3)
    (b * 2.0).sum().backward()  # the first and last pieces get no gradient
    np.testing.assert_array_equal(x.grad, [0, 0, 2, 2, 0, 0])
    check_grads(lambda v: F.split(v * v, [1, 4])[1], np.arange(6.0) / 3)


def test_split_unequal_sections_is_a_shape_error():
    with pytest.raises(ms.ShapeError, match=r"\(2, 5\).*3 equal sections"):
        F.split(var(np.ones((2, 5))), 3, axis=1)


@given(data=st.data())
def test_stack(data):
    shape = data.draw(shapes(max_side=3))
    xs = [data.draw(arrays(shape)) for _ in range(data.draw(st.integers(1, 3)))]
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    y = F.stack([var(x) for x in xs], axis=axis)
    np.testing.assert_array_equal(y.array, np.stack(xs, axis=axis))
    check_grads(lambda *vs: F.stack(vs, axis=axis), *xs)


def test_stack_needs_one_shape():
    with pytest.raises(ms.ShapeError, match=r"\(2,\), \(3,\)"):
        F.stack([var(np.ones(2)), var(np.ones(3))])


# ----- expand_dims / squeeze --------------------------------------------------------------
@given(data=st.data())
def test_expand_dims_and_squeeze(data):
    x = data.draw(arrays(shapes(max_dims=2)))
    count = data.draw(st.integers(1, 2))
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim) if count == 1 else
                     st.lists(st.integers(0, x.ndim + 1), min_size=2, max_size=2,
                              unique=True).map(tuple))
    y = F.expand_dims(var(x), axis)
    np.testing.assert_array_equal(y.array, np.expand_dims(x, axis))
    check_grads(lambda a: F.expand_dims(a, axis), x)

    z = F.squeeze(y, axis)
    np.testing.assert_array_equal(z.array, x)
    np.testing.assert_array_equal(F.squeeze(y).array, np.squeeze(y.array))
    check_grads(lambda a: F.squeeze(a), y.array)


def test_squeeze_errors_name_the_axis_and_shape():
    with pytest.raises(ms.ShapeError, match=r"axis 1 of shape \(1, 3\) has length 3"):
        F.squeeze(var(np.ones((1, 3))), 1)
    with pytest.raises(ms.ShapeError, match="out of range"):
        F.squeeze(var(np.ones((1, 3))), 2)


# ----- where / clip -----------------------------------------------------------------------
@given(data=st.data())
def test_where_broadcasts_all_three(data):
    (sc, sx, sy), _ = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3,
                                                                  max_side=3))
    cond = data.draw(hnp.arrays(bool, sc))
    x, y = data.draw(arrays(sx)), data.draw(arrays(sy))
    out = F.where(cond, var(x), var(y))
    np.testing.assert_array_equal(out.array, np.where(cond, x, y))
    check_grads(lambda a, b: F.where(cond, a * a, b), x, y)


def test_where_gradient_routes_to_the_chosen_side():
    x, y = var([1.0, 2.0, 3.0]), var(5.0)
    cond = ms.Variable(np.array([True, False, True]))
    out = F.where(cond, x, y)
    np.testing.assert_array_equal(out.array, [1.0, 5.0, 3.0])
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 1.0])
    assert y.grad == 1.0 and cond.grad is None


def test_where_with_python_scalar_keeps_dtype():
    x = ms.Variable(np.array([1.0, -1.0], dtype=np.float32))
    y = F.where(x.array > 0, x, 0.0)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.array, [1.0, 0.0])
    np.testing.assert_array_equal(F.where(x.array > 0, 7.0, x).array, [7.0, -1.0])


def test_where_errors():
    x = var(np.ones(3))
    with pytest.raises(ms.DTypeError, match="boolean.*int64"):
        F.where(np.array([1, 0, 1]), x, 0.0)
    with pytest.raises(ms.ShapeError, match=r"\(2,\).*\(3,\)"):
        F.where(np.array([True, False]), x, 0.0)


@given(data=st.data())
def test_clip(data):
    lo = data.draw(st.floats(-1.5, 0.5))
    hi = lo + data.draw(st.floats(0.1, 1.5))
    x = data.draw(arrays(away_from=(lo, hi)))
    y = F.clip(var(x), lo, hi)
    np.testing.assert_array_equal(y.array, np.clip(x, lo, hi))
    check_grads(lambda a: F.clip(a, lo, hi), x)


def test_clip_one_sided_and_gradient_at_bounds():
    v = var([-2.0, 0.0, 1.0, 3.0])
    np.testing.assert_array_equal(F.clip(v, None, 1.0).array, [-2.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(F.clip(v, 0.0, None).array, [0.0, 0.0, 1.0, 3.0])
    F.clip(v, 0.0, 1.0).sum().backward()
    np.testing.assert_array_equal(v.grad, [0.0, 1.0, 1.0, 0.0])  # bounds included
    with pytest.raises(ValueError, match="larger than"):
        F.clip(v, 2.0, 1.0)
    with pytest.raises(ValueError, match="at least one"):
        F.clip(v, None, None)


# ----- max / min -------------------------------------------------------------------------
@pytest.mark.parametrize("op, ref", [(F.max, np.max), (F.min, np.min)])
@given(data=st.data())
def test_max_min_distinct_values(op, ref, data):
    x = data.draw(distinct_arrays())
    axis = data.draw(axes_for(x.ndim))
    keepdims = data.draw(st.booleans())
    y = op(var(x), axis=axis, keepdims=keepdims)
    expected = ref(x, axis=axis, keepdims=keepdims)
    assert y.shape == expected.shape
    np.testing.assert_array_equal(y.array, expected)
    check_grads(lambda a: op(a * a, axis=axis, keepdims=keepdims), x + 0.05 * x.size + 0.03)


def test_max_min_share_the_gradient_between_ties():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    v = var(x)
    F.max(v, axis=1).backward(np.array([6.0, 3.0]))
    np.testing.assert_allclose(v.grad, [[0.0, 3.0, 3.0], [1.0, 1.0, 1.0]])
    v = var(x)
    F.min(v).backward()
    np.testing.assert_allclose(v.grad, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    v = var(np.full((2, 2), 4.0))
    F.max(v).backward()
    np.testing.assert_allclose(v.grad, np.full((2, 2), 0.25))
    v = var(x)
    F.min(v, axis=0, keepdims=True).sum().backward()
    np.testing.assert_allclose(v.grad, [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])


def test_max_axis_errors():
    with pytest.raises(ms.ShapeError, match="axis 2 is out of range"):
        F.max(var(np.ones((2, 3))), axis=2)
    with pytest.raises(ms.ShapeError, match="repeated axis"):
        F.min(var(np.ones((2, 3))), axis=(1, -1))


# ----- what each op keeps for backward ----------------------------------------------------
def kept(fn, *args):
    return sorted((r.op, str(np.dtype(r.dtype)), r.shape) for r in saved_residuals(fn, *args))


def test_ops_keep_only_what_backward_needs():
    x = var(np.arange(12.0).reshape(3, 4))
    # shape ops keep nothing; x itself is a leaf (alive anyway)
    assert kept(lambda a: F.concat([a, a], 1).sum() + F.split(a, 2, 1)[0].sum()
                + F.stack([a, a]).sum() + F.squeeze(F.expand_dims(a, 0)).sum(), x) == []
    # max/min/clip keep a boolean mask, not a float array
    assert kept(lambda a: F.max(a * 1.0, axis=1), x) == [("Max", "bool", (3, 4))]
    assert kept(lambda a: F.clip(a * 1.0, 2.0, 5.0), x) == [("Clip", "bool", (3, 4))]
    cond = x.array > 3
    assert kept(lambda a: F.where(cond, a * 1.0, 0.0), x) == [("Where", "bool", (3, 4))]
