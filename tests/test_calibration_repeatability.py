"""benchmarks/calibration_repeatability.py: how far calibrations of one machine agree."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from halsim.calibrate import Config, calibrate
from halsim.platform import load_platform
from halsim.sim import Simulator

MIB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "calibration_repeatability.py"

sys.path.insert(0, str(SCRIPT.parent))
from calibration_repeatability import (Cases, Parameter, across, across_runs, cross_errors, load,  # noqa: E402
                                       measured_values, moves, perturbed, print_cross, read_json,
                                       sensitivity)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--jobs", "1", *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "COLUMNS": "200"})


def _row(stdout: str, name: str) -> list[str]:
    return next(line for line in stdout.splitlines() if line.startswith(name + " ")).split()


def test_spread_and_step():
    p = Parameter("link.h2d", (50.0, 55.0, 45.0))
    assert p.spread == pytest.approx(0.1)  # half of 10 over 50
    assert p.step == pytest.approx((0.1 + 10 / 55) / 2)  # 50 -> 55, 55 -> 45
    assert Parameter("host.thread_contention", (0.0, 0.0, 0.02)).spread == math.inf
    assert Parameter("host.thread_contention", (0.0, 0.0, 0.02)).step == math.inf  # the median of 0 and inf
    assert Parameter("host.thread_contention", (0.0, 0.0)).spread == 0.0 == Parameter("x", (0.0, 0.0)).step
    # Only what two or more calibrations measured, in the order they name it.
    table = across([{"a": 1.0, "b": 2.0}, {"b": 3.0}, {"a": 1.5, "c": 4.0}])
    assert [(p.path, p.values) for p in table] == [("a", (1.0, 1.5)), ("b", (2.0, 3.0))]


def test_across_runs_steps_only_between_calibrations_of_different_files():
    # Rounds 1 and 2 of run a, round 1 of run b: a's rounds may share pooled samples, so they are no pair.
    assert across_runs(["a", "a", "b"]) == ((0, 2), (1, 2))
    assert across_runs(["a", "a"]) == ()
    p = Parameter("link.h2d", (50.0, 51.0, 40.0), across_runs(["a", "a", "b"]))
    assert p.step == pytest.approx((10 / 50 + 11 / 51) / 2)  # never the 2 % from 50 to 51
    # A calibration without the parameter drops out of its pairs, and the others keep theirs.
    table = across([{"a": 1.0}, {"b": 2.0}, {"a": 2.0, "b": 3.0}], across_runs(["x", "x", "y"]))
    assert [(t.path, t.values, t.step) for t in table] == [("a", (1.0, 2.0), 1.0), ("b", (2.0, 3.0), 0.5)]


def test_three_calibrations_of_two_machines_are_told_apart(tmp_path):
    # Two calibrations of one simulated machine agree exactly (the simulator is deterministic);
    # a third, of the same machine with a link 20 % faster, moves that parameter alone.
    base = load_platform("h100-pcie5")
    faster = base.model_copy(update={"links": (base.links[0].model_copy(update={"h2d": base.links[0].h2d * 1.2}),)})
    paths = []
    for k, platform in enumerate((base, base, faster)):
        result = calibrate(Simulator(platform).device(0), Config.quick())
        paths.append(tmp_path / f"cal{k}.json")
        paths[-1].write_text(json.dumps(result.to_dict()))
    assert measured_values(result.to_dict())["link.h2d"] == pytest.approx(base.links[0].h2d * 1.2, rel=0.02)
    done = _run(*map(str, paths), "--workload", "test-small", "--policy", "streaming:chunk=64KiB,slots=4",
                "--sensitivity")
    assert done.returncode == 0, done.stderr[-3000:]
    h2d = _row(done.stdout, "link.h2d")
    assert h2d[1] == "3" and float(h2d[5].rstrip("%")) == pytest.approx(100 * 0.2 / 2, abs=1.0)  # the fit: within 2 %
    assert h2d[-1] == "over"
    assert _row(done.stdout, "link.d2h")[5] == "0.0%"
    assert "streaming:chunk=64KiB,slots=4" in done.stdout  # its prediction on each calibration's platform
    # Only the link moved, by a median step of 10 % (0 %, then 20 %): the one row of the sensitivity table.
    moved = done.stdout.split("parameter moved by its step")[1].split("\n\n")[0].splitlines()[1:]
    assert [line.split()[0] for line in moved] == ["link.h2d"]


def test_stored_gpu_runs_give_their_cases_predictions_and_how_they_follow_the_real_times():
    # Three fidelity runs of the H200, minutes apart; their fits are stored: nothing is fitted here.
    runs = sorted((ROOT / "docs" / "benchmarks").glob("fidelity-h200-2026-12-05-session17-run?.fitted.json"))
    assert len(runs) == 3
    done = _run(*map(str, runs))
    assert done.returncode == 0, done.stderr[-3000:]
    stored = json.loads(runs[0].read_text())
    for row in stored["comparison"]["rows"]:
        assert row["case"] + " " in done.stdout
    import_row = _row(done.stdout, "import")
    assert import_row[1] == "3"
    assert any(float(v) == pytest.approx(stored["comparison"]["rows"][8]["predicted_seconds"], rel=1e-3)
               for v in import_row[2:5])  # run 1's own prediction: the median, min or max of the three
    assert "the moves correlate at" in done.stdout


def test_moves_pair_each_case_s_change_in_prediction_with_its_change_in_reality():
    predicted = [{"a": 1.0, "b": 2.0}, {"a": 1.1, "b": 2.0}, {"a": 1.1}]
    real = [{"a": 1.0, "b": 1.0}, {"a": 1.2, "b": 0.5}, {"a": 1.2}]
    dp, dr = moves(predicted, real)
    assert sorted(zip(dp, dr)) == pytest.approx(sorted([(math.log(1.1), math.log(1.2)), (0.0, math.log(0.5)),
                                                        (0.0, 0.0)]))
    dp, dr = moves(predicted, real, ((0, 2),))  # the first against the third only
    assert (dp, dr) == (pytest.approx([math.log(1.1)]), pytest.approx([math.log(1.2)]))


def test_cross_errors_score_every_calibration_against_every_run():
    predicted = [{"a": 1.0, "b": 2.0}, {"a": 1.2, "b": 2.0}]
    real = [{"a": 1.0, "b": 2.5}, {"a": 1.5, "c": 9.0}]
    table = cross_errors(predicted, real)
    assert table[0][0] == pytest.approx((0.0 + 0.2) / 2)  # its own run: a exact, b 20 % under
    assert table[1][0] == pytest.approx((0.2 + 0.2) / 2)
    assert table[0][1] == pytest.approx(1 / 3) and table[1][1] == pytest.approx(0.2)  # only a is in both
    assert math.isnan(cross_errors([{"x": 1.0}], [{"y": 1.0}])[0][0])


def test_cross_tells_a_round_s_own_calibration_from_its_run_s_other_rounds_and_other_runs(capsys):
    table = [[0.01, 0.02, 0.05], [0.04, 0.03, 0.07], [0.08, 0.08, 0.06]]  # rounds 1, 2 of run a; run b
    print_cross(["a 1", "a 2", "b 1"], table, ["a", "a", "b"])
    said = capsys.readouterr().out
    assert "own calibration: mean 3.3%" in said  # (1 + 3 + 6) / 3
    assert "another round of the same run: 3.0% over 2 pairs" in said  # (2 + 4) / 2
    assert "another run: 7.0% over 4 pairs" in said  # (5 + 7 + 8 + 8) / 4


def test_cross_on_stored_runs_compares_each_run_s_own_calibration_with_the_others():
    runs = sorted((ROOT / "docs" / "benchmarks").glob("fidelity-h200-2026-12-05-session17-run?.fitted.json"))
    done = _run("--cross", *map(str, runs))
    assert done.returncode == 0, done.stderr[-3000:]
    stored = [json.loads(r.read_text())["comparison"] for r in runs]
    own = [statistics.median(abs(row["predicted_seconds"] / statistics.median(row["measured_runs"]) - 1)
                             for row in comparison["rows"]) for comparison in stored]
    matrix = done.stdout.split("against a run's real times (column)")[1].splitlines()[2:5]
    # The diagonal is each run's own score (with its --extra cases, so near the stored median, not equal).
    for k, line in enumerate(matrix):
        assert float(line.split()[1 + k].rstrip("%")) == pytest.approx(100 * own[k], abs=2.0)
    assert "a run's own calibration: mean" in done.stdout and "another run: " in done.stdout
    assert "over 6 pairs" in done.stdout and "same run" not in done.stdout  # no rounds: no run twice
    done = _run("--cross", "--workload", "test-small", "--policy", "import", *map(str, runs))
    assert done.returncode != 0 and "--cross needs fidelity_gpu.py runs" in done.stderr


def test_a_parameter_is_moved_with_the_curve_that_stands_for_it():
    base = load_platform("h100-pcie5")
    faster = perturbed(base, "link.h2d", 1.1)
    assert faster.links[0].h2d == pytest.approx(base.links[0].h2d * 1.1) and faster.links[0].d2h == base.links[0].d2h
    curves = {"page_cache_curve": ((MIB, 4e9), (64 * MIB, 6e9)),
              "page_cache_near_curve": ((16 * MIB, 1.5), (256 * MIB, 1.0))}
    curved = base.model_copy(update={"storage": base.storage.model_copy(update=curves)})
    read = perturbed(curved, "storage.page_cache_bandwidth", 1.1).storage
    assert read.page_cache_curve == ((MIB, pytest.approx(4.4e9)), (64 * MIB, pytest.approx(6.6e9)))
    near = perturbed(curved, "storage.page_cache_near_speedup", 1.2).storage
    assert near.page_cache_near_curve == ((16 * MIB, pytest.approx(1.6)), (256 * MIB, 1.0))  # the gain above 1
    assert perturbed(base, "gpu.copy_engines", 1.5) is None and perturbed(base, "storage.nothing", 1.1) is None


def test_sensitivity_moves_each_parameter_by_its_step_and_skips_a_step_from_zero():
    from halsim.compare import Case
    from halsim.policies import parse_policy
    from halsim.workloads import load_workload

    ring = Case(parse_policy("streaming:chunk=64KiB,slots=4"), name="ring")
    cases = Cases(load_workload("test-small").request(), (ring,))
    table = [Parameter("link.h2d", (1.0, 1.5)), Parameter("host.thread_contention", (0.0, 0.1)),
             Parameter("gpu.copy_engines", (2.0, 3.0))]
    rows = sensitivity(cases, load_platform("h100-pcie5"), table)
    assert [(path, step) for path, step, _, _ in rows] == [("link.h2d", 0.5)]


def test_each_round_of_a_run_is_a_calibration_and_pooled_benches_keep_every_round():
    run = ROOT / "docs" / "benchmarks" / "fidelity-h200-2026-12-05-session17-run3.raw.json"
    body = read_json(run)
    rounds = load(run, body, by_round=True, pool=("read",))
    assert [one.label for one in rounds] == [f"{run.name} round {k}" for k in (1, 2, 3)]
    for k, one in enumerate(rounds):
        for pt, whole in zip(one.stored["points"], body["calibration"]["measurements"]["points"]):
            for reading, values in pt["samples"].items():
                want = whole["samples"][reading] if pt["probe"]["bench"] == "read" else [whole["samples"][reading][k]]
                assert values == want
        row = body["comparison"]["rows"][0]
        assert one.real[row["case"]] == row["measured_runs"][k]  # that round's real run
    done = _run("--pool", "read", str(run))
    assert done.returncode != 0 and "--pool goes with --rounds" in done.stderr
    done = _run("--rounds", "--pool", "read", str(run))  # one run's rounds share the pooled samples
    assert done.returncode != 0 and "needs calibrations of at least two files" in done.stderr


def test_what_is_no_calibration_is_refused_by_name(tmp_path):
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps({"rows": []}))
    done = _run(str(stray), str(stray))
    assert done.returncode != 0 and f"{stray}: no calibration in it" in done.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    done = _run(str(broken))
    assert done.returncode != 0 and f"{broken}: not a readable JSON file" in done.stderr
