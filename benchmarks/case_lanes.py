"""Two cases of stored fidelity runs side by side, lane by lane: what makes one faster than the other.

    python benchmarks/case_lanes.py RUN.json ... --case A --case B

A fidelity_gpu.py run keeps, for each case, where its median real run spent
its time lane by lane (``lanes``: readers as one group, each copy queue, the
import lane). For every run given that has both cases (scored or ``--extra``),
this prints B over A: the time (median real runs), and per lane and kind of
step the time per step (and the steps, where their number differs). The same ratios
come from the simulator on the run's fitted platform (the run's own, or the
``RUN.fitted.json`` beside a raw run; none: not simulated), so a ratio the
hardware shows and the simulator does not names the part of the model that
misses it. Lanes are grouped by kind (``copy/d0q0`` and ``copy/d0q1`` are
``copy``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from halsim.compare import lane_rows, predict
from halsim.platform import Platform
from halsim.workloads import Workload

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_replay import fitted_beside, layout_of, read_json, stored_case  # noqa: E402  (stored runs, as read)

Kinds = dict[tuple[str, str], tuple[int, float]]  # (lane kind, op) -> (steps, summed seconds)


def kinds(rows: list[dict], time: str = "summed") -> Kinds:
    """A stored row's lanes (``lanes.measured``), by kind of lane and step: their steps and their
    ``time`` (``summed``: every step's own; ``busy``: while any ran) added up."""
    out: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
    for row in rows:
        got = out[(row["lane"].split("/")[0], row["op"])]
        got[0] += row["steps"]
        got[1] += row[time]
    return {key: (steps, summed) for key, (steps, summed) in out.items()}


def ratios(a: tuple[float, Kinds], b: tuple[float, Kinds]) -> dict[str, float]:
    """B over A: ``time``, and for each kind both ran, ``KIND OP per step`` (and ``KIND OP steps``
    where B ran a different number of them)."""
    out = {"time": b[0] / a[0]}
    for key in a[1].keys() & b[1].keys():
        (na, sa), (nb, sb) = a[1][key], b[1][key]
        if na and nb and sa > 0 and sb > 0:
            out[f"{key[0]} {key[1]} per step"] = (sb / nb) / (sa / na)
            if nb != na:
                out[f"{key[0]} {key[1]} steps"] = nb / na
    return out


def platform_of(path: Path, body: dict) -> Platform | None:
    """The run's fitted platform: its own, or that of the RUN.fitted.json beside a raw run."""
    stored = body.get("calibration", {}).get("platform")
    beside = fitted_beside(path) if stored is None else None
    if beside is not None:
        stored = read_json(beside)["calibration"]["platform"]
    return Platform.model_validate(stored) if stored is not None else None


def stored_run(path: Path) -> tuple[dict[str, dict], Platform | None, Workload | None]:
    """A fidelity run's rows by case (scored and ``--extra``), its fitted platform and its file's
    layout (None where the run lacks them)."""
    body = read_json(path)
    comparison = body.get("comparison")
    if not comparison:
        raise SystemExit(f"{path}: no comparison in it (want a fidelity_gpu.py run)")
    rows = {r["case"]: r for r in comparison["rows"] + (body.get("extra") or {}).get("rows", [])}
    workload = layout_of(comparison["file_bytes"]) if "file_bytes" in comparison else None
    return rows, platform_of(path, body), workload


def compare_run(path: Path, case_a: str, case_b: str) -> tuple[dict[str, float], dict[str, float] | None] | None:
    """B over A in ``path``, real and simulated (None where the run lacks a platform); None if the
    run lacks either case or its lanes."""
    rows, platform, workload = stored_run(path)
    if case_a not in rows or case_b not in rows or not all("lanes" in rows[c] for c in (case_a, case_b)):
        return None
    pair = [rows[case_a], rows[case_b]]
    real = [(statistics.median(row["measured_runs"]), kinds(row["lanes"]["measured"])) for row in pair]
    if platform is None or workload is None:
        return ratios(*real), None
    reports = predict(workload.request(), platform, [stored_case(row) for row in pair])
    return ratios(*real), ratios(*((report.seconds, kinds(lane_rows(report))) for report in reports))


def runs_and_cases(description: str, cases_help: str) -> argparse.ArgumentParser:
    """The arguments of the scripts that read stored runs case by case: the runs, and ``--case`` labels."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs", type=Path, nargs="+", help="fidelity_gpu.py runs (RUN.json or RUN.raw.json)")
    parser.add_argument("--case", action="append", required=True,
                        help=f"a case's label, as the run's table names it; {cases_help}")
    return parser


def main() -> int:
    parser = runs_and_cases(__doc__.split("\n\n")[0], "give two: A, then B")
    args = parser.parse_args()
    if len(args.case) != 2:
        parser.error("give --case twice: A, then B (the ratios are B over A)")
    case_a, case_b = args.case
    real_all, sim_all = [], []
    for path in args.runs:
        got = compare_run(path, case_a, case_b)
        if got is None:
            print(f"{path.name}: lacks one of the cases, or their lanes; skipped")
            continue
        real, sim = got
        real_all.append(real)
        if sim is not None:
            sim_all.append(sim)
        print(f"{path.name}: time {real['time']:.3f} real" + (f", {sim['time']:.3f} simulated" if sim else ""))
    if not real_all:
        print("no run has both cases with their lanes")
        return 1
    print(f"\nB over A, {case_b} over {case_a}: mean (min-max) over {len(real_all)} runs, "
          f"simulated over the {len(sim_all)} with a fitted platform")
    print(f"{'':<24} {'real':>22} {'simulated':>22}")
    names = list(dict.fromkeys(k for r in real_all for k in r))
    for name in sorted(names, key=lambda k: (k != "time", k)):
        cells = []
        for table in (real_all, sim_all):
            values = [r[name] for r in table if name in r]
            cells.append(f"{statistics.mean(values):.3f} ({min(values):.2f}-{max(values):.2f})" if values else "-")
        print(f"{name:<24} {cells[0]:>22} {cells[1]:>22}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
