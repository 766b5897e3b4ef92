"""Fixtures of the conformance suite: the device under test and a scratch folder."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import settings

from .devices import DEVICES, require


def examples(n: int) -> int:
    """``n`` examples under the ``ci`` profile, scaled with the profile in use."""
    return max(1, n * settings.default.max_examples // 100)


@pytest.fixture(scope="session", params=DEVICES)
def device_spec(request) -> str:
    """The name of a device to run on (``cpu``, ``sim:h100-pcie5``...); skips where unavailable."""
    require(request.param)
    return request.param


class Scratch:
    """Unique file names in one folder, for tests that make a file per example."""

    def __init__(self, root):
        self.root = str(root)
        self._count = itertools.count()

    def path(self, suffix: str = ".bin") -> str:
        return os.path.join(self.root, f"f{next(self._count)}{suffix}")


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Scratch:
    return Scratch(tmp_path_factory.mktemp("conformance"))
