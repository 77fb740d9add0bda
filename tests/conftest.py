"""Shared test settings: deterministic hypothesis runs sized for a 2-core CI machine."""
import importlib.util

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import memsave
from memsave import backend

settings.register_profile(
    "ci", max_examples=12, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state and default config."""
    memsave.random.seed(0)
    np.random.seed(0)
    yield


def _gpu_skip_reason() -> str | None:
    if backend.is_gpu_available():
        return None
    if importlib.util.find_spec("cupy") is None:
        return "needs cupy (pip install cupy-cuda12x) and a CUDA GPU"
    return "cupy is installed but sees no CUDA GPU"


_GPU_SKIP = _gpu_skip_reason()


@pytest.fixture(params=["numpy", pytest.param(
    "cupy", marks=pytest.mark.skipif(_GPU_SKIP is not None, reason=_GPU_SKIP or ""))])
def xp(request):
    """The array namespace a test runs on: numpy always, cupy where a GPU is present.

    Tests that take ``xp`` build their arrays with ``xp.asarray`` and so run the same
    code on both backends; ``benchmarks/gpu_suite.sh`` runs them on a GPU machine.
    """
    return backend.array_module("cpu" if request.param == "numpy" else "gpu")
