"""Hypothesis profiles of the property suite, chosen with HYPOTHESIS_PROFILE (default ``ci``).

``ci``: derandomized, sized for the 2-core CI machine (at least 2,000 examples in all);
``soak``: ten times as many, freshly random on every run (run it before a release).
The profiles are registered as ``property-ci`` and ``property-soak``: the rest of the
suite keeps its own ``ci`` profile (tests/conftest.py).  Each test takes a share of
the profile's ``max_examples`` with :func:`tests.property._programs.examples`.
"""
from hypothesis import HealthCheck, settings

_COMMON = {"deadline": None, "database": None, "print_blob": True,
           "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much]}
settings.register_profile("property-ci", max_examples=260, derandomize=True, **_COMMON)
settings.register_profile("property-soak", max_examples=2600, derandomize=False, **_COMMON)
