"""Fixtures of the simulator tests (helpers live in sim_helpers.py)."""

import pytest

from sim_helpers import toy_platform


@pytest.fixture
def toy():
    return toy_platform()
