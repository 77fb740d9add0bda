"""Saved arrays written in place before backward raise InPlaceError (memsave/core/saved.py)."""
import numpy as np
import pytest

import memsave as ms
import memsave.functions as F
from memsave.errors import InPlaceError


def test_plain_mode_in_place_write_of_a_saved_input_raises_naming_op_and_shape():
    x = ms.Variable(np.array([1.0, 2.0, 3.0]))
    y = F.tanh(F.tanh(x)) * x          # Mul saves x
    x.array[...] = 5.0
    with pytest.raises(InPlaceError, match=r"Mul: input \d \(shape \(3,\), float64\)"):
        y.sum().backward()


def test_plain_mode_in_place_write_of_a_saved_output_raises():
    x = ms.Variable(np.array([0.5, -0.5]))
    y = F.tanh(x)                      # Tanh saves its output
    y.array *= 2
    with pytest.raises(InPlaceError, match=r"Tanh: output 0 \(shape \(2,\)"):
        y.sum().backward()


def test_checkpoint_input_written_in_place_raises_instead_of_a_wrong_gradient():
    # The case: the true gradient at the forward values is [0.889 0.809 0.772];
    # without the check backward returned [0.762 0.762 0.762].
    x = ms.Variable(np.array([1.0, 2.0, 3.0]))
    y = ms.checkpoint(lambda v: F.tanh(F.tanh(v)) * v, x)
    x.array[...] = 5.0
    with pytest.raises(InPlaceError, match=r"checkpoint\(.*<lambda>\): its argument 0 \(shape \(3,\)"):
        y.sum().backward()


def test_checkpoint_of_an_intermediate_input_written_in_place_raises():
    x = ms.Variable(np.linspace(-1, 1, 6))
    h = x * 2
    y = ms.checkpoint(lambda v: F.tanh(F.tanh(v)) * v, h)
    h.array[0] = 7.0
    with pytest.raises(InPlaceError):
        y.sum().backward()


def test_parameter_updated_before_backward_raises_and_after_backward_is_fine():
    W = ms.Parameter(np.eye(3))
    x = ms.Variable(np.ones((2, 3)))
    loss = F.tanh(x @ W).sum()
    W.array -= 0.1                      # an optimizer step before backward
    with pytest.raises(InPlaceError, match="MatMul"):
        loss.backward()
    loss = F.tanh(x @ W).sum()
    loss.backward()
    W.array -= 0.1 * W.grad             # after backward: the graph is released, nothing to check
    F.tanh(x @ W).sum().backward()


def test_unmodified_arrays_and_copies_pass():
    x = ms.Variable(np.array([1.0, 2.0, 3.0]))
    y = ms.checkpoint(lambda v: F.tanh(F.tanh(v)) * v, x)
    x.array = x.array.copy()            # rebinding is not an in-place write
    x.array[...] = 5.0
    y.sum().backward()
    t = np.tanh(np.tanh([1.0, 2.0, 3.0]))
    expected = (1 - t**2) * (1 - np.tanh([1.0, 2.0, 3.0])**2) * [1.0, 2.0, 3.0] + t
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)


def test_captured_array_written_in_place_before_recomputation_raises():
    # A leaf read from a closure (not an argument) and saved by no op: only the
    # recomputation reads it again, so the checkpoint must notice the write itself.
    captured = ms.Variable(np.array(0.3))

    def block(v):
        return F.exp(-captured + v) * 2.0

    y = ms.checkpoint(block, ms.Variable(np.array(1.0)))
    captured.array[...] = 0.9
    with pytest.raises(InPlaceError, match="besides its arguments"):
        y.backward()


def test_parameter_updated_between_checkpoint_forward_and_backward_raises():
    W = ms.Parameter(np.eye(2))
    y = ms.checkpoint(lambda v: F.tanh(F.tanh(v @ W)), ms.Variable(np.ones((1, 2))))
    W.array -= 0.5
    with pytest.raises(InPlaceError):
        y.sum().backward()
