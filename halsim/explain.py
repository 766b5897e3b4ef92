"""Which resource bounded a run, and for what share of its time.

The run's time is the length of its *critical path*: walking back from the
step that finished last, each step on the path was started by the one that
finished just before it began (a dependency, a freed staging slot, a free
reader or copy engine). The path's time is then split by what limited each of
its steps. A simulated trace says exactly that (``trace.meta["sim_bound"]``:
seconds per step spent limited by host memory, a link, the page cache, the
drive's latency...); a real trace only says what kind of step it was. A
simulated step handed over by the engine's dispatcher has a span on the
``engine`` lane just before it: the path runs through it ("engine dispatch").
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from halsim.trace import Span, Trace

if TYPE_CHECKING:
    from halsim.plan import Plan

# Lanes that hold one span per step (the rest are per-resource detail).
STEP_LANES = ("read/", "write/", "copy/", "import/", "direct/", "alloc/")
ENGINE = "engine"  # the simulator's dispatcher lane (halsim.sim.dispatch): one span per step, before it
_EPS = 1e-12
_BY_OP = {
    "read": "file read", "write": "file write", "copy": "copy to device", "copy_back": "copy to host",
    "copy_imported": "copy from imported memory", "import": "import (registration)", "unimport": "unimport",
    "bind": "bind", "direct": "direct storage read", "pin": "pinned staging allocation",
    "unpin": "freeing pinned staging",
    "alloc": "device buffer allocation",
    "dispatch": "engine dispatch",
}
IDLE = "idle (between steps)"


def _step_spans(trace: Trace) -> list[Span]:
    return [s for s in trace.spans if s.lane.startswith(STEP_LANES) or s.lane == ENGINE]


def critical_path(trace: Trace, plan: "Plan | None" = None) -> list[Span]:
    """The chain of step spans that set the run's length, first to last."""
    spans = sorted(_step_spans(trace), key=lambda s: (s.end, -s.start))
    if not spans:
        return []
    ends = [s.end for s in spans]
    deps = {s.id: set(s.deps) for s in plan.steps} if plan is not None else {}
    current = spans[-1]
    path = [current]
    used = {id(current)}
    while current.start > _EPS:
        limit = current.start * (1 + 1e-12) + _EPS
        i = bisect.bisect_right(ends, limit)
        if i == 0:
            break
        latest = ends[i - 1]
        # Every span that ended at that same moment could have released this one: prefer a
        # dependency, then the previous step on the same lane (a copy engine, a reader thread).
        j = i - 1
        candidates = []
        while j >= 0 and ends[j] >= latest - _EPS - latest * 1e-12:
            if id(spans[j]) not in used:
                candidates.append(spans[j])
            j -= 1
        if not candidates:
            break
        wanted = deps.get(current.step, ())
        # A step's own dispatch first (it ends as the step starts), then a dependency, then its lane.
        candidates.sort(key=lambda s: (not (s.lane == ENGINE and s.step == current.step and current.lane != ENGINE),
                                       s.step not in wanted, s.lane != current.lane, s.start, s.lane))
        current = candidates[0]
        used.add(id(current))
        path.append(current)
    path.reverse()
    return path


def bottlenecks(trace: Trace, plan: "Plan | None" = None) -> dict[str, float]:
    """Share of the run's time bounded by each resource (or kind of step), largest first."""
    path = critical_path(trace, plan)
    if not path:
        return {}
    bound = trace.meta.get("sim_bound", {})
    seconds: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        if value > 0:
            seconds[key] = seconds.get(key, 0.0) + value

    previous_end = 0.0
    for span in path:
        add(IDLE, span.start - previous_end)
        previous_end = span.end
        length = span.seconds
        detail = bound.get(span.step) if span.step >= 0 and not span.lane.startswith(("alloc/", ENGINE)) else None
        if detail:
            total = sum(detail.values())
            # Scale to the span: a step's parts add up to its length up to rounding.
            scale = length / total if total > 0 else 0.0
            for key, value in detail.items():
                add(key, value * scale)
        else:
            add(_BY_OP.get(span.op, span.op), length)
    add(IDLE, trace.end - previous_end)
    total = sum(seconds.values())
    if total <= 0:
        return {}
    return dict(sorted(((k, v / total) for k, v in seconds.items()), key=lambda kv: -kv[1]))


def explain_trace(trace: Trace, plan: "Plan | None" = None, *, threshold: float = 0.005) -> str:
    """One line, e.g. ``"host memory 78%, link/d0/h2d 22%"``."""
    shares = bottlenecks(trace, plan)
    if not shares:
        return "nothing ran"
    shown = [f"{name} {share:.0%}" for name, share in shares.items() if share >= threshold]
    return ", ".join(shown) or "nothing ran"
