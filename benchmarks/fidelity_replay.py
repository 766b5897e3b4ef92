"""Re-predict stored fidelity runs with today's simulator: refit, resimulate, compare with the real times.

    python benchmarks/fidelity_replay.py docs/benchmarks/fidelity-*.json [--cases] [--jobs N]

Each JSON from ``benchmarks/fidelity_gpu.py`` keeps the calibration's raw
microbenchmark samples and every case's real run times. This refits the
platform from those samples with the current fit, simulates every case again
on the same file layout (Llama-3-8B-like, 5 layers: only its index is needed),
and prints, per run, the median and worst |error| and the ranking then (as
stored) and now; given several runs, it ends with their mean scores and each
case's mean error (its bias) and median |error| over them. A change to the
model or the fit can so be checked against every GPU call made so far without
a GPU; what it cannot check is a change in what the backend does.

A run's ``OUT.raw.json`` (written before its fit, so a run cut off while fitting
keeps its data) replays the same way; its "then" column holds the predictions
of the stand-in platform the rounds ran against, not a fitted one.

``--paired`` also scores an interleaved run round by round: each round's
calibration, fitted alone, predicts that round's real run of each case, and a
case's paired error is the median over the rounds of predicted over real, less
one. The machine drifts over a run's minutes; paired, each real run meets the
probes taken beside it, at the price of one round's samples per fit (a fit
per round, besides the pooled one).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import functools
import itertools
import json
import os
import statistics
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from halsim.calibrate import BENCHES, Measurement, Measurements
from halsim.compare import MEDIAN_ERROR_TARGET, WORST_ERROR_TARGET, Case, predict, rank, relative_spread
from halsim.fit import fit_platform
from halsim.policies import parse_policy
from halsim.roundorder import ORDER_ALPHA, RoundOrder, min_rounds, sign_test
from halsim.units import parse_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_gpu import llama_like  # noqa: E402  (the file layout the runs used)


@dataclass
class ReplayRow:
    """What :func:`halsim.compare.rank` reads of a row."""

    case: Case
    predicted_seconds: float
    seconds: float
    spread: float
    round_seconds: tuple[float, ...]  # the real runs, round by round

    @property
    def error(self) -> float:
        return (self.predicted_seconds - self.seconds) / self.seconds


def measurements(stored: dict, after: dict[str, float] | None = None, read_ahead: int | None = None) -> Measurements:
    """The stored calibration; with ``after`` (probe label -> seconds, the run's drift recheck),
    those probes' headline readings as they were measured after the comparison; with ``read_ahead``,
    the drive's readahead window of a run that did not record it."""
    m = Measurements.from_dict(stored)
    if m.read_ahead is None:
        m.read_ahead = read_ahead
    # Probes this version no longer measures (runs 21-22 fitted a factor from an import upload).
    m.points = [pt for pt in m.points if pt.probe.bench in BENCHES]
    if after:
        m.points = [Measurement(pt.probe, {**pt.samples, pt.probe.readings[0]: [after[pt.probe.label]]})
                    if pt.probe.label in after else pt for pt in m.points]
    return m


def _row_dict(row: ReplayRow, measured_runs: list[float]) -> dict:
    return {"case": row.case.label, "policy": row.case.policy.spec(), "cold": row.case.cold,
            "predicted_seconds": row.predicted_seconds, "measured_seconds": row.seconds,
            "measured_runs": measured_runs, "spread": row.spread, "error": row.error}


def _markdown(rows: list[ReplayRow], title: str) -> str:
    lines = [title, "", "| case | predicted s | measured s (median) | spread | error |", "|---|---:|---:|---:|---:|"]
    lines += [f"| `{r.case.label}` | {r.predicted_seconds:.4g} | {r.seconds:.4g} | ±{r.spread:.0%} | {r.error:+.1%} |"
              for r in rows]
    return "\n".join(lines) + "\n"


def write_fitted(into: Path, path: Path, run: dict, calibration, rows: list[ReplayRow],
                 extra: list[ReplayRow]) -> Path:
    """The fitted platform (TOML), the table (Markdown) and the comparison (JSON) of one replayed run."""
    into.mkdir(parents=True, exist_ok=True)
    # RUN.raw.json -> RUN.fitted.{toml,json,md}, beside the raw run without overwriting it.
    stem = into / (path.name.removesuffix(".json").removesuffix(".raw") + ".fitted")
    calibration.save(stem.parent / (stem.name + ".toml"))
    errors = [abs(r.error) for r in rows]
    ranking = rank(rows)
    summary = (f"median |error| {statistics.median(errors):.1%}, worst {max(errors):.1%}; "
               f"ranking: {ranking.describe()}")
    runs = {(r["case"], r["cold"]): r["measured_runs"] for r in run["comparison"]["rows"] +
            ((run.get("extra") or {}).get("rows", []))}

    def measured(r: ReplayRow) -> list[float]:
        return runs[(r.case.label, r.case.cold)]

    body = {"source": path.name, "device": run.get("device"), "calibration": calibration.to_dict(),
            "comparison": {"rows": [_row_dict(r, measured(r)) for r in rows],
                           "median_abs_error": statistics.median(errors),
                           "worst_abs_error": max(errors), "kendall_tau": ranking.tau,
                           "same_order": ranking.same_order, "swapped_beyond_spread": ranking.swapped_beyond_noise,
                           "orders_as_rounds": ranking.orders_as_rounds,
                           "pairs_ordered_by_rounds": ranking.ordered,
                           "misordered": [m._asdict() for m in ranking.misordered]},
            "extra": {"rows": [_row_dict(r, measured(r)) for r in extra]} if extra else None}
    (stem.parent / (stem.name + ".json")).write_text(json.dumps(body, indent=1, default=str))
    text = _markdown(rows, f"## {path.name}, fitted by fidelity_replay.py") + "\n" + summary + ".\n"
    if extra:
        text += "\n" + _markdown(extra, "Not scored (--extra):")
    (stem.parent / (stem.name + ".md")).write_text(text)
    return stem


def layouts() -> Iterator:
    """Every fidelity_gpu.py file layout (``--layers`` 1..32, with and without ``--no-embeddings``)."""
    for layers in range(1, 33):
        for embeddings in (True, False):
            yield llama_like(layers, embeddings)


def layout_of(file_bytes: int):
    """The fidelity_gpu.py file layout of a file of ``file_bytes``."""
    return next((workload for workload in layouts() if workload.index().file_length == file_bytes), None)


def keep_rounds(run: dict, rounds: Sequence[int], path: Path) -> dict:
    """The run as if only ``rounds`` (1-based) had been measured: each probe's samples and each case's
    real runs of those rounds. An interleaved run keeps one sample a round, in round order."""
    count = run["calibration"]["measurements"]["config"]["repeats"]
    if any(not 1 <= k <= count for k in rounds):
        raise SystemExit(f"{path}: the run has rounds 1..{count}, not {', '.join(map(str, rounds))}")

    def kept(values: list, what: str) -> list:
        if len(values) != count:
            raise SystemExit(f"{path}: {what} has {len(values)} samples for {count} rounds: not one a round")
        return [values[k - 1] for k in rounds]

    run = copy.deepcopy(run)
    for point in run["calibration"]["measurements"]["points"]:
        point["samples"] = {reading: kept(values, f"probe {point['probe']}")
                            for reading, values in point["samples"].items()}
    for row in run["comparison"]["rows"] + (run.get("extra") or {}).get("rows", []):
        row["measured_runs"] = kept(row["measured_runs"], f"case {row['case']}")
        row["spread"] = relative_spread(row["measured_runs"])
    run["calibration"]["measurements"]["config"]["repeats"] = len(rounds)
    return run


def read_json(path: Path) -> dict:
    """A stored run (or calibration) as a JSON object; a file that is none is refused by name."""
    try:
        body = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(body, dict):
        raise SystemExit(f"{path}: not a JSON object (want a fidelity_gpu.py run or halsim calibrate --json)")
    return body


def fitted_beside(path: Path) -> Path | None:
    """The RUN.fitted.json that ``--write`` left beside a raw run RUN.raw.json, if there is one."""
    beside = path.with_name(path.name.removesuffix(".raw.json") + ".fitted.json")
    return beside if path.name.endswith(".raw.json") and beside.is_file() else None


def stored_case(row: dict) -> Case:
    """A stored comparison row's case (its label carries " (cold)"; the Case adds that back)."""
    return Case(parse_policy(row["policy"]), row["cold"], row["case"].removesuffix(" (cold)"))


def round_numbers(text: str) -> list[int]:
    """``--rounds``: "2" or "1,3"."""
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not round numbers: {text!r} (e.g. 2 or 1,3)") from None


def paired_errors(run: dict, path: Path, request, read_ahead: int | None = None) -> dict[str, float] | None:
    """Each scored case's paired error: the median over the run's rounds of (that round's calibration's
    prediction) / (that round's real run), less one. None for a run that is not interleaved."""
    count = run["calibration"]["measurements"]["config"]["repeats"]
    ratios: dict[str, list[float]] = {}
    for k in range(1, count + 1):
        try:
            one = keep_rounds(run, [k], path)
        except SystemExit:  # not one sample a round: calibrated, then compared
            return None
        platform = fit_platform(measurements(one["calibration"]["measurements"], None, read_ahead)).platform
        rows = one["comparison"]["rows"]
        cases = [stored_case(stored) for stored in rows]
        for stored, report in zip(rows, predict(request, platform, cases)):
            ratios.setdefault(stored["case"], []).append(report.seconds / stored["measured_runs"][0])
    return {case: statistics.median(r) - 1.0 for case, r in ratios.items()}


def replay(path: Path, show_cases: bool, after: bool = False, read_ahead: int | None = None,
           write: Path | None = None, rounds: Sequence[int] = (), paired: bool = False) -> dict:
    run = read_json(path)
    if rounds:
        run = keep_rounds(run, rounds, path)
    comparison = run["comparison"]
    rechecked = {m["probe"]: m["after"] for m in run.get("drift", [])} if after else None
    if after and not rechecked:
        raise SystemExit(f"{path}: the run has no drift recheck (fidelity_gpu.py before the fourth session)")
    calibration = fit_platform(measurements(run["calibration"]["measurements"], rechecked, read_ahead))
    workload = layout_of(comparison["file_bytes"])
    if workload is None:
        raise SystemExit(f"{path}: the run's file ({comparison['file_bytes']} bytes) is no layout "
                         "fidelity_gpu.py writes (--layers 1..32, with or without the embeddings)")
    request = workload.request()

    def replayed(stored_rows: list[dict]) -> tuple[list[ReplayRow], list[ReplayRow]]:
        then, now = [], []
        cases = [stored_case(stored) for stored in stored_rows]
        for case, stored, report in zip(cases, stored_rows, predict(request, calibration.platform, cases)):
            runs = tuple(stored["measured_runs"])
            real = statistics.median(runs)
            then.append(ReplayRow(case, stored["predicted_seconds"], real, stored["spread"], runs))
            now.append(ReplayRow(case, report.seconds, real, stored["spread"], runs))
        return then, now

    rows_then, rows_now = replayed(comparison["rows"])
    # The run's --extra cases too, after the scored ones and apart from the summary.
    extra_then, extra_now = replayed((run.get("extra") or {}).get("rows", []))
    if write is not None:
        write_fitted(write, path, run, calibration, rows_now, extra_now)
    lines = []
    if show_cases:
        lines.append(f"{'case':<62} {'real s':>7} {'then':>7} {'now':>7}")
        for k, (then, now) in enumerate(zip(rows_then + extra_then, rows_now + extra_now)):
            if k == len(rows_then):
                lines.append("not scored (--extra):")
            lines.append(f"{then.case.label[:62]:<62} {then.seconds:>7.4f} {then.error:>+7.1%} {now.error:>+7.1%}")
    summary = {"name": path.name, "lines": lines,
               "cases": [(r.case.label, r.error, False) for r in rows_now] +
                        [(r.case.label, r.error, True) for r in extra_now]}
    for name, rows in (("then", rows_then), ("now", rows_now)):
        errors = [abs(r.error) for r in rows]
        ranking = rank(rows)
        summary[name] = {"median": statistics.median(errors), "worst": max(errors), "tau": ranking.tau,
                         "beyond": ranking.swapped_beyond_noise, "misordered": ranking.misordered,
                         "rounds_order": ranking.orders_as_rounds}
    # Each scored case's prediction and real rounds, for the order pooled over runs (print_overall).
    summary["ordering"] = [(r.case.label, r.predicted_seconds, r.round_seconds) for r in rows_now]
    if paired:
        by_case = paired_errors(run, path, request, read_ahead)
        summary["paired"] = None if by_case is None else {
            "median": statistics.median(abs(e) for e in by_case.values()),
            "worst": max(abs(e) for e in by_case.values())}
        if by_case is not None and show_cases:
            lines.append(f"{'paired, round by round':<62} "
                         + ", ".join(f"{label} {e:+.1%}" for label, e in by_case.items()))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, nargs="+", help="JSON files written by fidelity_gpu.py")
    parser.add_argument("--cases", action="store_true", help="print every case's error, then and now")
    parser.add_argument("--after", action="store_true",
                        help="fit with the probes the run measured again after its comparison (its drift recheck)")
    parser.add_argument("--read-ahead", type=parse_size, default=None,
                        help="the drive's readahead window for runs that did not record it (the lent H200 VM: 8MiB)")
    parser.add_argument("--write", type=Path, default=None, metavar="DIR",
                        help="write each run's fitted platform (.toml), table (.md) and comparison (.json) into DIR")
    parser.add_argument("--rounds", type=round_numbers, default=[],
                        metavar="K[,K...]", help="fit and score with these rounds of an interleaved run only "
                        "(1-based): how far one round's calibration and real runs are from the pooled ones")
    parser.add_argument("--paired", action="store_true",
                        help="also score each round's real runs against that round's calibration alone "
                        "(a fit per round): the median and worst paired |error|")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="runs fitted at once, one process each (default: one per CPU)")
    args = parser.parse_args()
    if args.rounds and args.write:
        parser.error("--write keeps the fit of every round: leave out --rounds")
    if args.rounds and args.paired:
        parser.error("--paired scores every round of a run: leave out --rounds")
    print(f"{'run':<52} {'median then':>11} {'now':>6} {'worst then':>10} {'now':>6} {'tau then':>8} {'now':>5} "
          f"{'misordered':>10}"
          + (f" {'paired median':>13} {'worst':>6}" if args.paired else ""))
    one = functools.partial(replay, show_cases=args.cases, after=args.after, read_ahead=args.read_ahead,
                            write=args.write, rounds=args.rounds, paired=args.paired)
    summaries = []
    # Each run's fit takes a minute or more: runs go to worker processes, reported in the order given.
    with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for s in pool.map(one, args.runs):
            summaries.append(s)
            t, n = s["then"], s["now"]
            for line in s["lines"]:
                print(line)
            pair = s.get("paired")
            paired_cells = "" if not args.paired else (f" {pair['median']:>13.1%} {pair['worst']:>6.1%}" if pair
                                                      else f" {'not interleaved':>20}")
            misordered = "-" if n["rounds_order"] is None else str(len(n["misordered"]))
            print(f"{s['name']:<52} {t['median']:>11.1%} {n['median']:>6.1%} {t['worst']:>10.1%} {n['worst']:>6.1%} "
                  f"{t['tau']:>8.2f} {n['tau']:>5.2f} {misordered:>10}" + paired_cells, flush=True)
            for m in n["misordered"]:
                print(f"  misordered: {m.faster} ran ahead of {m.slower} in {m.wins} of {m.rounds} rounds"
                      + (", predicted equal" if m.predicted_equal else ""))
    if len(summaries) > 1:
        print_overall(summaries)
    return 0


