"""Invariants 1-3 and 7 on plans alone: every policy kind, request shape and caps."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from halsim.caps import DeviceCaps
from halsim.errors import PolicyError
from halsim.invariants import InvariantError, check_plan
from halsim.plan import Op, Plan, StagingPool, Step
from halsim.policies import StreamingPolicy, parse_policy
from halsim.request import Direction, SourceInfo

from .strategies import MAX_CHUNKS, MAX_STEPS, PLAN_CAP, caps_strategy, granularity, layouts, policies, requests


@st.composite
def planned(draw, direction=Direction.UPLOAD):
    policy = draw(policies)
    layout = draw(layouts(min(PLAN_CAP, granularity(policy) * MAX_CHUNKS)))
    host_alignment = draw(st.sampled_from([0, 1, 16, 64, 4096, 1 << 30]))
    source = SourceInfo("gen.bin", layout.length, host_alignment)
    request = draw(requests(source, layout, direction=direction))
    same = draw(st.booleans())
    if same:
        caps = [draw(caps_strategy)] * (max(request.devices) + 1)
    else:
        caps = draw(st.lists(caps_strategy, min_size=max(request.devices) + 1, max_size=max(request.devices) + 1))
    return policy, request, caps


def _plan(policy, request, caps) -> Plan:
    try:
        plan = policy.plan(request, caps)
    except PolicyError as err:
        # The one refusal a valid request may get: auto's budget is too small to share.
        assert policy.kind == "auto" and policy.budget < len(request.devices), err
        assert "budget" in str(err)
        assume(False)
    assume(len(plan.steps) <= MAX_STEPS * 4)
    return plan


@given(planned())
def test_upload_plans_hold_invariants(case):
    policy, request, caps = case
    check_plan(_plan(policy, request, caps), caps)


@given(planned(Direction.DOWNLOAD))
def test_download_plans_hold_invariants(case):
    policy, request, caps = case
    check_plan(_plan(policy, request, caps), caps)


@given(planned())
def test_same_policy_same_plan_for_equal_caps(case):
    """Invariant 7, on plans: a plan is a function of policy, request and caps alone."""
    policy, request, caps = case
    plan = _plan(policy, request, caps)
    copies = [DeviceCaps(**c.model_dump()) for c in caps]
    again = parse_policy(policy.spec()).plan(request, copies)
    assert again == plan
    assert again.to_json() == plan.to_json()
    assert hash(again) == hash(plan)


# --- the checker itself catches what it claims to --------------------------------------

def _request():
    from .strategies import Tensor
    from halsim.request import request_from_tensors

    return request_from_tensors(SourceInfo("t.bin", 100, 0), [Tensor("a", 0, 40), Tensor("b", 40, 30)])


def _streaming(**kw):
    request = _request()
    return StreamingPolicy(chunk=16, slots=2, readers=2, **kw).plan(request, DeviceCaps())


def _replace(plan, steps=None, pools=None):
    return Plan(plan.policy, plan.requested, plan.request, tuple(steps if steps is not None else plan.steps),
                tuple(pools if pools is not None else plan.pools), plan.windows, plan.limits)


def _edit(step, **fields):
    from dataclasses import replace

    return replace(step, **fields)


def test_checker_catches_a_missing_copy():
    plan = _streaming()
    steps = [s for s in plan.steps]
    victim = next(s for s in steps if s.op is Op.COPY)
    steps = [s if s.id != victim.id else _edit(s, length=s.length - 1) for s in steps]
    with pytest.raises(InvariantError, match="invariant 1"):
        check_plan(_replace(plan, steps))


def test_checker_catches_an_ungated_slot_refill():
    plan = _streaming()
    reads = [s for s in plan.steps if s.op is Op.READ]
    refill = next(r for r in reads if r.deps)
    steps = [s if s.id != refill.id else _edit(s, deps=()) for s in plan.steps]
    with pytest.raises(InvariantError, match="invariant 3"):
        check_plan(_replace(plan, steps))


def test_checker_catches_a_copy_from_the_wrong_slot_bytes():
    plan = _streaming()
    copy = next(s for s in plan.steps if s.op is Op.COPY and s.slot_offset == 0 and s.length > 1)
    steps = [s if s.id != copy.id else _edit(s, slot_offset=1, length=s.length - 1, file_offset=s.file_offset)
             for s in plan.steps]
    with pytest.raises(InvariantError):
        check_plan(_replace(plan, steps))


def test_checker_catches_staging_over_the_bound():
    plan = _streaming()
    pool = plan.pools[0]
    with pytest.raises(InvariantError, match="invariant 2"):
        check_plan(_replace(plan, pools=[StagingPool(pool.device, pool.slots + 5, pool.slot_bytes)]))


def test_checker_catches_a_cycle():
    plan = _streaming()
    first = plan.steps[0]
    last = plan.steps[-1]
    steps = [s if s.id != first.id else _edit(s, deps=(last.id,)) for s in plan.steps]
    with pytest.raises(InvariantError, match="cycle"):
        check_plan(_replace(plan, steps))


def test_checker_catches_a_doubled_delivery():
    plan = _streaming()
    copy = next(s for s in plan.steps if s.op is Op.COPY)
    extra = Step(len(plan.steps), Op.COPY, copy.device, copy.length, copy.file_offset, copy.buffer,
                 copy.buffer_offset, copy.slot, copy.slot_offset, deps=copy.deps)
    with pytest.raises(InvariantError, match="2 time"):
        check_plan(_replace(plan, list(plan.steps) + [extra]))


# --- the trace checks catch what they claim to ---------------------------------------------

from halsim.invariants import check_clean, check_trace  # noqa: E402
from halsim.trace import STAGING, Trace  # noqa: E402


def _trace_of(plan, order=None, overlap_step=None):
    """A trace that runs the plan's steps one after another (in ``order``)."""
    trace = Trace()
    trace.change(STAGING, 0.0, plan.staging_bytes)
    t = 1.0
    for n in order or range(len(plan.steps)):
        step = plan.steps[n]
        start = t - 0.5 if n == overlap_step else t
        trace.span("lane", step.op.value, start, t + 1.0, step.length, step.id, step.device)
        t += 1.0
    trace.change(STAGING, t, -plan.staging_bytes)
    return trace


