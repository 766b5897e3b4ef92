"""Hypothesis profiles for the whole suite.

``ci`` (the default) keeps every property test quick; ``long`` digs deeper by
hand: ``python -m pytest tests --hypothesis-profile=long``. ``HYPOTHESIS_PROFILE``
picks one too. Tests that set ``max_examples`` themselves scale with the
profile through ``tests/conformance/conftest.py``'s ``examples()``.
"""

import os

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile("ci", max_examples=100, deadline=None, suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("long", max_examples=1500, deadline=None, suppress_health_check=_QUIET, print_blob=True)
settings.register_profile("dev", max_examples=20, deadline=None, suppress_health_check=_QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