def same_cases(summaries: list[dict]) -> list[str]:
    """The scored cases' labels, which every run given must share (in one order) for their rounds to be
    set side by side; ValueError naming the first run that differs."""
    labels = [label for label, _, _ in summaries[0]["ordering"]]
    for s in summaries[1:]:
        if [label for label, _, _ in s["ordering"]] != labels:
            raise ValueError(f"{s['name']} scores other cases than {summaries[0]['name']}")
    return labels


def _rounds(summary: dict) -> int:
    """A run's rounds: as many for every case (a case that ran fewer would shift the pairing)."""
    return min(len(seconds) for _, _, seconds in summary["ordering"])


def pooled_order(summaries: list[dict]) -> tuple[int, int, list[tuple[str, str, RoundOrder, int, int]]]:
    """The device's order of each pair over every round of every run given (runs of the same cases),
    against each run's fit: the rounds pooled, the pairs they order, and of those the ones some fit
    misorders: (faster, slower, the pooled rounds' order of faster against slower, runs whose fit puts
    slower ahead or predicts a tie, runs)."""
    labels = same_cases(summaries)
    # Run after run, each cut to its own rounds: round k of one case stays beside round k of another.
    pooled = [[t for s in summaries for t in s["ordering"][k][2][:_rounds(s)]] for k in range(len(labels))]
    # Each run's fit ranked against all the pooled rounds: rank() decides what is ordered and what is missed.
    rankings = [rank_rows([(label, predicted, pooled[k]) for k, (label, predicted, _) in enumerate(s["ordering"])])
                for s in summaries]
    wrong = Counter((m.faster, m.slower) for ranking in rankings for m in ranking.misordered)
    missed = {(m.faster, m.slower): m for ranking in rankings for m in ranking.misordered}
    position = {label: k for k, label in enumerate(labels)}

    def in_case_order(pair: tuple[str, str]) -> list[int]:
        return sorted(position[label] for label in pair)

    misses = [(m.faster, m.slower, RoundOrder(m.wins, m.rounds, sign_test(m.wins, m.rounds)), wrong[pair],
               len(summaries)) for pair, m in sorted(missed.items(), key=lambda item: in_case_order(item[0]))]
    return sum(_rounds(s) for s in summaries), rankings[0].ordered, misses


