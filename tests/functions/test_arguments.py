"""Bad axes and shapes raise memsave's errors naming the argument and the array's shape (not
NumPy's AxisError), and NumPy integers are accepted wherever an int is
(memsave/functions/array.py, math.py)."""
import numpy as np
import pytest

import memsave as ms
import memsave.functions as F

X = ms.Variable(np.arange(6.0).reshape(2, 3))
i64 = np.int64

BAD = [
    (lambda: F.sum(X, axis=5), ms.ShapeError,
     r"sum: axis 5 is out of range for an array of rank 2 \(shape \(2, 3\)\); use an axis in \[-2, 1\]"),
    (lambda: F.sum(X, axis=(0, -3)), ms.ShapeError, r"sum: axis -3 is out of range .*shape \(2, 3\)"),
    (lambda: F.sum(X, axis=(1, -1)), ms.ShapeError, r"sum: repeated axis in \(1, -1\)"),
    (lambda: F.sum(X, axis=1.0), TypeError, r"sum: axis must be an int, a tuple of ints or None, got 1\.0"),
    (lambda: F.sum(X, axis="0"), TypeError, "sum: axis must be an int"),
    (lambda: X.sum(axis=2), ms.ShapeError, r"sum: axis 2 is out of range .*shape \(2, 3\)"),
    (lambda: F.sum(ms.Variable(np.array(1.0)), axis=0), ms.ShapeError,
     r"sum: axis 0 is out of range for an array of rank 0 \(shape \(\)\); a 0-d array has no axis"),
    (lambda: F.mean(X, axis=5), ms.ShapeError, r"mean: axis 5 is out of range .*shape \(2, 3\)"),
    (lambda: F.mean(X, axis=True), TypeError, "mean: axis must be an int"),
    (lambda: F.max(X, axis=2), ms.ShapeError, r"max: axis 2 is out of range .*shape \(2, 3\)"),
    (lambda: F.min(X, axis=-3), ms.ShapeError, r"min: axis -3 is out of range .*shape \(2, 3\)"),
    (lambda: F.concat([X, X], axis=2), ms.ShapeError, r"concat: axis 2 is out of range .*shape \(2, 3\)"),
    (lambda: F.split(X, 3, axis=2), ms.ShapeError, r"split: axis 2 is out of range .*shape \(2, 3\)"),
    (lambda: F.squeeze(X, 4), ms.ShapeError, r"squeeze: axis 4 is out of range .*shape \(2, 3\)"),
    (lambda: F.transpose(X, (0, 2)), ms.ShapeError,
     r"transpose: axes \(0, 2\) are not a permutation of the axes of an array of shape \(2, 3\)"),
    (lambda: F.transpose(X, (1, 1)), ms.ShapeError, r"transpose: axes \(1, 1\) are not a permutation"),
    (lambda: F.transpose(X, (0,)), ms.ShapeError, r"transpose: axes \(0,\) are not a permutation"),
    (lambda: F.transpose(X, (0.0, 1)), TypeError, "transpose: axes must be ints"),
    (lambda: F.reshape(X, (4, 2)), ms.ShapeError,
     r"reshape: cannot reshape an array of shape \(2, 3\) \(6 elements\) into shape \(4, 2\)"),
    (lambda: F.reshape(X, (-1, -1)), ms.ShapeError, r"into shape \(-1, -1\).*at most one -1"),
    (lambda: F.reshape(X, (-1, 4)), ms.ShapeError, r"into shape \(-1, 4\)"),
    (lambda: F.reshape(X, (3.0, 2)), TypeError,
     r"reshape: shape must be an int or a tuple of ints, got \(3\.0, 2\)"),
    (lambda: X.reshape(7), ms.ShapeError, r"into shape \(7,\)"),
]


@pytest.mark.parametrize("call, error, message", BAD)
def test_bad_axes_and_shapes_raise_memsave_errors_naming_them(call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    assert not isinstance(info.value, np.exceptions.AxisError)


@pytest.mark.parametrize("call, expected_shape", [
    (lambda: F.sum(X, axis=i64(1)), (2,)),
    (lambda: F.sum(X, axis=(i64(0), i64(1))), ()),
    (lambda: F.sum(X, axis=i64(0), keepdims=np.bool_(True)), (1, 3)),
    (lambda: F.mean(X, axis=i64(-1)), (2,)),
    (lambda: F.max(X, axis=i64(0)), (3,)),
    (lambda: F.min(X, axis=np.int32(1)), (2,)),
    (lambda: F.reshape(X, i64(6)), (6,)),
    (lambda: F.reshape(X, (i64(3), i64(-1))), (3, 2)),
    (lambda: F.transpose(X, (i64(1), i64(0))), (3, 2)),
    (lambda: F.broadcast_to(X, (i64(2), i64(2), i64(3))), (2, 2, 3)),
    (lambda: F.sum_to(X, (i64(1), i64(3))), (1, 3)),
    (lambda: F.concat([X, X], axis=i64(1)), (2, 6)),
    (lambda: F.split(X, i64(3), axis=i64(1))[0], (2, 1)),
    (lambda: F.split(X, [i64(1)], axis=np.int32(1))[1], (2, 2)),
    (lambda: F.stack([X, X], axis=i64(2)), (2, 3, 2)),
    (lambda: F.expand_dims(X, i64(0)), (1, 2, 3)),
    (lambda: F.squeeze(F.expand_dims(X, 1), i64(1)), (2, 3)),
    (lambda: F.get_item(X, i64(1)), (3,)),
    (lambda: X ** i64(2), (2, 3)),
])
def test_numpy_integers_are_accepted_where_an_int_is(call, expected_shape):
    assert call().shape == expected_shape


def test_numpy_integer_axes_give_the_same_gradient_as_python_ints():
    gy = np.random.default_rng(0).standard_normal(2)
    grads = []
    for axis in (1, i64(1), np.int8(-1)):
        x = ms.Variable(np.arange(6.0).reshape(2, 3))
        F.sum(F.sum(F.tanh(x), axis=axis) * gy).backward()
        grads.append(x.grad)
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_array_equal(grads[0], grads[2])
