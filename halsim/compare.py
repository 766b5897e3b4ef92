"""Predicted against measured: each policy in the simulator and on a device, on the same file.

:func:`compare` simulates every case (a policy, warm or cold) on a Platform —
normally one ``halsim calibrate`` fitted to this device — and uploads the file
for real ``repeat`` times, then reports, per case, the predicted and the
median measured seconds, the error, the spread of the real runs, and peak
staging on both sides; over all cases, the median and worst error and whether
the simulator ranks the cases in the hardware's order.

Real runs go round after round over the cases (not one case repeated), so a
burst of load from elsewhere spoils one sample of many cases and the medians
drop it; within a round the warm cases, then the cold ones, run in a fresh
random order. Cold cases drop the file from the page cache before each run
(:mod:`halsim.pagecache`).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from halsim.device import Device
from halsim.lanes import lane_uses
from halsim.noise import TIE, NoiseFloor, noise_floor
from halsim.platform import Platform, load_platform
from halsim.policies import Policy, parse_policy
from halsim.report import Report
from halsim.request import UploadRequest
from halsim.roundorder import ORDER_ALPHA, min_rounds, round_order
from halsim.trace import Trace
from halsim.units import format_size

ProgressFn = Callable[[int, int, str], None]  # (runs done, runs in all, what runs now)

# Lanes of steps, which sim and real share; the simulator's resource lanes
# (storage, memcpy, link/...) have no real counterpart.
STEP_LANES = ("alloc/", "read/", "write/", "direct/", "import/", "copy/")


# The fidelity issue's targets for a comparison: the median and the worst |error| over its cases.
MEDIAN_ERROR_TARGET = 0.05
WORST_ERROR_TARGET = 0.15


def relative_spread(values: Sequence[float]) -> float:
    """Half the range of repeated values, relative to their median: 0 for one value or equal ones,
    infinite where they differ around a median of 0 (no ratio says how far)."""
    middle = statistics.median(values)
    half_range = (max(values) - min(values)) / 2
    if not middle:
        return math.inf if half_range else 0.0
    return half_range / middle


@dataclass(frozen=True)
class Case:
    """One policy on the file, from the page cache (warm) or from the drive (cold)."""

    policy: Policy
    cold: bool = False
    name: str = ""  # how the user wrote the policy (the canonical spec spells out every default)

    @property
    def label(self) -> str:
        return (self.name or self.policy.spec()) + (" (cold)" if self.cold else "")


def cases(policies: Sequence["str | Policy"], cache: str = "warm") -> list[Case]:
    """Each policy warm, cold, or ``both``."""
    if cache not in ("warm", "cold", "both"):
        raise ValueError(f"cache must be warm, cold or both, not {cache!r}")
    temperatures = {"warm": (False,), "cold": (True,), "both": (False, True)}[cache]
    return [Case(parse_policy(p), cold, p if isinstance(p, str) else "") for p in policies for cold in temperatures]


def _error(error: float) -> str:
    return f"{error:+.1%}" if abs(error) < 1 else f"{error:+.0%}"


@dataclass
class Row:
    case: Case
    predicted: Report
    measured: list[Report]  # one per repeat, in order

    @property
    def predicted_seconds(self) -> float:
        return self.predicted.seconds

    @property
    def seconds(self) -> float:
        """Median measured seconds."""
        return statistics.median(r.seconds for r in self.measured)

    @property
    def round_seconds(self) -> list[float]:
        """The real runs' seconds, round by round."""
        return [r.seconds for r in self.measured]

    @property
    def spread(self) -> float:
        """Half the range of the repeated real runs, relative to their median."""
        return relative_spread(self.round_seconds)

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted_seconds - self.seconds) / self.seconds if self.seconds else float("inf")

    @property
    def median_run(self) -> Report:
        """The real run whose time is the median (its trace stands for the case)."""
        ordered = sorted(self.measured, key=lambda r: r.seconds)
        return ordered[(len(ordered) - 1) // 2]

    @property
    def same_policy(self) -> bool:
        """Whether sim and device ran the same policy (after fallbacks)."""
        return all(r.policy == self.predicted.policy for r in self.measured)

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case.label, "policy": self.case.policy.spec(), "cold": self.case.cold,
                "ran": self.predicted.policy, "ran_real": self.median_run.policy,
                "predicted_seconds": self.predicted_seconds, "measured_seconds": self.seconds,
                "measured_runs": self.round_seconds, "spread": self.spread, "error": self.error,
                "predicted_peak_staging": self.predicted.peak_staging_bytes,
                "measured_peak_staging": self.median_run.peak_staging_bytes,
                # Where the time went on each side, lane by lane: a stored comparison can then
                # say which part of a run the simulator got wrong without its traces.
                "lanes": {"predicted": lane_rows(self.predicted), "measured": lane_rows(self.median_run)}}


