"""Chrome trace-event JSON of runs: opens in Perfetto (ui.perfetto.dev) and chrome://tracing.

Each run is a process, each lane a thread track, each span a complete ("X")
event, each memory counter a counter ("C") track. Spans that overlap on one
lane (several flows on a link, several direct reads) go to extra tracks named
``lane #2``, ``lane #3``..., since a track's slices must nest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from halsim.trace import Span, Trace


def _tracks(spans: list[Span]) -> list[list[Span]]:
    """Spread one lane's spans over as few tracks as keep each track free of overlaps."""
    tracks: list[list[Span]] = []
    ends: list[float] = []
    for s in sorted(spans, key=lambda s: (s.start, s.end)):
        for i, end in enumerate(ends):
            if s.start >= end:
                tracks[i].append(s)
                ends[i] = s.end
                break
        else:
            tracks.append([s])
            ends.append(s.end)
    return tracks


def trace_events(traces: Mapping[str, Trace]) -> list[dict]:
    events: list[dict] = []
    for pid, (label, trace) in enumerate(traces.items(), start=1):
        events.append({"ph": "M", "pid": pid, "name": "process_name", "args": {"name": label}})
        events.append({"ph": "M", "pid": pid, "name": "process_sort_index", "args": {"sort_index": pid}})
        by_lane: dict[str, list[Span]] = {}
        for s in trace.spans:
            by_lane.setdefault(s.lane, []).append(s)
        tid = 0
        for lane in sorted(by_lane):
            for n, track in enumerate(_tracks(by_lane[lane])):
                tid += 1
                name = lane if n == 0 else f"{lane} #{n + 1}"
                events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}})
                events.append({"ph": "M", "pid": pid, "tid": tid, "name": "thread_sort_index",
                               "args": {"sort_index": tid}})
                for s in track:
                    events.append({
                        "ph": "X", "pid": pid, "tid": tid, "name": s.op, "cat": lane.split("/")[0],
                        "ts": s.start * 1e6, "dur": s.seconds * 1e6,
                        "args": {"bytes": s.nbytes, "step": s.step, "device": s.device},
                    })
        for counter in sorted(trace.counters):
            for t, level in trace.counters[counter]:
                events.append({"ph": "C", "pid": pid, "name": f"memory {counter}", "ts": t * 1e6,
                               "args": {"bytes": level}})
    return events


def write_perfetto(traces: "Mapping[str, Trace] | Trace", path: "str | Path") -> Path:
    """Write ``{label: trace}`` (or one trace) as Chrome trace-event JSON."""
    if isinstance(traces, Trace):
        traces = {"run": traces}
    path = Path(path)
    body = {"traceEvents": trace_events(traces), "displayTimeUnit": "ms",
            "otherData": {label: {k: str(v) for k, v in t.meta.items() if k != "sim_bound"}
                          for label, t in traces.items()}}
    path.write_text(json.dumps(body, separators=(",", ":")))
    return path
