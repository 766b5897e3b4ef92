"""benchmarks/noise_floor.py: how well a perfect model could score against a run's real runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "noise_floor.py"
RAW = ROOT / "docs" / "benchmarks" / "fidelity-h100-2026-12-05-session20-run1.raw.json"

sys.path.insert(0, str(SCRIPT.parent))
from noise_floor import floor, model_scores, real_runs  # noqa: E402


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_each_run_names_its_noisiest_case_and_a_run_of_single_runs_has_no_floor():
    got = floor({**{f"case{k}": [1.0, 1.01, 0.99] for k in range(15)}, "wild": [1.0, 1.3, 0.75]}, 2000, 0)
    assert got["noisiest"] == "wild" and got["rounds"] == 3 and got["worst"] > got["median"] > 0
    alone = floor({"a": [1.0], "b": [2.0]}, 500, 0)
    assert alone["worst"] == 0.0 and "one real run" in alone["noisiest"]


def test_a_raw_run_is_scored_by_the_fit_beside_it_and_unfitted_without_one(tmp_path):
    run = json.loads(RAW.read_text())
    cases = real_runs(run, RAW)
    assert len(cases) == 16 and all(len(times) == 5 for times in cases.values())
    assert any(label.endswith(" (cold)") for label in cases)
    fitted = json.loads(RAW.with_name(RAW.name.replace(".raw.json", ".fitted.json")).read_text())["comparison"]
    assert model_scores(RAW, run) == (fitted["median_abs_error"], fitted["worst_abs_error"], fitted["same_order"])
    alone = tmp_path / RAW.name
    shutil.copy(RAW, alone)
    assert model_scores(alone, run) is None
    done = _run(str(alone), "--replicates", "500")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not fitted" in done.stdout and alone.name in done.stdout


def test_the_command_prints_each_run_and_the_mean_and_refuses_what_is_no_run(tmp_path):
    done = _run(str(RAW), str(RAW), "--replicates", "500", "--pairs", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "a perfect model would expect" in done.stdout and "the model, over the 2 fitted" in done.stdout
    assert "in the hardware's order in" in done.stdout and "rank in the same order" in done.stdout
    assert done.stdout.count("of draws: ") == 4  # two pairs under each run
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"comparison": {"rows": []}}))
    refused = _run(str(empty))
    assert refused.returncode != 0 and "empty.json" in refused.stderr and "no comparison rows" in refused.stderr
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"comparison": {"rows": [{"case": "import", "measured_runs": [0.1, -1]}]}}))
    refused = _run(str(broken))
    assert refused.returncode != 0 and "broken.json" in refused.stderr and "'import'" in refused.stderr
    assert _run(str(RAW), "--replicates", "5").returncode != 0
    assert _run(str(RAW), "--rounds", "0").returncode != 0
    assert _run(str(RAW), "--pairs", "-1").returncode != 0
    with pytest.raises(SystemExit):
        real_runs({"comparison": {}}, empty)


def test_more_rounds_a_case_report_as_that_many_and_a_lower_floor():
    cases = real_runs(json.loads(RAW.read_text()), RAW)
    as_run, ten = floor(cases, 1000, 0), floor(cases, 1000, 0, rounds=10)
    assert as_run["rounds"] == 5 and ten["rounds"] == 10
    assert ten["median"] < as_run["median"] and ten["worst"] < as_run["worst"]