def lane_rows(report: Report) -> list[dict[str, Any]]:
    """Where ``report``'s time went, lane by lane, as a stored comparison row keeps it (``lanes``)."""
    return [{"lane": u.lane, "op": u.op, "steps": u.steps, "busy": round(u.busy, 6), "summed": round(u.summed, 6)}
            for u in lane_uses(report.trace)]


class Misordered(NamedTuple):
    """A pair the device orders round by round (:mod:`halsim.roundorder`) that the simulator does not."""

    faster: str  # the case that ran faster in most rounds
    slower: str
    wins: int  # rounds in which ``faster`` ran faster
    rounds: int  # rounds the two did not tie
    predicted_equal: bool  # the simulator predicted a tie (else it put ``slower`` ahead)


@dataclass
class Ranking:
    agree: int  # pairs ordered the same way by the simulator and the device
    swapped: list[tuple[str, str, bool]]  # (faster in sim, faster for real, within the real runs' spread)
    tied: list[tuple[str, str, bool]]  # pairs predicted equal: (a, b, the device cannot tell them apart either)
    tau: float  # Kendall's tau-b: 1 = same order, -1 = reversed
    rounds: int = 0  # real runs a case, paired by round
    ordered_pairs: list[tuple[str, str]] = field(default_factory=list)  # (faster, slower): the device orders them
    misordered: list[Misordered] = field(default_factory=list)  # of those, the ones the simulator does not

    @property
    def ordered(self) -> int:
        """How many pairs the device orders round by round."""
        return len(self.ordered_pairs)

    @property
    def same_order(self) -> bool:
        """The simulator's order is the device's order of medians, pair for pair (a predicted tie
        passes where the real runs' spread cannot tell the pair apart either)."""
        return not self.swapped and all(noise for *_, noise in self.tied)

    @property
    def orders_as_rounds(self) -> bool | None:
        """Every pair the device orders round by round, the simulator orders the same way; None
        where too few rounds ran to order any pair."""
        return None if self.rounds < min_rounds() else not self.misordered

    @property
    def swapped_beyond_noise(self) -> int:
        return sum(1 for *_, noise in self.swapped if not noise)

    def describe(self) -> str:
        parts = [f"{self.agree} pair(s) in the same order"]
        if self.swapped:
            parts.append(f"{len(self.swapped)} swapped ({self.swapped_beyond_noise} beyond the spread of real runs)")
        if self.tied:
            distinct = sum(1 for *_, noise in self.tied if not noise)
            parts.append(f"{len(self.tied)} predicted equal ({distinct} distinct on the device)")
        verdict = "same order" if self.same_order else "not the same order"
        return f"{verdict}: {', '.join(parts)}; Kendall tau-b {self.tau:.2f}; {self.describe_rounds()}"

    def describe_rounds(self) -> str:
        """The verdict on the pairs the device orders round by round."""
        if self.orders_as_rounds is None:
            return (f"{self.rounds} round(s) cannot order a pair beyond chance "
                    f"({min_rounds()} or more can: --repeat)")
        head = (f"the device orders {self.ordered} pair(s) in {self.rounds} rounds "
                f"(sign test, p < {ORDER_ALPHA:g})")
        if not self.misordered:
            return f"{head}, all of them as the simulator does"
        misses = ", ".join(f"{m.faster} ahead of {m.slower} in {m.wins} of {m.rounds}"
                           + (" (predicted equal)" if m.predicted_equal else "") for m in self.misordered)
        return f"{head}; the simulator misorders {len(self.misordered)}: {misses}"


