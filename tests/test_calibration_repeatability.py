"""benchmarks/calibration_repeatability.py: how far calibrations of one machine agree."""

from __future__ import annotations

import json
import math
import os
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
from calibration_repeatability import (Cases, Parameter, across, across_runs, load,  # noqa: E402
                                       measured_values, moves, perturbed, read_json, sensitivity)


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
