"""How well a perfect model could score against stored fidelity runs: the noise floor of the targets.

    python benchmarks/noise_floor.py docs/benchmarks/fidelity-h100-*.raw.json [--replicates 4000] [--rounds 10]

A run scores its predictions against the median of each case's few real runs
(3 or 5 rounds), and that median misses the truth too. For each stored run
this prints what :mod:`halsim.noise` says a perfect model would expect: the
median and the worst |error| over the cases, how often it would meet issue 7's
targets (median <= 5 %, worst <= 15 %), how often its ranking would be the
hardware's exact order (cases close together swap with the noise; ``--pairs N``
lists the N pairs it would swap most often), and the case whose runs spread most;
next to it the model's own score (``halsim compare`` prints the same floor
under its table). The calibration's own noise comes on top
(benchmarks/calibration_repeatability.py). ``--rounds N`` asks what N real runs
a case at the same spreads would leave (what a longer run would buy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from halsim.compare import MEDIAN_ERROR_TARGET, WORST_ERROR_TARGET
from halsim.noise import noise_floor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_replay import fitted_beside, read_json  # noqa: E402  (stored runs, as read)


def real_runs(run: dict, path: Path) -> dict[str, list[float]]:
    """Each scored case's real run times (seconds), by case label."""
    rows = (run.get("comparison") or {}).get("rows")
    if not rows:
        raise SystemExit(f"{path}: no comparison rows (want a fidelity_gpu.py run or its fitted replay)")
    out: dict[str, list[float]] = {}
    for row in rows:
        runs = row.get("measured_runs")
        if not isinstance(runs, list) or not runs or not all(isinstance(t, (int, float)) and t > 0 for t in runs):
            raise SystemExit(f"{path}: case {row.get('case')!r} has no positive real run times")
        out[row["case"]] = [float(t) for t in runs]  # a cold case's label ends in " (cold)"
    return out


def model_scores(path: Path, run: dict) -> tuple[float, float, bool] | None:
    """The model's median and worst |error| on the run, and whether it ranked the cases in the same order:
    from the RUN.fitted.json beside a raw run (the replay's fit), or the run's own where it was fitted when
    it ran; None for a raw run never fitted."""
    beside = fitted_beside(path)
    if beside is not None:
        run = read_json(beside)
    elif not run.get("calibration", {}).get("platform"):
        return None
    scored = run["comparison"]
    return scored["median_abs_error"], scored["worst_abs_error"], bool(scored["same_order"])


def floor(cases: dict[str, list[float]], draws: int, seed: int, rounds: int | None = None) -> dict:
    """A perfect model's expected scores against these cases' real runs (or ``rounds`` runs a case at
    their spreads), with the runs' count and the case that spread most."""
    got = noise_floor(list(cases.values()), (MEDIAN_ERROR_TARGET, WORST_ERROR_TARGET), draws, seed, rounds)
    if got is None:
        return {"median": 0.0, "worst": 0.0, "meets": 1.0, "same_order": 1.0, "swaps": [], "rounds": 1,
                "noisiest": "(one real run a case)"}
    labels = list(cases)
    return {"median": got.median, "worst": got.worst, "meets": got.meets, "same_order": got.same_order,
            "swaps": [(labels[i], labels[j], share) for i, j, share in got.swaps],
            "rounds": rounds or statistics.median(len(r) for r in cases.values()),
            "noisiest": max(zip(got.by_case, cases))[1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="JSON files written by fidelity_gpu.py (raw or fitted)")
    parser.add_argument("--replicates", type=int, default=4000, help="simulated sets of real runs per run (default 4000)")
    parser.add_argument("--seed", type=int, default=0, help="the draws' seed (default 0)")
    parser.add_argument("--pairs", type=int, default=0,
                        help="under each run, the pairs of cases a perfect model would swap most often (this many)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="score against this many real runs a case at the measured spreads (default: as run)")
    args = parser.parse_args()
    if args.replicates < 100:
        parser.error(f"--replicates {args.replicates}: want at least 100")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: want at least one run a case")
    if args.pairs < 0:
        parser.error(f"--pairs {args.pairs}: want a count of pairs, 0 or more")
    print(f"{'':<56} {'':>9} {'a perfect model':^37}  {'the model':^21}")
    print(f"{'run':<56} {'real runs':>9} {'median':>7} {'worst':>7} {'meets both':>10} {'in order':>10}  "
          f"{'median':>7} {'worst':>7} {'order':>5}  noisiest case")
    floors, models = [], []
    for path in args.runs:
        run = read_json(path)
        got = floor(real_runs(run, path), args.replicates, args.seed, args.rounds)
        floors.append(got)
        model = model_scores(path, run)
        if model:
            models.append(model)
        scored = (f"{model[0]:>7.1%} {model[1]:>7.1%} {'same' if model[2] else 'not':>5}" if model
                  else f"{'not fitted':>21}")
        print(f"{path.name[:56]:<56} {got['rounds']:>9g} {got['median']:>7.1%} {got['worst']:>7.1%} "
              f"{got['meets']:>10.0%} {got['same_order']:>10.0%}  {scored}  {got['noisiest']}")
        for first, second, share in got["swaps"][:args.pairs]:
            print(f"    swapped in {share:>4.0%} of draws: {first}  /  {second}")
    if len(floors) > 1:
        print(f"\nover {len(floors)} runs, a perfect model would expect: mean median |error| "
              f"{statistics.fmean(f['median'] for f in floors):.2%}, mean worst "
              f"{statistics.fmean(f['worst'] for f in floors):.2%}; it would meet both targets in "
              f"{statistics.fmean(f['meets'] for f in floors):.0%} of runs, and rank every case in the "
              f"hardware's order in {statistics.fmean(f['same_order'] for f in floors):.0%} of them")
        if models:
            print(f"the model, over the {len(models)} fitted: mean median |error| "
                  f"{statistics.fmean(m[0] for m in models):.2%}, mean worst {statistics.fmean(m[1] for m in models):.2%}; "
                  f"{sum(m[0] <= MEDIAN_ERROR_TARGET and m[1] <= WORST_ERROR_TARGET for m in models)} meet both targets, "
                  f"{sum(m[2] for m in models)} rank in the same order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
