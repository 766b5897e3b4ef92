"""benchmarks/fidelity_replay.py: the tool every fidelity claim in docs/ is measured with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPLAY = ROOT / "benchmarks" / "fidelity_replay.py"
STORED_CPU_RUN = ROOT / "docs" / "benchmarks" / "fidelity-cpu-2026-12-05-session16.raw.json"

sys.path.insert(0, str(REPLAY.parent))
from fidelity_replay import print_overall  # noqa: E402


def test_a_stored_run_refits_and_writes_its_files_beside_it(tmp_path):
    # One CPU run's fit: about 45 s on a 2-vCPU VM.
    raw = tmp_path / STORED_CPU_RUN.name
    shutil.copy(STORED_CPU_RUN, raw)
    before = raw.read_bytes()
    done = subprocess.run([sys.executable, str(REPLAY), "--jobs", "1", "--write", str(tmp_path), str(raw)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-3000:]
    stem = raw.name.removesuffix(".raw.json") + ".fitted"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [raw.name] + [f"{stem}.{ext}" for ext in ("json", "md", "toml")])
    assert raw.read_bytes() == before  # the raw run is never overwritten
    fitted = json.loads((tmp_path / f"{stem}.json").read_text())["comparison"]
    errors = sorted(abs(r["error"]) for r in fitted["rows"])
    assert fitted["worst_abs_error"] == errors[-1]
    line = next(line for line in done.stdout.splitlines() if line.startswith(raw.name))
    # The printed "now" columns are the written comparison's.
    assert f"{fitted['median_abs_error']:.1%}" in line.split()[2] and f"{errors[-1]:.1%}" in line.split()[4]
    assert "over " not in done.stdout  # one run: no summary over runs


def _summary(median, worst, tau, cases):
    return {"now": {"median": median, "worst": worst, "tau": tau}, "cases": cases}


def test_the_summary_over_runs_gives_each_case_its_bias_and_scatter(capsys):
    runs = [_summary(0.04, 0.12, 0.9, [("a", +0.10, False), ("b", -0.02, False), ("x", -0.20, True)]),
            _summary(0.06, 0.20, 0.8, [("a", +0.20, False), ("b", +0.04, False)])]
    print_overall(runs)
    out = capsys.readouterr().out
    assert "over 2 runs" in out and "mean median |error| 5.00%" in out and "mean worst 16.00%" in out
    assert "mean tau-b 0.850" in out and "1 meet both targets" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert rows["a"] == ["2", "+15.0%", "15.0%", "1"]  # mean +15 %; one run over 15 %
    assert rows["b"] == ["2", "+1.0%", "3.0%", "0"]
    assert rows["x"] == ["(extra)", "1", "-20.0%", "20.0%", "1"]
    assert out.splitlines()[-1].startswith("x (extra)")  # extras after the scored cases
