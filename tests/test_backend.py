"""NumPy/CuPy selection and conversions (memsave/backend.py). GPU behaviour: tests/test_gpu.py."""
import sys

import numpy as np
import pytest

from memsave import Variable, backend


def test_get_array_module_is_numpy_for_cpu_values():
    assert backend.get_array_module(np.ones(2)) is np
    assert backend.get_array_module(Variable(np.ones(2))) is np
    assert backend.get_array_module(2.0, 3, None) is np
    assert backend.get_array_module() is np
    assert backend.get_array_module(np.float32(1.0), [1, 2]) is np


def test_numpy_only_use_never_imports_cupy():
    had_cupy = "cupy" in sys.modules
    backend.get_array_module(np.ones(1), Variable(np.ones(1)))
    backend.to_cpu(np.ones(1))
    assert ("cupy" in sys.modules) == had_cupy


@pytest.mark.parametrize("value, expected", [
    (np.zeros(3), True), (np.zeros(()), True), (np.arange(2)[::2], True),
    ([1.0], False), (1.0, False), (np.float64(1.0), False), (None, False),
    (Variable(np.zeros(1)), False),
])
def test_is_array(value, expected):
    assert backend.is_array(value) is expected


def test_asarray():
    a = backend.asarray(1.5)
    assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a.shape == ()
    b = backend.asarray([1, 2], dtype=np.float32)
    assert b.dtype == np.float32 and b.tolist() == [1.0, 2.0]
    src = np.ones(3)
    assert backend.asarray(src) is src  # no copy when nothing changes
    v = Variable(np.arange(3.0))
    assert backend.asarray(v) is v.array  # a Variable is unwrapped
    assert backend.asarray([1.0], xp=np).dtype == np.float64


def test_to_cpu():
    a = np.arange(4.0)
    assert backend.to_cpu(a) is a
    v = Variable(a)
    out = backend.to_cpu(v)
    assert isinstance(out, np.ndarray) and out is a
    assert backend.to_cpu([1, 2]).tolist() == [1, 2]


def test_is_gpu_available_is_a_bool():
    assert isinstance(backend.is_gpu_available(), bool)


@pytest.mark.skipif(backend.is_gpu_available(), reason="a GPU is available: see tests/test_gpu.py")
def test_to_gpu_without_gpu_raises_with_install_hint():
    with pytest.raises(RuntimeError, match=r"pip install 'memsave\[gpu\]'"):
        backend.to_gpu(np.ones(2))
    with pytest.raises(RuntimeError, match="cupy"):
        backend.to_gpu(Variable(np.ones(2)))