CLOSE = 0.10  # pairs whose medians lie this close (relative) are the ones a ranking can get wrong


def runs_against_runs(summaries: list[dict]) -> dict[str, tuple[int, int, int] | int]:
    """The device against itself. For each run and each other run: of the pairs the first orders round
    by round, how many the other orders the same way, leaves unordered, or orders the opposite way
    (``all``), and the same for pairs whose medians lie within :data:`CLOSE` in the first (``close``);
    then how many runs have the exact order of medians another run has (``repeated``)."""
    labels = same_cases(summaries)
    orders = [set(rank_rows(s["ordering"]).ordered_pairs) for s in summaries]
    medians = [{label: statistics.median(seconds[:_rounds(s)]) for label, _, seconds in s["ordering"]}
               for s in summaries]
    counts = {"all": [0, 0, 0], "close": [0, 0, 0]}
    for k, other in itertools.permutations(range(len(summaries)), 2):
        m = medians[k]
        for faster, slower in orders[k]:
            outcome = 0 if (faster, slower) in orders[other] else 2 if (slower, faster) in orders[other] else 1
            counts["all"][outcome] += 1
            if abs(m[faster] - m[slower]) <= CLOSE * min(m[faster], m[slower]):
                counts["close"][outcome] += 1
    exact = [tuple(sorted(labels, key=m.get)) for m in medians]
    return {"all": tuple(counts["all"]), "close": tuple(counts["close"]),
            "repeated": sum(exact.count(order) > 1 for order in exact)}


