"""Where a run's time went, lane by lane: how long each kind of step kept its lane busy.

The critical path (:mod:`halsim.explain`) says what bounded the run; this says
what every lane did meanwhile — on a real device, the only account of time
there is. Readers are one group (``read``); copy queues and the import lane
are their own. Busy time counts overlapping steps of a lane once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from halsim.explain import STEP_LANES
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


__all__ = ["LaneUse", "CopyGaps", "busy_seconds", "lane_uses", "copy_gaps"]
