"""benchmarks/fidelity_replay.py: the tool every fidelity claim in docs/ is measured with."""

from __future__ import annotations

import json
import os

import pytest
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
REPLAY = ROOT / "benchmarks" / "fidelity_replay.py"
STORED_CPU_RUN = ROOT / "docs" / "benchmarks" / "fidelity-cpu-2026-12-05-session16.raw.json"

sys.path.insert(0, str(REPLAY.parent))
import fidelity_replay  # noqa: E402
from fidelity_replay import keep_rounds, paired_errors, print_overall  # noqa: E402


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


def _summary(median, worst, tau, cases, ordering=(("a", 1.0, (1.0,)), ("b", 2.0, (2.0,))), rounds_order=None,
             name="run.raw.json"):
    return {"name": name, "now": {"median": median, "worst": worst, "tau": tau, "misordered": [],
                                  "rounds_order": rounds_order}, "cases": cases, "ordering": list(ordering)}


def test_the_summary_over_runs_gives_each_case_its_bias_and_scatter(capsys):
    runs = [_summary(0.04, 0.12, 0.9, [("a", +0.10, False), ("b", -0.02, False), ("x", -0.20, True)]),
            _summary(0.06, 0.20, 0.8, [("a", +0.20, False), ("b", +0.04, False)])]
    print_overall(runs)
    out = capsys.readouterr().out
    assert "over 2 runs" in out and "mean median |error| 5.00%" in out and "mean worst 16.00%" in out
    assert "mean tau-b 0.850" in out and "1 meet both targets" in out
    assert "runs of 6 rounds or more" not in out  # one round a run orders no pair
    assert "pooled over the 2 runs (2 rounds): the device orders 0 pairs" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in (["a"], ["b"], ["x"])}
    assert rows["a"] == ["2", "+15.0%", "15.0%", "1"]  # mean +15 %; one run over 15 %
    assert rows["b"] == ["2", "+1.0%", "3.0%", "0"]
    assert rows["x"] == ["(extra)", "1", "-20.0%", "20.0%", "1"]
    assert out.splitlines()[-1].startswith("x (extra)")  # extras after the scored cases
    # Runs of other cases: no pooled order, named, and the rest of the summary still comes.
    runs[1]["ordering"], runs[1]["name"] = [("a", 1.0, (1.0,))], "other.raw.json"
    print_overall(runs)
    out = capsys.readouterr().out
    assert "no order pooled over runs: other.raw.json scores other cases than run.raw.json" in out
    assert out.splitlines()[-1].startswith("x (extra)")


