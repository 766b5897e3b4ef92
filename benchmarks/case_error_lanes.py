"""Where a case's error lies, lane by lane: real minus simulated busy time of each kind of step.

    python benchmarks/case_error_lanes.py RUN.json ... --case LABEL [--case LABEL ...]

A fidelity_gpu.py run keeps, for each case, where its median real run spent its
time lane by lane (``lanes``). For every run given and every case asked for,
this prints, in milliseconds, the real time minus the simulated one (the
simulator on the run's fitted platform: its own, or the ``RUN.fitted.json``
beside a raw run), then the same difference for the busy time of each kind of
lane and step (lanes of a kind added up: ``copy/d0q0`` and ``copy/d0q1`` are
``copy``), and for the import lane, whose registrations and releases take
turns on one thread, the time it stood idle (the case's time less its alloc,
registrations and releases). The mean over the runs comes last. A case whose
error sits in one kind of step names the part of the model that misses it;
two parts that miss both ways can cancel in one case and not in another
(`benchmarks/case_lanes.py` compares two cases as ratios instead). A real
copy's span starts when its thread takes it, before a registration that holds
the driver may let it be queued; a simulated one's when it is queued: copies
out of imported memory are busier for real by the time they wait.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from halsim.compare import lane_rows, predict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from case_lanes import kinds, runs_and_cases, stored_run  # noqa: E402  (stored runs, lanes by kind)
from fidelity_replay import stored_case  # noqa: E402

# What the import lane's idle time leaves out: its registrations and releases, and the device
# buffers' allocation, which an upload makes first, before the lane's first step (one device).
NOT_IDLE = (("alloc", "alloc"), ("import", "import"), ("import", "unimport"))


def parts(seconds: float, rows: list[dict]) -> dict[str, float]:
    """A run's time, its busy time by kind of lane and step (``KIND OP``), and the import lane's idle
    time where it has one."""
    busy = {key: time for key, (_, time) in kinds(rows, "busy").items()}
    out = {"time": seconds, **{f"{kind} {op}": time for (kind, op), time in busy.items()}}
    if ("import", "import") in busy:
        out["import idle"] = seconds - sum(busy.get(key, 0.0) for key in NOT_IDLE)
    return out


def error_lanes(path: Path, case: str) -> dict[str, float] | None:
    """Real minus simulated seconds for ``case`` in the run at ``path``, part by part; None where the run
    lacks the case, its lanes, or a fitted platform."""
    rows, platform, workload = stored_run(path)
    row = rows.get(case)
    if row is None or "lanes" not in row or platform is None or workload is None:
        return None
    real = parts(statistics.median(row["measured_runs"]), row["lanes"]["measured"])
    report = predict(workload.request(), platform, [stored_case(row)])[0]
    simulated = parts(report.seconds, lane_rows(report))
    return {name: real.get(name, 0.0) - simulated.get(name, 0.0) for name in dict.fromkeys([*real, *simulated])}


def main() -> int:
    args = runs_and_cases(__doc__.split("\n\n")[0], "repeatable").parse_args()
    missing = 0
    for case in args.case:
        got = {}
        for path in args.runs:
            errors = error_lanes(path, case)
            if errors is None:
                print(f"{path.name}: lacks {case!r}, its lanes or a fitted platform; skipped")
            else:
                got[path.name] = errors
        if not got:
            print(f"{case}: no run has it with its lanes and a fitted platform")
            missing += 1
            continue
        names = sorted(dict.fromkeys(n for errors in got.values() for n in errors), key=lambda n: (n != "time", n))
        print(f"\n{case}: real minus simulated, ms (the time, then busy time by kind of lane and step)")
        print(f"{'run':<52} " + " ".join(f"{n:>18}" for n in names))
        for run, errors in got.items():
            print(f"{run[:52]:<52} " + " ".join(f"{1e3 * errors.get(n, 0.0):>+18.1f}" for n in names))
        print(f"{f'mean over {len(got)}':<52} "
              + " ".join(f"{1e3 * statistics.fmean(e.get(n, 0.0) for e in got.values()):>+18.1f}" for n in names))
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
