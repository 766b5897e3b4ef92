"""Where a run's time went, lane by lane: how long each kind of step kept its lane busy.

The critical path (:mod:`halsim.explain`) says what bounded the run; this says
what every lane did meanwhile — on a real device, the only account of time
there is. Readers are one group (``read``); copy queues and the import lane
are their own. Busy time counts overlapping steps of a lane once.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from halsim.explain import STEP_LANES
from halsim.engine import lane_key, lane_limit
from halsim.plan import Plan, Step
from halsim.trace import Span, Trace


@dataclass(frozen=True)
class LaneUse:
    lane: str  # "read" for every reader, else the lane's name ("copy/d0q1", "import/d0")
    op: str
    steps: int
    bytes: int
    first: float  # seconds since the run began
    last: float
    busy: float  # seconds with at least one such step running
    summed: float  # the steps' seconds added up (more than busy where they overlap)


@dataclass(frozen=True)
class CopyGaps:
    """When the device's copies ran: the stretches with none in flight."""

    before_first: float
    in_flight: float
    span: float  # from the first copy's start to the last one's end
    after_last: float
    longest_gap: float
    longest_gap_at: float


def busy_seconds(spans: Iterable[Span]) -> float:
    """Seconds covered by at least one span."""
    covered, end = 0.0, float("-inf")
    for s in sorted(spans, key=lambda s: s.start):
        if s.end > end:
            covered += s.end - max(s.start, end)
            end = s.end
    return covered


def lane_uses(trace: Trace) -> list[LaneUse]:
    """One row per lane and kind of step, in the order they first ran."""
    groups: dict[tuple[str, str], list[Span]] = defaultdict(list)
    for s in trace.spans:
        if s.lane.startswith(STEP_LANES):
            groups[("read" if s.lane.startswith("read/") else s.lane, s.op)].append(s)
    rows = [LaneUse(lane, op, len(spans), sum(s.nbytes for s in spans), min(s.start for s in spans),
                    max(s.end for s in spans), busy_seconds(spans), sum(s.seconds for s in spans))
            for (lane, op), spans in groups.items()]
    return sorted(rows, key=lambda r: (r.first, r.lane, r.op))


def copy_gaps(trace: Trace, seconds: float) -> CopyGaps | None:
    """When copies to or from the device ran in a run of ``seconds``; None without copies."""
    copies = sorted((s for s in trace.spans if s.lane.startswith("copy/")), key=lambda s: s.start)
    if not copies:
        return None
    gap, at, end = 0.0, copies[0].start, copies[0].end
    for s in copies[1:]:
        if s.start - end > gap:
            gap, at = s.start - end, end
        end = max(end, s.end)
    first = copies[0].start
    return CopyGaps(first, busy_seconds(copies), end - first, max(seconds - end, 0.0), gap, at)


@dataclass(frozen=True)
class DispatchDelay:
    """How long steps of one kind waited to start once they could have: their
    dependencies had ended and their lane had room. On a real device that wait
    is the engine's and the backend's own cost per step (noticing a completion,
    handing the next step to a thread, the thread starting it); a simulated run
    shows the platform's ``step_overhead`` here."""

    op: str
    steps: int
    median: float  # seconds
    p90: float
    worst: float
    summed: float


def _limit_group(step: Step, plan: Plan, serial: bool) -> tuple[tuple, int]:
    """The engine's lane of a step and how many of its steps it lets run at once."""
    if serial:
        return ("all",), 1
    key = lane_key(step)
    return key, max(1, lane_limit(plan, key))


def _most_at_once(spans: list[Span]) -> int:
    edges = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans], key=lambda e: (e[0], e[1]))
    level = most = 0
    for _, delta in edges:
        level += delta
        most = max(most, level)
    return most


def _room_since(starts: list[float], ends: list[float], events: list[float], limit: int, at: float,
                floor: float) -> float:
    """Since when, looking back from ``at`` but not past ``floor``, a lane had run fewer
    than ``limit`` steps (steps that start at ``at`` itself not counted)."""
    since = at
    for k in range(bisect.bisect_left(events, at) - 1, -1, -1):
        t = events[k]
        # From t to the next event, the lane ran the steps begun by t and not ended by t.
        if bisect.bisect_right(starts, t) - bisect.bisect_right(ends, t) >= limit:
            return since
        if t <= floor:
            return floor
        since = t
    return floor


def dispatch_delays(trace: Trace, plan: Plan) -> list[DispatchDelay]:
    """Per kind of step: the wait from the moment it could start to its start.

    A step could start when its last dependency had ended (one with none: when
    the run's first step began, so allocating buffers and staging is not counted)
    and its lane ran fewer steps than it can: the readers their number, a copy
    queue or the import lane as many as the engine lets in flight but no more than
    ever ran at once (a device may hand a queue's copies to one thread, which runs
    them in order). A read that waited for its slot to be pinned counts that wait.
    Steps the trace has no span for (a failed run) are left out."""
    spans: dict[int, Span] = {}
    for s in trace.spans:
        if s.lane.startswith(STEP_LANES) and s.step >= 0 and s.step not in spans:
            spans[s.step] = s
    serial = trace.meta.get("mode") == "serial"
    first = min((span.start for span in spans.values()), default=0.0)
    lanes: dict[tuple, list[Step]] = defaultdict(list)
    limits: dict[tuple, int] = {}
    for step in plan.steps:
        if step.id in spans:
            key, limits[key] = _limit_group(step, plan, serial)
            lanes[key].append(step)
    waits: dict[str, list[float]] = defaultdict(list)
    for key, members in lanes.items():
        limit = limits[key]
        if key[0] != "io":
            # A queue's copies (or the imports) may be handed to fewer threads than the
            # engine lets in flight, which then run in order: count what ran at once.
            limit = max(1, min(limit, _most_at_once([spans[m.id] for m in members])))
        starts = sorted(spans[m.id].start for m in members)
        ends = sorted(spans[m.id].end for m in members)
        events = sorted(starts + ends)
        for step in members:
            span = spans[step.id]
            ready = max((spans[d].end for d in step.deps if d in spans), default=first)
            since = _room_since(starts, ends, events, limit, span.start, ready)
            waits[span.op].append(max(0.0, span.start - max(ready, since)))
    rows = []
    for op, values in waits.items():
        values.sort()
        rows.append(DispatchDelay(op, len(values), statistics.median(values),
                                  values[max(0, math.ceil(0.9 * len(values)) - 1)], values[-1], sum(values)))
    return sorted(rows, key=lambda r: r.op)


__all__ = ["LaneUse", "CopyGaps", "DispatchDelay", "busy_seconds", "lane_uses", "copy_gaps", "dispatch_delays"]