def test_the_order_pooled_over_runs_names_the_pairs_a_fit_misorders(capsys):
    # a ran ahead of b in 7 of 10 rounds of each run: in neither run alone beyond chance (p 0.34),
    # nor in the 14 of 20 pooled rounds (p 0.12); c trails both in every round.
    def ordering(a_predicted):
        a = (1.0,) * 7 + (3.0,) * 3
        return (("a", a_predicted, a), ("b", 2.0, (2.0,) * 10), ("c", 5.0, (9.0,) * 10))

    runs = [_summary(0.03, 0.1, 0.9, [], ordering(1.0), True), _summary(0.03, 0.1, 0.9, [], ordering(2.005), True)]
    rounds, ordered, misses = fidelity_replay.pooled_order(runs)
    assert (rounds, ordered, misses) == (20, 2, [])  # a/b unordered; c behind both, as both fits put it
    # Twenty rounds of a ahead of b in each of three runs, and one fit that puts a level with b.
    many = ("a", 1.0, (1.0,) * 20), ("b", 1.5, (2.0,) * 20)
    runs = [_summary(0.03, 0.1, 0.9, [], many, True) for _ in range(2)]
    runs.append(_summary(0.03, 0.1, 0.9, [], (("a", 1.5, (1.0,) * 20), ("b", 1.501, (2.0,) * 20)), False))
    rounds, ordered, misses = fidelity_replay.pooled_order(runs)
    assert (rounds, ordered) == (60, 1) and [(f, s, o.first_wins, o.rounds, w, n) for f, s, o, w, n in misses] == [
        ("a", "b", 60, 60, 1, 3)]
    print_overall(runs)
    out = capsys.readouterr().out
    assert "2 of 3 runs of 6 rounds or more: the fit orders every pair" in out
    assert "a ran ahead of b in 60 of 60 rounds (p 2e-18); 1 of 3 fits put it behind or level" in out
    # The second case faster: named first, and the fit that puts it behind counted.
    behind = [_summary(0.03, 0.1, 0.9, [], (("a", 1.0, (2.0,) * 10), ("b", 2.0, (1.0,) * 10)), True),
              _summary(0.03, 0.1, 0.9, [], (("a", 2.0, (2.0,) * 10), ("b", 1.0, (1.0,) * 10)), True)]
    rounds, ordered, misses = fidelity_replay.pooled_order(behind)
    assert [(f, s, o.first_wins, w) for f, s, o, w, _ in misses] == [("b", "a", 20, 1)]
    # Each run cut to its own rounds: a fourth round of b alone must not shift the pairing of the next run.
    ragged = [_summary(0.03, 0.1, 0.9, [], (("a", 1.0, (1.0,) * 6), ("b", 2.0, (2.0,) * 6 + (0.5,))), True)] * 2
    assert fidelity_replay.pooled_order(ragged)[:2] == (12, 1)


def test_the_device_against_itself():
    ahead = ("a", 1.0, (1.0,) * 10), ("b", 1.5, (1.05,) * 10), ("c", 2.0, (3.0,) * 10)
    runs = [_summary(0.03, 0.1, 0.9, [], ahead, True) for _ in range(3)]
    # Every run orders all 3 pairs; each of the 6 (run, other run) pairs agrees on them; a/b lie within 10 %.
    assert fidelity_replay.runs_against_runs(runs) == {"all": (18, 0, 0), "close": (6, 0, 0), "repeated": 3}
    flipped = ("a", 1.0, (1.05,) * 10), ("b", 1.5, (1.0,) * 10), ("c", 2.0, (3.0,) * 10)
    mixed = ("a", 1.0, (1.0,) * 5 + (1.2,) * 5), ("b", 1.5, (1.05,) * 10), ("c", 2.0, (3.0,) * 10)
    against = fidelity_replay.runs_against_runs(runs[:1] + [_summary(0.03, 0.1, 0.9, [], flipped, True),
                                                            _summary(0.03, 0.1, 0.9, [], mixed, True)])
    # a/b: the first two runs order it opposite ways, the third leaves it unordered (5 of 10 each way),
    # though its medians put b ahead, as the second run's do: those two share an exact order.
    assert against["close"] == (0, 2, 2) and against["all"] == (12, 2, 2) and against["repeated"] == 2
    # A model that knew the other runs' medians orders runs that agree as they do; against a run that
    # flips a/b, the two others each get a level truth (the tie misses) and the flipped one a/b reversed.
    assert fidelity_replay.oracle_misses(runs) == [0, 0, 0]
    assert fidelity_replay.oracle_misses(runs[:2] + [_summary(0.03, 0.1, 0.9, [], flipped, True)]) == [1, 1, 1]
    assert fidelity_replay.oracle_misses(runs + [_summary(0.03, 0.1, 0.9, [], flipped, True)]) == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="other.raw.json scores other cases"):
        fidelity_replay.runs_against_runs([runs[0], _summary(0.03, 0.1, 0.9, [], ahead[:2], name="other.raw.json")])


def _interleaved_run(rounds: int) -> dict:
    probe = {"bench": "read", "size": 1 << 20, "count": 8, "width": 1}
    return {"calibration": {"measurements": {"config": {"repeats": rounds},
                                             "points": [{"probe": probe, "samples": {"read": [1.0, 2.0, 4.0]}}]}},
            "comparison": {"rows": [{"case": "a", "measured_runs": [10.0, 20.0, 30.0], "spread": 0.5}]},
            "extra": {"rows": [{"case": "x", "measured_runs": [1.0, 1.0, 3.0], "spread": 1.0}]}}


