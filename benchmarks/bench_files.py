"""Shared by the upload benchmarks: the test file and the plain-read baseline.

Imported as ``bench_files`` by scripts run as ``python benchmarks/NAME.py``
(their folder is first on ``sys.path``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import halsim


def make_file(path: Path, size: int) -> None:
    """A safetensors file of 64 MiB F16 tensors (at least one) with non-zero bytes."""
    tensor = 64 << 20
    specs = [(f"layer.{i}.weight", "F16", (tensor // 2,)) for i in range(max(1, size // tensor))]
    block = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8)

    def fill(name, piece):
        view = np.frombuffer(piece, np.uint8)
        for at in range(0, len(view), len(block)):
            n = min(len(block), len(view) - at)
            view[at : at + n] = block[:n]

    halsim.formats.write_safetensors_layout(path, specs, fill=fill)


def readinto_seconds(path: Path, out: np.ndarray, offset: int) -> float:
    """Read ``len(out)`` bytes from ``offset`` with plain ``readinto``: the baseline."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        view = memoryview(out)
        done = 0
        while done < len(view):
            done += f.readinto(view[done:])
    return time.perf_counter() - start
