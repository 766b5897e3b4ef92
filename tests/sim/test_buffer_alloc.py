"""Device buffers cost time to allocate: one call after another, before the staging is pinned or
anything read (cuMemAlloc; 3-7 ms of a 48-tensor upload on the lent H200 VM)."""

import pytest

from halsim.engine import Engine
from halsim.invariants import check_trace
from halsim.policies import ImportPolicy, StreamingPolicy
from halsim.sim import Simulator

from sim_helpers import MiB, make_request, toy_platform

ALLOC = {"gpus__alloc_per_call": "1ms", "gpus__alloc_bandwidth": "10GB/s"}
SIZES = [64 * MiB, 16 * MiB, 1 * MiB]


def run(platform, policy, request=None, devices=1):
    sim = Simulator(platform)
    targets = [sim.device(i) for i in range(devices)]
    request = request or make_request(SIZES)
    plan = policy.plan(request, [t.caps for t in targets] if devices > 1 else targets[0].caps)
    result = Engine("overlapped").run(plan, None, targets)
    check_trace(plan, result.trace, complete=True)
    return result


@pytest.mark.parametrize("policy", [StreamingPolicy(chunk=4 * MiB, slots=2, readers=2), ImportPolicy()])
def test_buffers_are_allocated_before_the_first_step(policy):
    result = run(toy_platform(**ALLOC), policy)
    free = run(toy_platform(), policy)
    expected = 3 * 1e-3 + sum(SIZES) / 10e9
    (alloc,) = [s for s in result.trace.spans if s.lane == "alloc/d0" and s.op == "alloc"]
    assert alloc.start == 0 and alloc.seconds == pytest.approx(expected, rel=1e-9)
    assert alloc.nbytes == sum(SIZES)
    assert min(s.start for s in result.trace.spans if s.op != "alloc" and s.lane != "engine") >= alloc.end - 1e-12
    assert result.seconds == pytest.approx(free.seconds + expected, rel=1e-9)
    (none,) = [s for s in free.trace.spans if s.op == "alloc"]  # not given: allocating is free
    assert none.seconds == 0


def test_each_gpu_allocates_its_own_buffers_in_turn():
    request = make_request(SIZES + [8 * MiB], devices=2)
    result = run(toy_platform(gpus=2, **ALLOC), StreamingPolicy(chunk=4 * MiB, slots=2), request, devices=2)
    allocs = sorted((s for s in result.trace.spans if s.op == "alloc"), key=lambda s: s.start)
    assert [s.lane for s in allocs] == ["alloc/d0", "alloc/d1"]
    assert allocs[1].start == pytest.approx(allocs[0].end)  # the engine allocates device after device
    assert [s.nbytes for s in allocs] == [64 * MiB + 1 * MiB, 16 * MiB + 8 * MiB]