def oracle_misses(summaries: list[dict]) -> list[int]:
    """The ranking's noise floor, from the runs themselves: for each run, how many of the pairs its
    rounds order a model would misorder that knew each case's time as the median of every other
    run's rounds (put the slower ahead, or level within the tie)."""
    labels = same_cases(summaries)
    misses = []
    for k, s in enumerate(summaries):
        others = [o for j, o in enumerate(summaries) if j != k]
        truth = {label: statistics.median(t for o in others for t in o["ordering"][i][2][:_rounds(o)])
                 for i, label in enumerate(labels)}
        predicted = [(label, truth[label], seconds) for label, _, seconds in s["ordering"]]
        misses.append(len(rank_rows(predicted).misordered))
    return misses


def rank_rows(ordering: list[tuple[str, float, tuple[float, ...]]]):
    """:func:`halsim.compare.rank` of (label, predicted seconds, real rounds) rows (of a case, rank reads
    only its label)."""
    return rank([ReplayRow(SimpleNamespace(label=label), predicted, statistics.median(seconds),
                           relative_spread(seconds), tuple(seconds)) for label, predicted, seconds in ordering])


def print_pooled_order(summaries: list[dict]) -> None:
    try:
        rounds, ordered, misses = pooled_order(summaries)
        against = runs_against_runs(summaries)
    except ValueError as err:
        print(f"no order pooled over runs: {err}")
        return
    for which, what in (("all", "pairs"), ("close", f"pairs within {CLOSE:.0%}")):
        same, unordered, opposite = against[which]
        print(f"the device against itself, {what}: of those one run orders round by round, another orders "
              f"{same} the same way, {unordered} not at all, {opposite} the opposite way")
    print(f"{against['repeated']} of {len(summaries)} runs have another run's exact order of medians")
    if len(summaries) > 1:
        oracle = oracle_misses(summaries)
        print(f"a model that knew each case's median over the other runs would misorder a pair the rounds order "
              f"in {sum(n > 0 for n in oracle)} of {len(summaries)} runs ({sum(oracle)} pairs)")
    print(f"pooled over the {len(summaries)} runs ({rounds} rounds): the device orders {ordered} pairs (sign test, "
          f"p < {ORDER_ALPHA:g}); {len(misses)} of them some run's fit does not order so")
    for fast, slow, by_round, wrong, runs in misses:
        print(f"  {fast} ran ahead of {slow} in {by_round.first_wins} of {by_round.rounds} rounds "
              f"(p {by_round.p:.1g}); {wrong} of {runs} fits put it behind or level")