def rank(rows: Sequence[Row]) -> Ranking:
    """Does the simulator order the cases as the device does (pair by pair)? Both by the medians
    of the real runs and by the pairs the device orders round by round (:mod:`halsim.roundorder`)."""
    agree, swapped, tied, ordered, misordered = 0, [], [], [], []
    real_ties = 0
    rounds = min((len(r.round_seconds) for r in rows), default=0)
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            a, b = rows[i], rows[j]
            dp = a.predicted_seconds - b.predicted_seconds
            dm = a.seconds - b.seconds
            noise = abs(dm) <= a.spread * a.seconds + b.spread * b.seconds
            real_ties += dm == 0
            predicted_equal = abs(dp) <= TIE * max(a.predicted_seconds, b.predicted_seconds)
            if predicted_equal:
                tied.append((a.case.label, b.case.label, noise))
            elif dp * dm > 0:
                agree += 1
            elif dm != 0:
                sim_first = a if dp < 0 else b
                real_first = a if dm < 0 else b
                swapped.append((sim_first.case.label, real_first.case.label, noise))
            by_round = round_order(a.round_seconds[:rounds], b.round_seconds[:rounds])
            if by_round.ordered:
                faster, slower = (a, b) if by_round.first_faster else (b, a)
                ordered.append((faster.case.label, slower.case.label))
                if predicted_equal or faster.predicted_seconds > slower.predicted_seconds:
                    wins = by_round.first_wins if faster is a else by_round.rounds - by_round.first_wins
                    misordered.append(Misordered(faster.case.label, slower.case.label, wins, by_round.rounds,
                                                 predicted_equal))
    pairs = len(rows) * (len(rows) - 1) / 2
    scale = ((pairs - len(tied)) * (pairs - real_ties)) ** 0.5
    tau = (agree - len(swapped)) / scale if scale else 1.0
    return Ranking(agree, swapped, tied, tau, rounds, ordered, misordered)


