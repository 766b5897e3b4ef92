"""benchmarks/import_gaps.py: the import lane's gaps in stored upload timelines, real and simulated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "import_gaps.py"
TIMELINE = ROOT / "docs" / "benchmarks" / "timeline-h100-2026-12-05-session22-handover-llama.json"

sys.path.insert(0, str(SCRIPT.parent))
from import_gaps import fidelity_request, lane_gaps  # noqa: E402


def _span(lane: str, op: str, start: float, end: float) -> dict:
    return {"lane": lane, "op": op, "start": start, "end": end}


def test_gaps_are_keyed_by_the_steps_around_them_and_by_a_copy_starting_in_them():
    spans = [_span("import/d0", "import", 0.0, 1.0), _span("copy/d0q0", "copy_imported", 1.05, 1.5),
             _span("import/d0", "unimport", 1.5, 1.7), _span("import/d0", "import", 1.8, 2.6),
             _span("import/d0", "unimport", 2.6, 2.7), _span("import/d0", "bind", 2.7, 2.7)]
    gaps, times = lane_gaps(spans)
    assert gaps["import>unimport+copy"] == [pytest.approx(0.5)]  # the copy began at 1.05, inside the gap
    assert gaps["unimport>import"] == [pytest.approx(0.1)]
    assert gaps["import>unimport"] == [0.0]  # back to back; the bind is not a lane step
    assert times == {"import": [1.0, pytest.approx(0.8)], "unimport": [pytest.approx(0.2), pytest.approx(0.1)]}


def test_only_the_fidelity_layouts_are_rebuilt():
    sys.path.insert(0, str(SCRIPT.parent))
    from fidelity_gpu import llama_like

    request = llama_like(1, False).request()
    total = sum(t.length for t in request.transfers)
    assert sum(t.length for t in fidelity_request(total).transfers) == total
    assert fidelity_request(total + 1) is None


def test_a_stored_timeline_prints_real_and_simulated_gaps(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(TIMELINE), "--platform",
                          str(ROOT / "models" / "platforms" / "h100-pcie5.toml")],
                         capture_output=True, text=True, check=True).stdout
    runs = json.loads(TIMELINE.read_text())
    assert out.count("  real ") == len(runs) and out.count("  sim ") == len(runs)  # its file is the fidelity file's
    assert "import>unimport" in out and "unimport>import" in out
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{**runs[0], "bytes": runs[0]["bytes"] + 1}]))
    out = subprocess.run([sys.executable, str(SCRIPT), str(other), "--platform",
                          str(ROOT / "models" / "platforms" / "h100-pcie5.toml")],
                         capture_output=True, text=True, check=True).stdout
    assert "  real " in out and "  sim " not in out  # not a layout it can rebuild: real only


def test_a_file_that_is_not_a_timeline_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    run = subprocess.run([sys.executable, str(SCRIPT), str(bad)], capture_output=True, text=True)
    assert run.returncode != 0 and "bad.json" in run.stderr
    bad.write_text(json.dumps({"rows": []}))  # JSON, but a fidelity run's, not a timeline
    run = subprocess.run([sys.executable, str(SCRIPT), str(bad)], capture_output=True, text=True)
    assert run.returncode != 0 and "bad.json: not an upload_timeline.py --json file" in run.stderr


def test_probes_of_stored_runs_show_the_lanes_gaps_measured_and_simulated(tmp_path):
    from halsim.calibrate import Config, SimTarget, measure
    from halsim.platform import load_platform

    run = ROOT / "docs" / "benchmarks" / "fidelity-h100-2026-12-05-session22-run1.raw.json"
    before = ROOT / "docs" / "benchmarks" / "fidelity-h100-2026-12-05-session20-run1.raw.json"
    out = subprocess.run([sys.executable, str(SCRIPT), "--probes", str(run), str(before)],
                         capture_output=True, text=True, check=True).stdout
    assert "register_in_upload 64MiB " in out and "simulated: gap" in out  # its fitted platform lies beside it
    assert "no import-upload probe with its gaps in this run" in out  # recorded only since 2026-12-05
    # A calibration of today's probes holds both layouts; with no fitted platform, measured only.
    measured = measure(SimTarget.of(load_platform("h100-pcie5")), Config.quick())
    fresh = tmp_path / "fresh.raw.json"
    fresh.write_text(json.dumps({"calibration": {"measurements": measured.to_dict()}}))
    out = subprocess.run([sys.executable, str(SCRIPT), "--probes", str(fresh)],
                         capture_output=True, text=True, check=True).stdout
    lines = [line for line in out.splitlines() if "register_in_upload" in line]
    assert len(lines) == 2 and "x4 tensors" in lines[1] and "simulated" not in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([]))
    failed = subprocess.run([sys.executable, str(SCRIPT), "--probes", str(bad)], capture_output=True, text=True)
    assert failed.returncode != 0 and "bad.json: not a fidelity run with its calibration" in failed.stderr