def test_trace_check_accepts_a_sequential_run():
    plan = check_plan(_streaming())
    check_trace(plan, _trace_of(plan))
    check_clean(_trace_of(plan))


def test_trace_check_catches_a_step_before_its_dependency_ended():
    plan = check_plan(_streaming())
    late = next(s for s in plan.steps if s.deps)
    with pytest.raises(InvariantError, match="invariant 4"):
        check_trace(plan, _trace_of(plan, overlap_step=late.id))


def test_trace_check_catches_a_missing_step_and_a_wrong_order():
    plan = check_plan(_streaming())
    with pytest.raises(InvariantError, match="never ran"):
        check_trace(plan, _trace_of(plan, order=range(len(plan.steps) - 1)))
    with pytest.raises(InvariantError, match="invariant 4"):
        check_trace(plan, _trace_of(plan, order=reversed(range(len(plan.steps)))))


def test_trace_check_catches_staging_over_the_plan_and_leftovers():
    plan = check_plan(_streaming())
    trace = _trace_of(plan)
    trace.change(STAGING, 99.0, plan.staging_bytes + 1)
    with pytest.raises(InvariantError, match="invariant 2"):
        check_trace(plan, trace)
    with pytest.raises(InvariantError, match="invariant 6"):
        check_clean(trace)
    freed_twice = _trace_of(plan)
    freed_twice.change("device/0", 100.0, -5)
    with pytest.raises(InvariantError, match="negative"):
        check_trace(plan, freed_twice)
