"""Array backend: NumPy on the CPU, CuPy on the GPU.

This is the only module that imports cupy, and only when asked to.  Every other
module picks its array namespace with :func:`get_array_module`.

>>> import numpy as np
>>> get_array_module(np.zeros(2)) is np
True
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy

_cupy: ModuleType | None = None
_cupy_checked = False


def _import_cupy() -> ModuleType | None:
    """cupy, or None when it is missing or sees no CUDA device.

    A cupy that imports but has no device (no driver, no GPU) counts as missing: its
    first call that touches the device would raise (``cupy.random.seed`` does).
    """
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            module = importlib.import_module("cupy")
            _cupy = module if module.cuda.runtime.getDeviceCount() > 0 else None
        except Exception:  # ImportError, or a CUDA driver/runtime error
            _cupy = None
    return _cupy


def _unwrap(x: Any) -> Any:
    return getattr(x, "array", x)


def _is_cupy_array(x: Any) -> bool:
    # Checked by module name so that a NumPy-only run never imports cupy.
    return type(x).__module__.startswith("cupy")


def get_array_module(*xs: Any) -> ModuleType:
    """Return ``cupy`` if any argument (array or Variable) lives on the GPU, else ``numpy``.

    >>> import numpy as np
    >>> get_array_module(np.ones(3), 2.0).__name__
    'numpy'
    """
    for x in xs:
        if type(x) is not numpy.ndarray and _is_cupy_array(_unwrap(x)):
            return _import_cupy()
    return numpy


def array_module(device: str) -> ModuleType:
    """The array namespace of a device: ``numpy`` for ``"cpu"``, ``cupy`` for ``"gpu"``.

    Raises ``RuntimeError`` for ``"gpu"`` when cupy or a CUDA device is missing.

    >>> array_module("cpu").__name__
    'numpy'
    """
    if device == "cpu":
        return numpy
    if device != "gpu":
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")
    if not is_gpu_available():
        raise RuntimeError("device 'gpu' needs cupy and a CUDA device; install the extra: "
                           "pip install 'memsave[gpu]' (or cupy-cuda12x / cupy-cuda13x)")
    return _import_cupy()


def is_array(x: Any) -> bool:
    """True for a NumPy or CuPy ndarray.

    >>> import numpy as np
    >>> is_array(np.zeros(1)), is_array([0.0])
    (True, False)
    """
    return isinstance(x, numpy.ndarray) or _is_cupy_array(x) and hasattr(x, "shape")


def is_gpu_available() -> bool:
    """True when cupy imports and sees at least one CUDA device.

    >>> isinstance(is_gpu_available(), bool)
    True
    """
    return _import_cupy() is not None


def asarray(x: Any, xp: ModuleType | None = None, dtype: Any = None) -> Any:
    """Convert ``x`` to an array of ``xp`` (default: the module ``x`` already belongs to).

    >>> asarray(1.5).dtype
    dtype('float64')
    """
    xp = xp or get_array_module(x)
    return xp.asarray(_unwrap(x), dtype=dtype)


def memory_owner(array: Any) -> Any:
    """The array that owns the memory of ``array``: itself, or the base of a view.

    >>> a = numpy.zeros(4)
    >>> memory_owner(a[1:].reshape(3, 1)) is a
    True
    """
    while is_array(getattr(array, "base", None)):
        array = array.base
    return array


def scatter_add(target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` in place, adding once per occurrence of a repeated index.

    >>> a = numpy.zeros(3); scatter_add(a, numpy.array([0, 0, 2]), numpy.ones(3)); a
    array([2., 0., 1.])
    """
    if _is_cupy_array(target):
        import cupyx

        cupyx.scatter_add(target, index, values)
    else:
        numpy.add.at(target, index, values)


def synchronize(x: Any) -> None:
    """Wait until the device has finished all queued work (a no-op for NumPy arrays).

    Needed before a library outside CuPy's stream order (MPI) reads a CuPy array.

    >>> synchronize(numpy.zeros(2))
    """
    if _is_cupy_array(_unwrap(x)):
        _import_cupy().cuda.get_current_stream().synchronize()


def to_cpu(x: Any) -> numpy.ndarray:
    """Copy an array (or Variable's array) to host memory as a NumPy array.

    >>> to_cpu(numpy.arange(3)).tolist()
    [0, 1, 2]
    """
    x = _unwrap(x)
    if _is_cupy_array(x):
        return x.get()
    return numpy.asarray(x)


def to_gpu(x: Any) -> Any:
    """Copy an array to the current CUDA device as a CuPy array.

    Raises ``RuntimeError`` when cupy or a GPU is missing.

    >>> if is_gpu_available():
    ...     to_gpu(numpy.ones(2)).shape
    ... else:
    ...     (2,)
    (2,)
    """
    if not is_gpu_available():
        raise RuntimeError(
            "to_gpu needs cupy and a CUDA device; install the extra: pip install 'memsave[gpu]'"
        )
    return _import_cupy().asarray(_unwrap(x))


class GpuMemoryTracker:
    """Live bytes allocated from CuPy's memory pool while active, with their peak.

    Counts pool allocations (what arrays hold), not what the pool caches.
    Used by :func:`memsave.memory.measure` with ``device="gpu"``.
    """

    def __init__(self) -> None:
        cupy = _import_cupy()
        if cupy is None:
            raise RuntimeError("GPU memory tracking needs cupy and a CUDA device: "
                               "pip install 'memsave[gpu]'")
        from cupy.cuda import memory_hook

        tracker = self

        class _Hook(memory_hook.MemoryHook):
            # CuPy refuses a second hook of the same name: one name per tracker lets
            # measure("gpu") blocks nest, as they do on the CPU.
            name = f"memsave_tracker_{id(tracker)}"

            def malloc_postprocess(self, device_id, size, mem_size, mem_ptr, pmem_id):
                tracker.current += mem_size
                tracker.peak = max(tracker.peak, tracker.current)

            def free_postprocess(self, device_id, mem_size, mem_ptr, pmem_id):
                tracker.current -= mem_size

        self.current = 0
        self.peak = 0
        self._hook = _Hook()
        self._cupy = cupy

    def __enter__(self) -> GpuMemoryTracker:
        self._cupy.cuda.Device().synchronize()
        self._hook.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cupy.cuda.Device().synchronize()
        self._hook.__exit__(*exc)
