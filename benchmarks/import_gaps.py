"""The import lane's hand-overs in stored upload timelines: the gap before each registration or
release, by what ran on the lane before it.

    python benchmarks/import_gaps.py TIMELINE.json ... [--platform FITTED.json]
    python benchmarks/import_gaps.py --probes RUN.raw.json ...

Reads ``upload_timeline.py --json`` files (each policy's median real run with its trace) and
prints, per policy, the number, median and sum of the import lane's gaps keyed by the lane's step
before and after (``import>unimport``) and by whether a copy started during the gap (``+copy``),
then each step's median time. With ``--platform`` (a fidelity run's fitted JSON or a platform
TOML) the simulator's run of the same policy on the same file layout is printed below it.
A gap with no copy starting in it is the lane's turn-around (and, for a step gated on the one
before, the engine's); one with copies starting is the lane waiting on them.

``--probes`` reads fidelity runs instead (``fidelity_gpu.py``'s raw or fitted JSON) and prints
their calibration's import-upload probes, one line each (one tensor a window, and four since
2026-12-05): the lane's median gap and the median registration, measured (median of the rounds)
and simulated on the run's fitted platform, where there is one.
"""

from __future__ import annotations

import argparse
import bisect
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from halsim.calibrate import Measurements
from halsim.calibrate import predict as predict_probe
from halsim.compare import cases
from halsim.compare import predict as predict_cases
from halsim.platform import Platform, load_platform
from halsim.request import UploadRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from case_lanes import platform_of  # noqa: E402  (stored runs, as read)
from fidelity_replay import layouts, read_json  # noqa: E402

LANE_OPS = ("import", "unimport")


def lane_gaps(spans: list[dict]) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The import lane's gaps in seconds keyed ``BEFORE>AFTER`` (``+copy`` where a copy started
    during the gap) and its steps' times keyed by op."""
    lane = sorted((s for s in spans if s["lane"].startswith("import/") and s["op"] in LANE_OPS),
                  key=lambda s: s["start"])
    copy_starts = sorted(s["start"] for s in spans if s["lane"].startswith("copy/"))
    gaps: dict[str, list[float]] = defaultdict(list)
    for a, b in zip(lane, lane[1:]):
        copied = bisect.bisect_right(copy_starts, b["start"]) > bisect.bisect_left(copy_starts, a["end"])
        gaps[f"{a['op']}>{b['op']}{'+copy' if copied else ''}"].append(b["start"] - a["end"])
    times: dict[str, list[float]] = defaultdict(list)
    for s in lane:
        times[s["op"]].append(s["end"] - s["start"])
    return gaps, times


def line(label: str, seconds: float, spans: list[dict]) -> str:
    gaps, times = lane_gaps(spans)
    parts = [f"{key} {len(v)}x {statistics.median(v) * 1e3:.3f} ({sum(v) * 1e3:.1f})"
             for key, v in sorted(gaps.items())]
    parts += [f"{op} {statistics.median(v) * 1e3:.2f}" for op, v in sorted(times.items())]
    return f"  {label:<5} {seconds * 1e3:7.1f} ms  " + "  ".join(parts)


def fidelity_request(nbytes: int) -> UploadRequest | None:
    """The request of the fidelity_gpu.py file layout that uploads ``nbytes`` (None: no such layout)."""
    requests = (workload.request() for workload in layouts())
    return next((r for r in requests if sum(t.length for t in r.transfers) == nbytes), None)


def simulated(policy: str, nbytes: int, platform: Platform) -> tuple[float, list[dict]] | None:
    """The simulator's run of ``policy`` on the fidelity file layout of ``nbytes`` (None: not that layout)."""
    request = fidelity_request(nbytes)
    if request is None:
        return None
    report = predict_cases(request, platform, cases([policy]))[0]
    return report.seconds, [{"lane": s.lane, "op": s.op, "start": s.start, "end": s.end} for s in report.trace.spans]


def probe_lines(path: Path) -> list[str]:
    """A fidelity run's import-upload probes: gap and registration, measured and simulated (ms)."""
    try:
        body = json.loads(path.read_text())
        measurements = Measurements.from_dict(body["calibration"]["measurements"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"{path}: not a fidelity run with its calibration ({err})")
    platform = platform_of(path, body)
    lines = []
    for pt in measurements.of("register_in_upload"):
        if "handover" not in pt.samples:
            continue  # a run from before the gaps were recorded
        line = (f"  {pt.probe.label:<34} gap {pt.value('handover') * 1e3:.3f}  "
                f"registration {pt.value() * 1e3:.2f}")
        if platform is not None:
            sim = predict_probe(platform, pt.probe, measurements.config.scratch)
            line += f"   simulated: gap {sim['handover'] * 1e3:.3f}  registration {sim[pt.probe.bench] * 1e3:.2f}"
        lines.append(line)
    return lines or ["  no import-upload probe with its gaps in this run"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("timelines", nargs="+", type=Path, help="upload_timeline.py --json files (with --probes: "
                        "fidelity runs)")
    parser.add_argument("--platform", type=Path, help="simulate each policy on this fitted platform too")
    parser.add_argument("--probes", action="store_true", help="the files are fidelity runs: print their "
                        "import-upload probes' gaps, measured and simulated")
    args = parser.parse_args()
    if args.probes:
        print("import-upload probes, ms: the import lane's median gap and median registration")
        for path in args.timelines:
            print(path.name)
            print("\n".join(probe_lines(path)))
        return 0
    platform = None
    if args.platform is not None:  # a fitted run (its own platform, or the fitted JSON beside it), or a TOML
        platform = platform_of(args.platform, read_json(args.platform)) if args.platform.suffix == ".json" \
            else load_platform(args.platform)
    print("gaps: count x median ms (sum) before a step, keyed by the lane's step before > after (+copy: a copy "
          "started in the gap); then steps' median ms")
    for path in args.timelines:
        try:
            runs = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(f"{path}: {err}")
        wanted = {"policy", "seconds", "bytes", "trace"}
        if not isinstance(runs, list) or not all(isinstance(r, dict) and wanted <= r.keys() for r in runs):
            raise SystemExit(f"{path}: not an upload_timeline.py --json file (a list of runs with their traces)")
        for run in runs:
            print(f"{path.name}: {run['policy']} ({run['bytes'] / 2**30:.2f} GiB)")
            print(line("real", run["seconds"], run["trace"]["spans"]))
            sim = simulated(run["policy"], run["bytes"], platform) if platform else None
            if sim is not None:
                print(line("sim", *sim))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