def test_a_round_keeps_its_own_probes_and_real_runs(tmp_path):
    run = _interleaved_run(3)
    one = keep_rounds(run, [2], tmp_path / "run.json")
    assert one["calibration"]["measurements"]["points"][0]["samples"] == {"read": [2.0]}
    assert one["calibration"]["measurements"]["config"]["repeats"] == 1
    assert one["comparison"]["rows"][0]["measured_runs"] == [20.0] and one["comparison"]["rows"][0]["spread"] == 0
    two = keep_rounds(run, [1, 3], tmp_path / "run.json")
    assert two["extra"]["rows"][0]["measured_runs"] == [1.0, 3.0] and two["extra"]["rows"][0]["spread"] == 0.5
    assert run["comparison"]["rows"][0]["measured_runs"] == [10.0, 20.0, 30.0]  # the stored run is untouched


def test_rounds_a_run_does_not_have_are_refused_by_name(tmp_path):
    with pytest.raises(SystemExit, match=r"run\.json: the run has rounds 1\.\.3, not 4"):
        keep_rounds(_interleaved_run(3), [4], tmp_path / "run.json")
    # A run calibrated first and compared after (runs 1-12) has no rounds to pair.
    with pytest.raises(SystemExit, match="5 rounds: not one a round"):
        keep_rounds(_interleaved_run(5), [1], tmp_path / "run.json")


def test_paired_errors_set_each_round_s_prediction_against_that_round_s_real_run(tmp_path, monkeypatch):
    # Stand-ins for the fit and the simulator: round k's calibration (its one read sample, 1, 2 or 4)
    # predicts 10 times that; the rounds' real runs took 40, 10 and 20 s.
    monkeypatch.setattr(fidelity_replay, "measurements", lambda stored, after, read_ahead: stored["points"][0]
                        ["samples"]["read"][0])
    monkeypatch.setattr(fidelity_replay, "fit_platform", lambda sample: SimpleNamespace(platform=sample))
    monkeypatch.setattr(fidelity_replay, "predict", lambda request, platform, cases:
                        [SimpleNamespace(seconds=10.0 * platform) for _ in cases])
    run = _interleaved_run(3)
    run["comparison"]["rows"][0].update({"policy": "import", "cold": False, "measured_runs": [40.0, 10.0, 20.0]})
    # Predicted over real: 10/40, 20/10, 40/20; the median, 2, less one. (Pooled, the medians 20 and 20 agree.)
    assert paired_errors(run, tmp_path / "run.json", None) == {"a": pytest.approx(1.0)}
    assert paired_errors(_interleaved_run(5), tmp_path / "run.json", None) is None  # not one sample a round


def test_paired_goes_with_every_round():
    done = subprocess.run([sys.executable, str(REPLAY), "--paired", "--rounds", "1", str(STORED_CPU_RUN)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--paired scores every round of a run: leave out --rounds" in done.stderr


def test_the_summary_sets_paired_scores_beside_the_pooled_ones_of_the_same_runs(capsys):
    runs = [dict(_summary(0.04, 0.12, 0.9, [("a", 0.04, False)]), paired={"median": 0.03, "worst": 0.10}),
            dict(_summary(0.08, 0.20, 0.8, [("a", 0.08, False)]), paired={"median": 0.05, "worst": 0.14}),
            dict(_summary(0.02, 0.30, 0.8, [("a", 0.02, False)]), paired=None)]  # not interleaved
    print_overall(runs)
    out = capsys.readouterr().out
    assert ("paired, round by round, over the 2 interleaved runs: mean median |error| 4.00%, mean worst 12.00% "
            "(pooled over the same runs: 6.00%, 16.00%)") in out
