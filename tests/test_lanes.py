"""Lane by lane: busy time counts overlaps once, readers are one group, and the copy gaps."""

import pytest

from halsim.lanes import busy_seconds, copy_gaps, lane_uses
from halsim.trace import Span, Trace


def trace_of(*spans: Span) -> Trace:
    trace = Trace()
    trace.spans.extend(spans)
    return trace


def test_busy_time_counts_overlapping_steps_once():
    spans = [Span("copy/d0q0", "copy", 0.0, 2.0, 1), Span("copy/d0q0", "copy", 1.0, 3.0, 1),
             Span("copy/d0q0", "copy", 5.0, 6.0, 1)]
    assert busy_seconds(spans) == pytest.approx(4.0)
    assert busy_seconds([]) == 0.0


def test_lanes_group_readers_and_keep_queues_and_ops_apart():
    trace = trace_of(Span("read/0", "read", 0.0, 1.0, 10), Span("read/3", "read", 0.5, 1.5, 20),
                     Span("copy/d0q1", "copy", 1.0, 1.2, 10), Span("copy/d0q0", "copy", 1.5, 1.6, 20),
                     Span("import/d0", "import", 0.0, 0.4, 30), Span("import/d0", "unimport", 1.7, 1.8, 30),
                     Span("memcpy", "read", 0.0, 1.0, 10), Span("engine", "dispatch", 0.0, 0.1, 0))
    rows = {(r.lane, r.op): r for r in lane_uses(trace)}
    assert set(rows) == {("read", "read"), ("copy/d0q1", "copy"), ("copy/d0q0", "copy"),
                         ("import/d0", "import"), ("import/d0", "unimport")}  # resource lanes left out
    reads = rows[("read", "read")]
    assert (reads.steps, reads.bytes, reads.first, reads.last) == (2, 30, 0.0, 1.5)
    assert reads.busy == pytest.approx(1.5) and reads.summed == pytest.approx(2.0)
    assert [r.lane for r in lane_uses(trace)][:2] == ["import/d0", "read"]  # in the order they began


def test_copy_gaps_say_when_no_copy_ran():
    trace = trace_of(Span("copy/d0q0", "copy", 0.2, 0.5, 1), Span("copy/d0q1", "copy", 0.4, 0.6, 1),
                     Span("copy/d0q0", "copy", 0.9, 1.0, 1))
    gaps = copy_gaps(trace, 1.25)
    assert gaps.before_first == pytest.approx(0.2) and gaps.after_last == pytest.approx(0.25)
    assert gaps.in_flight == pytest.approx(0.5) and gaps.span == pytest.approx(0.8)
    assert gaps.longest_gap == pytest.approx(0.3) and gaps.longest_gap_at == pytest.approx(0.6)
    assert copy_gaps(trace_of(Span("read/0", "read", 0.0, 1.0, 1)), 1.0) is None