def print_overall(summaries: list[dict]) -> None:
    """Today's fit over every run given: the runs' mean scores, then each case's bias and scatter."""
    now = [s["now"] for s in summaries]
    met = sum(n["median"] <= MEDIAN_ERROR_TARGET and n["worst"] <= WORST_ERROR_TARGET for n in now)
    print(f"\nover {len(now)} runs, now: mean median |error| {statistics.fmean(n['median'] for n in now):.2%}, "
          f"mean worst {statistics.fmean(n['worst'] for n in now):.2%}, "
          f"mean tau-b {statistics.fmean(n['tau'] for n in now):.3f}; "
          f"{met} meet both targets (median <= {MEDIAN_ERROR_TARGET:.0%}, worst <= {WORST_ERROR_TARGET:.0%})")
    judged = [n for n in now if n["rounds_order"] is not None]
    if judged:
        print(f"{sum(n['rounds_order'] for n in judged)} of {len(judged)} runs of {min_rounds()} rounds or more: "
              f"the fit orders every pair the rounds order (sign test, p < {ORDER_ALPHA:g}) as the device does")
    print_pooled_order(summaries)
    pairs = [(s["now"], s["paired"]) for s in summaries if s.get("paired")]
    if pairs:
        print(f"paired, round by round, over the {len(pairs)} interleaved runs: mean median |error| "
              f"{statistics.fmean(p['median'] for _, p in pairs):.2%}, mean worst "
              f"{statistics.fmean(p['worst'] for _, p in pairs):.2%} (pooled over the same runs: "
              f"{statistics.fmean(n['median'] for n, _ in pairs):.2%}, "
              f"{statistics.fmean(n['worst'] for n, _ in pairs):.2%})")
    errors: dict[tuple[str, bool], list[float]] = {}
    for s in summaries:
        for label, error, extra in s["cases"]:
            errors.setdefault((label, extra), []).append(error)
    print(f"{'case':<62} {'runs':>4} {'mean':>7} {'median |e|':>10} {f'> {WORST_ERROR_TARGET:.0%}':>6}")
    for (label, extra), es in sorted(errors.items(), key=lambda item: item[0][1]):
        print(f"{label[:62] + (' (extra)' if extra else ''):<62} {len(es):>4} {statistics.fmean(es):>+7.1%} "
              f"{statistics.median(abs(e) for e in es):>10.1%} {sum(abs(e) > WORST_ERROR_TARGET for e in es):>6}")


if __name__ == "__main__":
    sys.exit(main())
