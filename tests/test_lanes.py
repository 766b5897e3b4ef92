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


def _plan_of(steps, readers=2, copies_per_queue=2):
    from halsim.plan import Limits
    class FakePlan:  # what dispatch_delays reads of a plan
        pass
    plan = FakePlan()
    plan.steps, plan.limits = tuple(steps), Limits(readers=readers, copies_per_queue=copies_per_queue)
    return plan


def test_dispatch_delay_counts_from_the_last_dependency_or_from_room_in_the_lane():
    from halsim.lanes import dispatch_delays
    from halsim.plan import Op, Step

    steps = [Step(0, Op.READ, 0, 10), Step(1, Op.READ, 0, 10), Step(2, Op.READ, 0, 10),
             Step(3, Op.COPY, 0, 10, deps=(0,)), Step(4, Op.COPY, 0, 10, deps=(1,))]
    trace = trace_of(Span("read/0", "read", 0.001, 1.0, 10, 0), Span("read/1", "read", 0.0, 2.0, 10, 1),
                     # two readers: step 2 could start when step 0 ended (1.0), started 1.25
                     Span("read/0", "read", 1.25, 3.0, 10, 2),
                     Span("copy/d0q0", "copy", 1.5, 2.5, 10, 3),  # its read ended at 1.0
                     # two allowed, but the queue ran one at a time: room at 2.5, its read ended at 2.0
                     Span("copy/d0q0", "copy", 2.6, 2.7, 10, 4))
    rows = {r.op: r for r in dispatch_delays(trace, _plan_of(steps))}
    assert rows["read"].steps == 3 and rows["read"].worst == pytest.approx(0.25)
    assert sorted([rows["read"].median, rows["read"].summed]) == pytest.approx([0.001, 0.251])
    assert rows["copy"].steps == 2 and rows["copy"].summed == pytest.approx(0.6)
    assert rows["copy"].worst == pytest.approx(0.5) and rows["copy"].median == pytest.approx(0.3)
    assert rows["copy"].p90 == pytest.approx(0.5)  # nearest rank: of two, the larger


def test_steps_with_no_dependency_count_from_the_runs_first_step_not_from_its_setup():
    from halsim.lanes import dispatch_delays
    from halsim.plan import Op, Step

    steps = [Step(0, Op.READ, 0, 10), Step(1, Op.READ, 0, 10)]
    # 5 s of allocation before the first step; the second read started 0.5 ms after the first.
    trace = trace_of(Span("read/0", "read", 5.0, 6.0, 10, 0), Span("read/1", "read", 5.0005, 6.0, 10, 1))
    rows = {r.op: r for r in dispatch_delays(trace, _plan_of(steps))}
    assert rows["read"].worst == pytest.approx(0.0005) and rows["read"].summed == pytest.approx(0.0005)


def test_dispatch_delays_of_a_real_upload_cover_every_step(tmp_path):
    import numpy as np

    import halsim
    from halsim.lanes import dispatch_delays

    path = tmp_path / "w.npy"
    np.save(path, np.arange(1 << 20, dtype=np.float32))
    with halsim.upload(path, "cpu", "streaming:chunk=256KiB,slots=2,readers=1") as done:
        rows = {r.op: r for r in dispatch_delays(done.report.trace, done.report.plan)}
    assert rows["read"].steps == rows["copy"].steps == 16
    assert all(0 <= r.median <= r.p90 <= r.worst <= r.summed for r in rows.values())
