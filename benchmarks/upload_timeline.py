"""Where a real upload's wall time goes: per lane, busy time, first and last step, idle gaps.

    python benchmarks/upload_timeline.py FILE [--device cuda:0] [--policy SPEC ...] [--repeat 3] [--json OUT.json]

Runs each policy ``--repeat`` times (after one warm-up run) with the file in the
page cache and, for the median run, prints every lane's share of the wall time
(reads, each copy queue, the import lane's registrations and releases), how
long steps waited to start once they could (the engine's and backend's cost per step), what
happened before the first copy began and after the last one ended, the longest
stretch with no copy in flight, and the critical path (``Report.explain``).
``--json`` keeps the median runs' reports with their traces. (``halsim upload
--lanes`` prints the same for one run: :mod:`halsim.lanes`.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import halsim
from halsim import pagecache
from halsim.lanes import copy_gaps, dispatch_delays, lane_uses

DEFAULT_POLICIES = ("import:piece=256MiB,queues=2,release=at_end",
                    "streaming:chunk=16MiB,slots=16,readers=12,queues=2")


def describe(report: halsim.Report) -> str:
    wall = report.seconds
    lines = [f"{report.policy}: {wall:.4f} s, {report.gb_per_s:.2f} GB/s",
             f"  {'lane':<14} {'op':<14} {'steps':>5} {'GiB':>6} {'first s':>8} {'last s':>8} "
             f"{'busy s':>7} {'busy %':>6} {'summed s':>8}"]
    for r in lane_uses(report.trace):
        lines.append(f"  {r.lane:<14} {r.op:<14} {r.steps:>5} {r.bytes / 2**30:>6.2f} {r.first:>8.4f} "
                     f"{r.last:>8.4f} {r.busy:>7.4f} {100 * r.busy / wall:>5.0f}% {r.summed:>8.4f}")
    gaps = copy_gaps(report.trace, wall)
    if gaps is not None:
        lines.append(f"  before the first copy {gaps.before_first:.4f} s; copies in flight {gaps.in_flight:.4f} s of "
                     f"{gaps.span:.4f}; after the last copy {gaps.after_last:.4f} s; longest gap with no copy "
                     f"{gaps.longest_gap * 1e3:.2f} ms at {gaps.longest_gap_at:.4f} s")
    for d in dispatch_delays(report.trace, report.plan):
        lines.append(f"  {d.op:<14} started {d.median * 1e6:.0f} us (median), {d.p90 * 1e6:.0f} us (p90), "
                     f"{d.worst * 1e3:.2f} ms (worst) after it could; {d.summed:.4f} s over {d.steps} steps")
    lines.append("  " + report.explain().replace("\n", "\n  "))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--policy", action="append", help="policy spec (repeatable); default: import and a ring")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the median runs' reports, traces included")
    args = parser.parse_args()
    if not args.file.is_file():
        parser.error(f"{args.file}: no such file")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    device = halsim.get_device(args.device)
    pagecache.warm(args.file)
    kept = []
    for policy in args.policy or DEFAULT_POLICIES:
        runs = []
        for k in range(args.repeat + 1):
            with halsim.upload(args.file, device, policy) as done:
                if k:  # the first run warms code paths, threads and the driver
                    runs.append(done.report)
        runs.sort(key=lambda r: r.seconds)
        median = runs[(len(runs) - 1) // 2]
        print(describe(median))
        print(f"  runs: {', '.join(f'{r.seconds:.4f}' for r in runs)} s (median {statistics.median(r.seconds for r in runs):.4f})",
              flush=True)
        body = median.to_dict()
        body["trace"] = {"spans": [s._asdict() for s in median.trace.spans], "counters": median.trace.counters}
        body["runs"] = [r.seconds for r in runs]
        kept.append(body)
    if args.json:
        args.json.write_text(json.dumps(kept, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
