"""How far calibrations of one machine agree: each fitted parameter across several calibrations.

    python benchmarks/calibration_repeatability.py CAL.json CAL.json ... [--rounds [--pool BENCH,...]]
        [--target 5%] [--workload NAME --policy SPEC ...] [--sensitivity] [--jobs N]

Issue 7 asks that two calibrations of the same machine give parameters within
a few percent. Each argument is one calibration:

* ``halsim calibrate --json CAL.json`` output, or a ``RUN.fitted.json`` written by
  ``fidelity_gpu.py`` / ``fidelity_replay.py --write``: its fitted parameters are read;
* a ``RUN.raw.json`` (or an older ``RUN.json``) of ``fidelity_gpu.py``: its probes are fitted
  here with today's fit; with ``--rounds`` each round of an interleaved run is fitted alone,
  so one run gives several calibrations a couple of minutes apart. ``--pool read,near``
  then gives those benches' probes every round's samples in each round's calibration:
  what sampling just them more often would do to the calibrations' agreement.
  Two rounds of one run then share those samples, so ``--pool`` compares only
  calibrations of different runs (``--across-runs``; give that without ``--pool``
  for the same pairs unpooled).

For every parameter that the fit measured (not a lower bound, not a default),
the table gives its median, its range, its spread (half the range over the
median, as ``halsim compare`` gives a case's real runs) and its step: the median
change between consecutive calibrations in the order given (with ``--across-runs``,
between every two calibrations of different files), and whether the spread is
within ``--target``. A parameter's spread alone does not say what it costs: a
per-call cost of microseconds may halve without moving an upload of gigabytes.
So the same is given for the predictions: each case of the first fidelity run
given (its policies, warm and cold, on its file layout), or each ``--policy`` on
``--workload``, simulated on every calibration's platform; for fidelity runs,
how each case's prediction moved against its real time from one calibration to
the next. ``--sensitivity`` moves each parameter by its step on the first
calibration's platform and gives how far that moves the predictions.
``--cross`` scores every fidelity run's real times against every calibration's
predictions: does a run's own calibration, from the same minutes, predict it
better than another's?
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from halsim.calibrate import BENCHES
from halsim.compare import Case, predict, relative_spread
from halsim.fit import fit_platform
from halsim.platform import Platform
from halsim.policies import parse_policy
from halsim.request import UploadRequest
from halsim.workloads import load_workload

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_replay import (keep_rounds, layout_of, measurements, read_json,  # noqa: E402  (stored runs, as read)
                             stored_case)


@dataclass(frozen=True)
class Parameter:
    """One parameter (or one case's prediction) across the calibrations that gave it, in the order given."""

    path: str
    values: tuple[float, ...]
    pairs: tuple[tuple[int, int], ...] | None = None  # which values' changes make the step (None: consecutive)

    @property
    def spread(self) -> float:
        return relative_spread(self.values)

    @property
    def step(self) -> float:
        """The median relative change from one calibration to the next (or over ``pairs``)."""
        pairs = self.pairs if self.pairs is not None else consecutive(len(self.values))
        steps = [abs(b - a) / abs(a) if a else (0.0 if b == a else math.inf)
                 for a, b in ((self.values[i], self.values[j]) for i, j in pairs)]
        return statistics.median(steps) if steps else 0.0


def consecutive(count: int) -> tuple[tuple[int, int], ...]:
    return tuple((i, i + 1) for i in range(count - 1))


def across_runs(runs: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Every two calibrations of different runs (``runs[i]``: the file calibration i came from):
    rounds of one run pooled share samples, so only these pairs are independent."""
    return tuple((i, j) for i in range(len(runs)) for j in range(i + 1, len(runs)) if runs[i] != runs[j])


def measured_values(calibration: dict) -> dict[str, float]:
    """The fitted parameters a calibration (``Calibration.to_dict()``) measured: path -> value."""
    return {f["path"]: float(f["value"]) for f in calibration["fitted"]
            if f["measured"] and not f.get("lower_bound") and isinstance(f["value"], (int, float))}


def across(calibrations: list[dict[str, float]], pairs: Sequence[tuple[int, int]] | None = None) -> list[Parameter]:
    """Each parameter measured by at least two of ``calibrations``, in the order the first names them;
    its step over ``pairs`` of calibrations (indices into ``calibrations``; None: consecutive ones)."""
    order = list(dict.fromkeys(path for c in calibrations for path in c))
    table = []
    for path in order:
        having = [k for k, c in enumerate(calibrations) if path in c]
        position = {k: n for n, k in enumerate(having)}
        kept = None if pairs is None else tuple((position[i], position[j]) for i, j in pairs
                                                if i in position and j in position)
        table.append(Parameter(path, tuple(calibrations[k][path] for k in having), kept))
    return [p for p in table if len(p.values) >= 2]


def benches(text: str) -> tuple[str, ...]:
    """``--pool``: calibration benches by name."""
    names = tuple(text.split(","))
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise argparse.ArgumentTypeError(f"no bench {', '.join(unknown)}; benches: {', '.join(sorted(BENCHES))}")
    return names


def fraction(text: str) -> float:
    """``--target``: "5%" or 0.05."""
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a fraction: {text!r} (e.g. 5% or 0.05)") from None


@dataclass(frozen=True)
class Calibrated:
    """What the tables need of one calibration."""

    label: str
    values: dict[str, float]
    platform: Platform


def _fitted(label: str, calibration: dict) -> Calibrated:
    return Calibrated(label, measured_values(calibration), Platform.model_validate(calibration["platform"]))


def _fit(item: tuple[str, dict]) -> Calibrated:
    label, stored = item
    return _fitted(label, fit_platform(measurements(stored)).to_dict())


@dataclass(frozen=True)
class Cases:
    """The uploads whose predictions are compared: each case on one request."""

    request: UploadRequest
    cases: tuple[Case, ...]

    def predictions(self, platform: Platform) -> dict[str, float]:
        return {case.label: report.seconds for case, report in zip(self.cases, predict(self.request, platform,
                                                                                     self.cases))}


def cases_of_run(path: Path, body: dict) -> Cases | None:
    """A fidelity_gpu.py run's cases (scored and extra) on its file layout; None for no such run."""
    comparison = body.get("comparison")
    if not comparison:
        return None
    if "file_bytes" not in comparison:  # RUN.fitted.json: the file's size is in RUN.raw.json beside it
        beside = [path.parent / str(body["source"])] if body.get("source") else []
        beside.append(path.with_name(path.name.removesuffix(".fitted.json") + ".raw.json"))
        raw = next((p for p in beside if p.is_file()), None)
        return cases_of_run(raw, read_json(raw)) if raw else None
    workload = layout_of(comparison["file_bytes"])
    if workload is None:
        raise SystemExit(f"{path}: the run's file ({comparison['file_bytes']} bytes) is no fidelity_gpu.py layout")
    rows = comparison["rows"] + (body.get("extra") or {}).get("rows", [])
    return Cases(workload.request(), tuple(stored_case(r) for r in rows))


@dataclass(frozen=True)
class Loaded:
    """One calibration as read: fitted already (``done``), or ``stored`` measurements to fit; and where
    it is a fidelity_gpu.py run (or a round of one), each case's real seconds (median of its runs)."""

    label: str
    stored: dict | None
    done: Calibrated | None
    real: dict[str, float] | None
    run: str = ""  # the file it came from: rounds of one run share it


def real_seconds(body: dict) -> dict[str, float] | None:
    comparison = body.get("comparison")
    if not comparison:
        return None
    rows = comparison["rows"] + (body.get("extra") or {}).get("rows", [])
    return {r["case"]: statistics.median(r["measured_runs"]) if r.get("measured_runs") else r["measured_seconds"]
            for r in rows}


def load(path: Path, body: dict, by_round: bool, pool: Sequence[str] = ()) -> list[Loaded]:
    """Each calibration in ``path``: the file's, or with ``by_round`` one for each round of a run; there
    the probes of the benches in ``pool`` keep every round's samples, as if measured that often a round."""
    calibration = body.get("calibration", body)
    if not isinstance(calibration, dict) or not ({"fitted", "measurements"} & set(calibration)):
        raise SystemExit(f"{path}: no calibration in it (want halsim calibrate --json or a fidelity_gpu.py run)")
    if "fitted" in calibration and not by_round:
        return [Loaded(path.name, None, _fitted(path.name, calibration), real_seconds(body), str(path))]
    if "measurements" not in calibration:
        raise SystemExit(f"{path}: the calibration keeps no measurements to fit" +
                         (" (--rounds needs a raw run)" if by_round else ""))
    if not by_round:
        return [Loaded(path.name, calibration["measurements"], None, real_seconds(body), str(path))]
    count = calibration["measurements"]["config"]["repeats"]
    if "comparison" not in body:
        raise SystemExit(f"{path}: --rounds needs a fidelity_gpu.py run (its rounds interleave probes and uploads)")
    rounds = [keep_rounds(body, [k], path) for k in range(1, count + 1)]
    every = {json.dumps(pt["probe"], sort_keys=True): pt["samples"] for pt in calibration["measurements"]["points"]}
    for one in rounds:
        for pt in one["calibration"]["measurements"]["points"]:
            if pt["probe"]["bench"] in pool:
                pt["samples"] = every[json.dumps(pt["probe"], sort_keys=True)]
    return [Loaded(f"{path.name} round {k}", one["calibration"]["measurements"], None, real_seconds(one), str(path))
            for k, one in enumerate(rounds, 1)]


# Parameters that a measured curve overrides in the simulator: the curve moves with them.
CURVES = {"storage.page_cache_bandwidth": ("page_cache_curve", "rate"),
          "storage.page_cache_near_speedup": ("page_cache_near_curve", "speedup"),
          "storage.page_cache_ring_speedup": ("page_cache_ring_curve", "speedup"),
          "host.step_overhead": ("step_overhead_curve", "rate"),
          "host.staging_write_share": ("staging_write_curve", "share")}


def perturbed(platform: Platform, path: str, factor: float) -> Platform | None:
    """``platform`` with one fitted parameter ``factor`` times its value (and the curve that stands
    for it, where there is one: a speedup's gain above 1, a share up to 1, a curve's values); None
    for a count, or for a parameter that is no field of the platform."""
    part, name = path.split(".", 1)
    key = {"storage": "storage", "host": "host", "link": "links", "gpu": "gpus"}.get(part)
    if key is None:
        return None
    single = part in ("storage", "host")
    holders = [getattr(platform, key)] if single else list(getattr(platform, key))
    curve, kind = CURVES.get(path, (None, None))

    def scale(value: float) -> float:
        if kind == "speedup":
            return 1.0 + (value - 1.0) * factor
        return min(1.0, value * factor) if kind == "share" else value * factor

    changed = []
    for holder in holders:
        update = {}
        if isinstance(getattr(holder, name, None), float):  # counts (copy engines, readahead) stay
            update[name] = scale(getattr(holder, name))
        if curve and getattr(holder, curve, None):
            update[curve] = tuple((k, scale(v)) for k, v in getattr(holder, curve))
        changed.append(holder.model_copy(update=update))
    if changed == holders:
        return None
    return platform.model_copy(update={key: changed[0] if single else tuple(changed)})


def sensitivity(cases: "Cases", platform: Platform, table: list[Parameter]) -> list[tuple[str, float, float, float]]:
    """What each parameter's noise does to the predictions: ``(path, its step, the median and the
    largest relative move of a case's prediction)`` with the parameter moved by its step on ``platform``."""
    base = cases.predictions(platform)
    rows = []
    for p in table:
        # A step from or to zero has no size to move by.
        moved = perturbed(platform, p.path, 1.0 + p.step) if 0 < p.step < math.inf else None
        if moved is None:
            continue
        now = cases.predictions(moved)
        shifts = [abs(now[c] / base[c] - 1.0) for c in base]
        rows.append((p.path, p.step, statistics.median(shifts), max(shifts)))
    return sorted(rows, key=lambda row: (row[3], row[2]), reverse=True)


def moves(predicted: list[dict[str, float]], real: list[dict[str, float]],
          pairs: Sequence[tuple[int, int]] | None = None) -> tuple[list[float], list[float]]:
    """Each case's change of log seconds from one calibration to the next (or over ``pairs``): predicted, real."""
    dp, dr = [], []
    for i, j in pairs if pairs is not None else consecutive(len(predicted)):
        p0, p1, r0, r1 = predicted[i], predicted[j], real[i], real[j]
        for case in sorted(p0.keys() & p1.keys() & r0.keys() & r1.keys()):
            dp.append(math.log(p1[case] / p0[case]))
            dr.append(math.log(r1[case] / r0[case]))
    return dp, dr


def cross_errors(predicted: list[dict[str, float]], real: list[dict[str, float]]) -> list[list[float]]:
    """``[i][j]``: the median |error| of calibration i's predictions against run j's real times,
    over the cases both have (nan where none)."""
    def median_error(p: dict[str, float], r: dict[str, float]) -> float:
        errors = [abs(p[c] / r[c] - 1.0) for c in p.keys() & r.keys()]
        return statistics.median(errors) if errors else math.nan
    return [[median_error(p, r) for r in real] for p in predicted]


def print_cross(labels: list[str], table: list[list[float]], runs: list[str]) -> None:
    """The matrix, and each run's (or round's) own calibration against those of other rounds and runs."""
    print("\nmedian |error| of a calibration's predictions (row) against a run's real times (column)")
    print(" " * 6 + "".join(f"{j:>7}" for j in range(1, len(table) + 1)))
    for i, row in enumerate(table, 1):
        print(f"{i:>4}  " + "".join(f"{x:>7.1%}" for x in row) + f"   {labels[i - 1]}")
    n = len(table)
    own = [table[j][j] for j in range(n)]
    # With --rounds: another round of the same run (a minute or two away), then another run.
    same = [table[i][j] for j in range(n) for i in range(n) if i != j and runs[i] == runs[j]]
    other = [table[i][j] for j in range(n) for i in range(n) if runs[i] != runs[j]]
    said = [f"a run's own calibration: mean {statistics.mean(own):.1%}"]
    if same:
        said.append(f"another round of the same run: {statistics.mean(same):.1%} over {len(same)} pairs")
    if other:
        said.append(f"a calibration of another run: {statistics.mean(other):.1%} over {len(other)} pairs")
    print("; ".join(said))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("calibrations", type=Path, nargs="+", help="calibration JSON files (see above)")
    parser.add_argument("--rounds", action="store_true",
                        help="fit each round of a fidelity_gpu.py run alone: one calibration a round")
    parser.add_argument("--pool", type=benches, default=(), metavar="BENCH[,BENCH...]",
                        help="with --rounds: these benches' probes keep every round's samples in each round's "
                        "calibration (what more samples of just them would do), e.g. read,near; "
                        "implies --across-runs")
    parser.add_argument("--across-runs", action="store_true",
                        help="steps and moves between every two calibrations of different files, not "
                        "consecutive ones (with --rounds: the same pairs --pool compares)")
    parser.add_argument("--target", type=fraction, default=0.05, help="the spread called repeatable (5%%)")
    parser.add_argument("--workload", default=None,
                        help="predict --policy on this workload (a name, .toml/.json, or a .safetensors file)")
    parser.add_argument("--policy", action="append", default=[], help="a policy to predict (repeatable)")
    parser.add_argument("--sensitivity", action="store_true",
                        help="move each parameter by its step on the first calibration's platform: how far "
                        "the cases' predictions move")
    parser.add_argument("--cross", action="store_true",
                        help="fidelity runs: score each run's real times against every calibration's predictions")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="calibrations fitted at once, one process each (default: one per CPU)")
    args = parser.parse_args()
    if bool(args.workload) != bool(args.policy):
        parser.error("--workload and --policy go together")
    bodies = [(path, read_json(path)) for path in args.calibrations]
    if args.pool and not args.rounds:
        parser.error("--pool goes with --rounds")
    loaded = [item for path, body in bodies for item in load(path, body, args.rounds, args.pool)]
    if len(loaded) < 2:
        parser.error("give at least two calibrations (or one run with --rounds)")
    pairs = across_runs([one.run for one in loaded]) if args.across_runs or args.pool else None
    if pairs is not None and not pairs:
        parser.error("--across-runs (or --pool) needs calibrations of at least two files")
    if args.workload:
        cases = Cases(load_workload(args.workload).request(), tuple(Case(parse_policy(spec), name=spec)
                                                                    for spec in args.policy))
    else:
        cases = next((c for path, body in bodies if (c := cases_of_run(path, body))), None)
    # Refused before the fits, which take minutes.
    if args.sensitivity and cases is None:
        parser.error("--sensitivity needs cases: fidelity_gpu.py runs, or --workload and --policy")
    if args.cross and (args.workload or any(one.real is None for one in loaded)):
        parser.error("--cross needs fidelity_gpu.py runs (their real times), and no --workload")
    to_fit = [(one.label, one.stored) for one in loaded if one.done is None]
    # A fit takes a minute or more: fitted in worker processes, kept in the order given.
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        fitted = iter(list(pool.map(_fit, to_fit)) if to_fit else [])
    calibrations = [one.done if one.done is not None else next(fitted) for one in loaded]
    for c in calibrations:
        print(f"calibration: {c.label}")
    if pairs is not None:
        print(f"steps over the {len(pairs)} pairs of calibrations from different files")
    parameters = across([c.values for c in calibrations], pairs)
    print_table("parameter", parameters, args.target, "parameters measured")
    if cases is not None:
        predicted = [cases.predictions(c.platform) for c in calibrations]
        print_table("case (predicted seconds)", across(predicted, pairs), args.target, "cases' predictions")
        real = [one.real for one in loaded]
        if all(r is not None for r in real):
            dp, dr = moves(predicted, real, pairs)
            if len(dp) >= 3:
                # Do predictions follow the machine? Moves together: the calibration tracks its drift;
                # apart: the calibration's own noise adds to the error.
                print(f"from one calibration to {'another' if pairs is not None else 'the next'}, a case's "
                      f"prediction moved by a median "
                      f"{statistics.median(abs(x) for x in dp):.1%} and its real time by "
                      f"{statistics.median(abs(x) for x in dr):.1%} (log); the moves correlate at "
                      f"{statistics.correlation(dp, dr):.2f} over {len(dp)} of them")
            if args.cross:
                print_cross([one.label for one in loaded], cross_errors(predicted, real), [one.run for one in loaded])
    if args.sensitivity:
        print(f"\n{'parameter moved by its step':<52} {'step':>6} {'median case move':>16} {'largest':>8}")
        for path, step, median, largest in sensitivity(cases, calibrations[0].platform, parameters):
            print(f"{path:<52} {step:>6.1%} {median:>16.2%} {largest:>8.2%}")
    print("\nspread: half the range over the median; step: the median change from one calibration to "
          + ("one of another file" if pairs is not None else "the next"))
    return 0


def print_table(title: str, table: list[Parameter], target: float, what: str) -> None:
    print(f"\n{title:<52} {'n':>3} {'median':>10} {'min':>10} {'max':>10} {'spread':>7} {'step':>6}")
    for p in table:
        mark = "" if p.spread <= target else "  over"
        print(f"{p.path[:52]:<52} {len(p.values):>3} {statistics.median(p.values):>10.4g} {min(p.values):>10.4g} "
              f"{max(p.values):>10.4g} {p.spread:>6.1%} {p.step:>6.1%}{mark}")
    within = sum(p.spread <= target for p in table)
    steps = sum(p.step <= target for p in table)
    print(f"{within} of {len(table)} {what} spread within ±{target:.0%}; {steps} step by {target:.0%} or less")


if __name__ == "__main__":
    raise SystemExit(main())
