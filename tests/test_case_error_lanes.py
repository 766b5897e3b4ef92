"""benchmarks/case_error_lanes.py: where a case's error lies, lane by lane."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "case_error_lanes.py"
RUN = ROOT / "docs" / "benchmarks" / "fidelity-h100-2026-12-05-session21-run1.raw.json"

sys.path.insert(0, str(SCRIPT.parent))
from case_error_lanes import error_lanes, parts  # noqa: E402


def _lane(lane: str, op: str, busy: float) -> dict:
    return {"lane": lane, "op": op, "steps": 1, "busy": busy, "summed": busy}


def test_lanes_of_a_kind_add_up_and_the_import_lane_keeps_its_idle_time():
    rows = [_lane("alloc/d0", "alloc", 0.004), _lane("import/d0", "import", 0.12), _lane("import/d0", "unimport", 0.05),
            _lane("copy/d0q0", "copy_imported", 0.07), _lane("copy/d0q1", "copy_imported", 0.06)]
    got = parts(0.2, rows)
    assert got["copy copy_imported"] == pytest.approx(0.13)  # both queues' busy time
    assert got["time"] == 0.2 and got["import idle"] == pytest.approx(0.2 - 0.004 - 0.12 - 0.05)
    assert "import idle" not in parts(0.2, [_lane("read/0", "read", 0.1)])  # a ring has no import lane


def test_a_stored_run_splits_its_error_and_each_part_is_real_less_simulated():
    from halsim.compare import lane_rows, predict
    from halsim.platform import load_platform

    sys.path.insert(0, str(SCRIPT.parent))
    from fidelity_replay import layout_of, stored_case

    fitted = json.loads(RUN.with_name(RUN.name.replace(".raw.json", ".fitted.json")).read_text())
    row = next(r for r in fitted["comparison"]["rows"] if r["case"] == "import")
    got = error_lanes(RUN, "import")
    assert got["time"] == pytest.approx(row["measured_seconds"] - row["predicted_seconds"], abs=1e-9)
    # Each kind's part straight from the stored real lanes and a fresh simulation of the case.
    stored = json.loads(RUN.read_text())["comparison"]
    raw = next(r for r in stored["rows"] if r["case"] == "import")
    real = sum(r["busy"] for r in raw["lanes"]["measured"] if r["op"] == "unimport")
    platform = load_platform(RUN.with_name(RUN.name.replace(".raw.json", ".fitted.toml")))
    report = predict(layout_of(stored["file_bytes"]).request(), platform, [stored_case(raw)])[0]
    simulated = sum(r["busy"] for r in lane_rows(report) if r["op"] == "unimport")
    assert got["import unimport"] == pytest.approx(real - simulated, abs=1e-9) and got["import unimport"] != 0
    assert {"import import", "import idle", "copy copy_imported", "alloc alloc"} <= got.keys()
    assert error_lanes(RUN, "streaming:chunk=3MiB") is None


def test_the_command_prints_each_run_and_the_mean_and_refuses_what_is_no_run(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(RUN), "--case", "import"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "import: real minus simulated, ms" in done.stdout and "mean over 1" in done.stdout
    assert "import idle" in done.stdout
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"rows": []}))
    done = subprocess.run([sys.executable, str(SCRIPT), str(stray), "--case", "import"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and f"{stray}: no comparison in it" in done.stderr
    # A case no run has is reported, and the cases after it are still printed.
    done = subprocess.run([sys.executable, str(SCRIPT), str(RUN), "--case", "no-such-case", "--case", "import"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "no run has it" in done.stdout and "import: real minus simulated" in done.stdout