@dataclass
class Comparison:
    rows: list[Row]
    device: str
    platform: str
    file: str
    file_bytes: int
    repeat: int
    mode: str
    host: str = ""
    when: str = ""
    notes: list[str] = field(default_factory=list)
    running_order: list[list[str]] = field(default_factory=list)  # each round's cases, in the order they ran

    @property
    def errors(self) -> list[float]:
        return [abs(r.error) for r in self.rows]

    @property
    def median_error(self) -> float:
        return statistics.median(self.errors) if self.rows else 0.0

    @property
    def worst_error(self) -> float:
        return max(self.errors, default=0.0)

    @property
    def ranking(self) -> Ranking:
        return rank(self.rows)

    @property
    def noise_floor(self) -> NoiseFloor | None:
        """How a perfect model would score against these real runs (None for one run a case)."""
        return noise_floor([[r.seconds for r in row.measured] for row in self.rows],
                           (MEDIAN_ERROR_TARGET, WORST_ERROR_TARGET))

    def summary(self) -> str:
        floor = self.noise_floor
        return (f"median |error| {self.median_error:.1%}, worst {_error(self.worst_error).lstrip('+')}; "
                f"ranking: {self.ranking.describe()}" + (f"; {floor.describe()}" if floor else ""))

    def to_dict(self) -> dict[str, Any]:
        ranking = self.ranking
        return {"device": self.device, "platform": self.platform, "file": self.file, "file_bytes": self.file_bytes,
                "repeat": self.repeat, "mode": self.mode, "host": self.host, "when": self.when,
                "rows": [r.to_dict() for r in self.rows], "median_abs_error": self.median_error,
                "worst_abs_error": self.worst_error, "same_order": ranking.same_order, "kendall_tau": ranking.tau,
                "pairs_agree": ranking.agree,
                "swapped": [{"sim_faster": a, "real_faster": b, "within_spread": n} for a, b, n in ranking.swapped],
                "predicted_equal": [{"a": a, "b": b, "within_spread": n} for a, b, n in ranking.tied],
                "orders_as_rounds": ranking.orders_as_rounds, "pairs_ordered_by_rounds": ranking.ordered,
                "misordered": [m._asdict() for m in ranking.misordered],
                "noise_floor": floor.to_dict() if (floor := self.noise_floor) else None,
                "notes": list(self.notes), "running_order": self.running_order}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def markdown(self) -> str:
        """The table as Markdown (for docs/fidelity.md)."""
        lines = ["| case | predicted s | measured s (median) | spread | error | peak staging sim / real |",
                 "|---|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            ran = "" if r.predicted.policy == r.case.policy.spec() else f" → {r.predicted.policy}"
            lines.append(f"| `{r.case.label}`{ran} | {r.predicted_seconds:.4g} | {r.seconds:.4g} | ±{r.spread:.0%} | "
                         f"{_error(r.error)} | {format_size(r.predicted.peak_staging_bytes)} / "
                         f"{format_size(r.median_run.peak_staging_bytes)} |")
        lines += ["", self.summary() + "."]
        lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def table(self):
        """A rich Table of the cases."""
        from rich.table import Table

        table = Table(title=f"{self.device} vs {self.platform}: {Path(self.file).name} "
                            f"({format_size(self.file_bytes)}), {self.repeat} real run(s) each", title_justify="left")
        for column in ("case", "sim s", "real s", "spread", "error", "peak staging"):
            if column == "case":
                table.add_column(column, overflow="fold", min_width=14)  # a long spec wraps; it is never cut
            else:
                table.add_column(column, justify="right", no_wrap=column != "peak staging")
        for r in self.rows:
            label = r.case.label if r.predicted.policy == r.case.policy.spec() else \
                f"{r.case.label} → {r.predicted.policy}"
            colour = "green" if abs(r.error) <= MEDIAN_ERROR_TARGET else \
                "yellow" if abs(r.error) <= WORST_ERROR_TARGET else "red"
            sim, real = r.predicted.peak_staging_bytes, r.median_run.peak_staging_bytes
            staging = format_size(sim) if sim == real else f"{format_size(sim)} sim, {format_size(real)} real"
            table.add_row(label, f"{r.predicted_seconds:.4g}", f"{r.seconds:.4g}", f"±{r.spread:.0%}",
                          f"[{colour}]{_error(r.error)}[/]", staging)
        return table

    def traces(self) -> dict[str, Trace]:
        """Simulated and real trace of every case, labelled for Perfetto (one process each)."""
        out: dict[str, Trace] = {}
        for r in self.rows:
            out[f"sim · {r.case.label}"] = r.predicted.trace
            out[f"real · {r.case.label}"] = reader_lanes_in_order(r.median_run.trace)
        return out

    def write_perfetto(self, path: "str | os.PathLike") -> Path:
        from halsim.perfetto import write_perfetto

        return write_perfetto(self.traces(), path)

    def plot(self, path: "str | os.PathLike") -> Path:
        """PNG: each case's simulated timeline above its real one, lane for lane, on one time axis."""
        return plot_pairs([(r.case.label, r.predicted.trace, reader_lanes_in_order(r.median_run.trace))
                           for r in self.rows], path)


def reader_lanes_in_order(trace: Trace) -> Trace:
    """The trace with its reader lanes renamed ``read/0``, ``read/1``... in order of first use.

    A real device names a reader lane after its worker thread, whose number
    counts every worker of the run (copy queues too); the simulator numbers
    readers from 0. Renaming lines the two up lane for lane.
    """
    first: dict[str, float] = {}
    for s in trace.spans:
        if s.lane.startswith("read/"):
            first[s.lane] = min(first.get(s.lane, s.start), s.start)
    names = {lane: f"read/{k}" for k, lane in enumerate(sorted(first, key=lambda lane: (first[lane], lane)))}
    if all(old == new for old, new in names.items()):
        return trace
    spans = [s._replace(lane=names.get(s.lane, s.lane)) for s in trace.spans]
    return Trace(trace.origin, spans, trace.counters, trace.meta)


def plot_pairs(pairs: Sequence[tuple[str, Trace, Trace]], path: "str | os.PathLike") -> Path:
    from halsim.plotting import _OP_COLOURS, _lane_order, _pyplot, _time_unit

    plt = _pyplot()
    path = Path(path)
    heights = []
    layouts = []
    for label, sim, real in pairs:
        lanes = sorted({s.lane for t in (sim, real) for s in t.spans if s.lane.startswith(STEP_LANES)},
                       key=_lane_order)
        layouts.append(lanes)
        heights += [max(len(lanes), 1) * 0.25 + 0.6] * 2
    fig, axes = plt.subplots(len(heights), 1, figsize=(9, sum(heights) + 0.5), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for k, ((label, sim, real), lanes) in enumerate(zip(pairs, layouts)):
        end = max(sim.end, real.end) or 1.0
        scale, unit = _time_unit(end)
        row = {lane: i for i, lane in enumerate(lanes)}
        for side, (name, trace) in enumerate((("sim", sim), ("real", real))):
            ax = axes[2 * k + side][0]
            bars: dict[tuple[int, str], list[tuple[float, float]]] = {}
            for s in trace.spans:
                if s.lane in row:
                    width = max(s.seconds, end * 1e-3) * scale  # a bind still shows
                    bars.setdefault((row[s.lane], s.op), []).append((s.start * scale, width))
            for (y, op), spans in bars.items():
                ax.broken_barh(spans, (y - 0.4, 0.8), facecolors=_OP_COLOURS.get(op, "#999999"),
                               edgecolors="white", linewidth=0.4)  # back-to-back steps stay apart
            ax.set_yticks(range(len(lanes)), lanes, fontsize=6)
            ax.set_ylim(len(lanes) - 0.5, -0.5)
            ax.set_xlim(0, end * scale)
            ax.grid(axis="x", alpha=0.3)
            ax.set_title(f"{name} · {label}: {trace.end:.4g} s", fontsize=8, loc="left")
            ax.set_xlabel(f"time ({unit})", fontsize=7) if side == 1 else ax.tick_params(labelbottom=False)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _policy_notes(rows: Sequence[Row]) -> list[str]:
    return [f"{r.case.label}: the simulator ran {r.predicted.policy}, the device {r.median_run.policy} "
            "(the platform's caps differ from the device's)" for r in rows if not r.same_policy]


def predict(source: "str | os.PathLike | UploadRequest", platform: Platform, todo: Sequence[Case],
            mode: str = "overlapped") -> list[Report]:
    """Each case simulated on ``platform``: ``source`` (a file, a workload or a request) warm or cold."""
    import halsim

    return [halsim.simulate(source, platform, c.policy, page_cached=not c.cold, mode=mode) for c in todo]


def pooled(parts: Sequence[Comparison], platform: "str | os.PathLike | Platform") -> Comparison:
    """Comparisons of the same cases run one after another (rounds interleaved with rounds of
    calibration), as one: every real run of each case, predicted anew on ``platform``."""
    if not parts:
        raise ValueError("nothing to pool")
    first = parts[0]
    labels = [r.case.label for r in first.rows]
    for part in parts[1:]:
        if [r.case.label for r in part.rows] != labels or part.file != first.file or part.mode != first.mode:
            raise ValueError("pooled comparisons must run the same cases on the same file in the same mode")
    spec = load_platform(platform)
    cases = [r.case for r in first.rows]
    predicted = predict(first.file, spec, cases, first.mode)
    rows = [Row(case, p, [run for part in parts for run in part.rows[k].measured])
            for k, (case, p) in enumerate(zip(cases, predicted))]
    notes = _policy_notes(rows)  # the parts' notes were about the platform each was run against
    return Comparison(rows, first.device, spec.name, first.file, first.file_bytes, sum(p.repeat for p in parts),
                      first.mode, host=first.host, when=first.when, notes=notes,
                      running_order=[order for part in parts for order in part.running_order])


def compare(
    path: "str | os.PathLike",
    device: "str | Device",
    platform: "str | os.PathLike | Platform",
    runs: Sequence["Case | str | Policy"],
    *,
    repeat: int = 3,
    mode: str = "overlapped",
    warmup: bool = True,
    progress: ProgressFn | None = None,
    shuffle: bool = True,
    seed: int | None = None,
) -> Comparison:
    """Simulate and run every case on ``path``; ``runs`` are Cases or policies (warm).

    ``shuffle``: each round runs the warm cases, then the cold ones, each group in a fresh random
    order (``random.Random(seed)``), so no case always runs right after the same one and a case's
    place in the round cannot order it against another in the rounds (:mod:`halsim.roundorder`);
    the file is still warmed once a round. False: every round in the order given."""
    import halsim
    from halsim import pagecache
    from halsim.calibrate import host_description
    from halsim.registry import get_device

    if repeat < 1:
        raise ValueError("repeat must be at least 1")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    target = get_device(device) if isinstance(device, str) else device
    spec = load_platform(platform)
    todo = [r if isinstance(r, Case) else Case(parse_policy(r), name=r if isinstance(r, str) else "") for r in runs]
    if not todo:
        raise ValueError("nothing to compare: give at least one policy")
    predicted = predict(path, spec, todo, mode)
    measured: list[list[Report]] = [[] for _ in todo]
    notes: list[str] = []
    cached = False
    total = len(todo) * (repeat + (1 if warmup else 0))
    done = 0

    def run(case: Case) -> Report:
        nonlocal cached
        if case.cold:
            pagecache.drop(path)
            cached = False
        elif not cached:
            pagecache.warm(path, fresh=True)  # the same page-cache state every round (see pagecache.warm)
            cached = True
        with halsim.upload(path, target, case.policy, mode=mode) as done_upload:
            report = done_upload.report
        # A cold case leaves the file cached as its readers brought it in, not as a warm case
        # expects it: on the lent H200 VM the first warm upload after one ran 14-20% slower than
        # after a fresh warm (benchmarks/warm_state.py), so the next warm case warms afresh.
        cached = not case.cold
        return report

    shuffler = random.Random(seed)

    def running_order(round_: int) -> list[int]:
        given = list(range(len(todo)))
        if not shuffle or round_ < 0:
            return given
        warm, cold = [k for k in given if not todo[k].cold], [k for k in given if todo[k].cold]
        shuffler.shuffle(warm)
        shuffler.shuffle(cold)
        return warm + cold

    ran: list[list[str]] = []
    # Round 0 (optional) warms code paths, threads and drivers for each case; its runs are dropped.
    for round_ in range(-1 if warmup else 0, repeat):
        order = running_order(round_)
        if round_ >= 0:
            ran.append([todo[k].label for k in order])
        for k in order:
            case = todo[k]
            if progress:
                progress(done, total, case.label)
            report = run(case) if not (round_ < 0 and case.cold) else run(Case(case.policy))  # warm-ups: warm
            if round_ >= 0:
                measured[k].append(report)
            done += 1
    if progress:
        progress(total, total, "done")
    rows = [Row(c, p, m) for c, p, m in zip(todo, predicted, measured)]
    notes += _policy_notes(rows)
    return Comparison(rows, target.name, spec.name, path, os.path.getsize(path), repeat, mode,
                      host=host_description(),
                      when=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), notes=notes,
                      running_order=ran)


__all__ = ["Case", "cases", "Row", "Ranking", "rank", "TIE", "Comparison", "compare", "pooled", "predict", "lane_rows",
           "plot_pairs", "STEP_LANES", "reader_lanes_in_order"]
