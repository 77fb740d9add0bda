"""Shared test settings: deterministic hypothesis runs sized for a 2-core CI machine."""
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import memsave

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
