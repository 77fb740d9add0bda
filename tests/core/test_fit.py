"""sum_to / broadcast_to (memsave/core/fit.py): the shape checks the engine relies on."""
import numpy as np
import pytest

import memsave as ms
from memsave.core.fit import broadcast_to, sum_to


@pytest.mark.parametrize("shape, target", [((3,), (1,)), ((1, 3), (3,)), ((2,), (3,)),
                                           ((2, 3), (3, 3))])
def test_broadcast_to_rejects_shapes_it_cannot_reach(shape, target):
    # (3,) -> (1,) and (1, 3) -> (3,) are broadcast-compatible pairs, but neither reaches the
    # target: a ShapeError naming both, not NumPy's ValueError from inside forward.
    with pytest.raises(ms.ShapeError, match=rf"cannot broadcast shape {shape} to shape "
                                            rf"{target}".replace("(", r"\(").replace(")", r"\)")):
        broadcast_to(ms.Variable(np.ones(shape)), target)


def test_sum_to_over_leading_axes_only_and_with_kept_axes():
    x = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(sum_to(ms.Variable(x), (4,)).array, x.sum(axis=(0, 1)))
    np.testing.assert_array_equal(sum_to(ms.Variable(x), (3, 1)).array,
                                  x.sum(axis=(0, 2), keepdims=True)[0])
    np.testing.assert_array_equal(sum_to(ms.Variable(x), (1, 3, 4)).array,
                                  x.sum(axis=0, keepdims=True))


@pytest.mark.parametrize("target", [(4,), (3, 1), (1, 1, 4)])
def test_sum_to_gradients_first_and_second(target):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    ms.gradcheck(lambda a: sum_to(a, target) ** 2, [x])
    ms.gradgradcheck(lambda a: sum_to(a, target) ** 2, [x])
