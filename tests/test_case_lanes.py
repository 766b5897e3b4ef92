"""benchmarks/case_lanes.py: two cases of stored fidelity runs, lane by lane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "case_lanes.py"
RUN = ROOT / "docs" / "benchmarks" / "fidelity-h200-2026-12-05-session17-run3.raw.json"
ONE_QUEUE, TWO_QUEUES = "streaming:chunk=16MiB,slots=8,readers=8", "streaming:chunk=16MiB,slots=8,readers=8,queues=2"

sys.path.insert(0, str(SCRIPT.parent))
from case_lanes import compare_run, kinds, ratios  # noqa: E402


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def _lane(lane: str, op: str, steps: int, summed: float) -> dict:
    return {"lane": lane, "op": op, "steps": steps, "busy": summed, "summed": summed}


def test_lanes_of_a_kind_are_added_up_and_compared_per_step():
    one = kinds([_lane("read", "read", 10, 1.0), _lane("copy/d0q0", "copy", 10, 0.5)])
    two = kinds([_lane("read", "read", 10, 0.9), _lane("copy/d0q0", "copy", 5, 0.4), _lane("copy/d0q1", "copy", 5, 0.4)])
    assert two[("copy", "copy")] == (10, pytest.approx(0.8))
    got = ratios((2.0, one), (1.8, two))
    assert got == {"time": pytest.approx(0.9), "read read per step": pytest.approx(0.9),
                   "copy copy per step": pytest.approx(1.6)}
    fewer = ratios((2.0, one), (2.0, kinds([_lane("read", "read", 5, 1.0)])))
    assert fewer["read read per step"] == pytest.approx(2.0) and fewer["read read steps"] == pytest.approx(0.5)


def test_a_stored_run_gives_real_ratios_from_its_lanes_and_simulated_ones_from_its_fitted_platform():
    real, simulated = compare_run(RUN, ONE_QUEUE, TWO_QUEUES)
    rows = {r["case"]: r for r in json.loads(RUN.read_text())["comparison"]["rows"] +
            json.loads(RUN.read_text())["extra"]["rows"]}
    want = kinds(rows[TWO_QUEUES]["lanes"]["measured"])[("copy", "copy")]
    have = kinds(rows[ONE_QUEUE]["lanes"]["measured"])[("copy", "copy")]
    assert real["copy copy per step"] == pytest.approx((want[1] / want[0]) / (have[1] / have[0]))
    assert simulated is not None and simulated["time"] > 0 and "read read per step" in simulated
    assert simulated != real
    assert compare_run(RUN, ONE_QUEUE, "streaming:chunk=3MiB") is None  # no such case


def test_the_command_prints_both_sides_and_refuses_what_is_no_run(tmp_path):
    done = _run(str(RUN), "--case", ONE_QUEUE, "--case", TWO_QUEUES)
    assert done.returncode == 0, done.stderr[-2000:]
    row = next(line for line in done.stdout.splitlines() if line.startswith("copy copy per step"))
    assert len(row.split()) == 8  # name (4 words), real mean and range, simulated mean and range
    assert _run(str(RUN), "--case", ONE_QUEUE).returncode != 0  # one case is no comparison
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"rows": []}))
    done = _run(str(stray), "--case", ONE_QUEUE, "--case", TWO_QUEUES)
    assert done.returncode != 0 and f"{stray}: no comparison in it" in done.stderr
