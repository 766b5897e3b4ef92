"""The atheris fuzz target for the format parsers (benchmarks/fuzz_formats.py), briefly.

Run by hand for longer: ``python benchmarks/fuzz_formats.py -max_total_time=600``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

TARGET = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_formats.py"


def _target():
    spec = importlib.util.spec_from_file_location("fuzz_formats", TARGET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seeds_index_cleanly():
    target = _target()
    for seed in target.seeds():
        target.check_one(seed)


def test_random_mutations():
    """The target on random mutations of the seeds (no atheris needed)."""
    assert _target().plain(1500, seed=int(os.environ.get("HALSIM_FUZZ_SEED", "0"))) == 1500


def test_coverage_guided_briefly(tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    run = subprocess.run([sys.executable, str(TARGET), "-atheris_runs=5000", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 5000" in run.stderr
