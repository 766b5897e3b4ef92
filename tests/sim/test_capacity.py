"""Allocations beyond device or host memory fail as on hardware, and leave nothing behind."""

import pytest

from halsim.engine import Engine
from halsim.errors import OutOfMemoryError
from halsim.policies import parse_policy
from halsim.sim import Simulator, simulate
from halsim.trace import Trace

from sim_helpers import GiB, MiB, make_request, toy_platform


def upload(sim, request, spec, trace=None):
    plan = parse_policy(spec).plan(request, [sim.device(0).caps])
    return Engine().run(plan, None, [sim.device(0)], trace=trace)


def test_device_memory_overflow_raises_the_real_error_type():
    sim = Simulator("h100-pcie5")
    trace = Trace()
    with pytest.raises(OutOfMemoryError, match="device 0 memory"):
        upload(sim, make_request([16 * GiB] * 6), "streaming", trace)
    assert sim.machine.device_memory[0].used == 0
    assert sim.machine.host_memory.used == 0
    assert all(series[-1][1] == 0 for series in trace.counters.values())


def test_host_memory_overflow_on_staging():
    sim = Simulator(toy_platform(host__capacity="8GiB"))
    with pytest.raises(OutOfMemoryError, match="host memory"):
        upload(sim, make_request([1 * GiB] * 10), "staged")
    assert sim.machine.host_memory.used == 0 and sim.machine.device_memory[0].used == 0
    # A bounded ring fits where staging everything does not.
    result = upload(sim, make_request([1 * GiB] * 10), "streaming:chunk=64MiB,slots=4")
    assert result.trace.peak("staging") == 256 * MiB


def test_integrated_gpu_memory_is_host_memory():
    sim = Simulator(toy_platform(kind="integrated", host__capacity="16GiB", gpus__memory="12GiB"))
    result = upload(sim, make_request([4 * GiB, 4 * GiB], host_alignment=0), "streaming:chunk=64MiB,slots=2")
    assert sim.machine.host_memory.used == 8 * GiB  # the kept buffers
    with pytest.raises(OutOfMemoryError):
        upload(sim, make_request([6 * GiB], host_alignment=0), "streaming:chunk=64MiB,slots=2")
    result.free()
    assert sim.machine.host_memory.used == 0
    upload(sim, make_request([6 * GiB], host_alignment=0), "streaming:chunk=64MiB,slots=2").free()


def test_kept_buffers_count_until_freed():
    sim = Simulator(toy_platform(gpus__memory="3GiB"))
    first = upload(sim, make_request([2 * GiB]), "streaming")
    with pytest.raises(OutOfMemoryError):
        upload(sim, make_request([2 * GiB]), "streaming")
    first.free()
    upload(sim, make_request([2 * GiB]), "streaming").free()
    assert sim.machine.device_memory[0].used == 0


def test_import_needs_no_staging_or_device_memory_in_place():
    r = simulate(make_request([8 * GiB, 8 * GiB]), toy_platform(kind="integrated", gpus__memory="1GiB"), "import")
    assert r.peak_staging_bytes == 0 and r.peak_device_bytes == 0 and r.imported_bytes == 16 * GiB


def test_injected_allocation_faults_clean_up():
    from halsim.faults import Fault, FaultInjector

    sim = Simulator(toy_platform())
    plan = parse_policy("streaming:chunk=1MiB,slots=2").plan(make_request([4 * MiB] * 3), sim.device(0).caps)
    for kind in ("device_oom", "staging_oom"):
        with pytest.raises(OutOfMemoryError, match="injected"):
            Engine().run(plan, None, [sim.device(0)], faults=FaultInjector(Fault(kind)))
        assert sim.machine.device_memory[0].used == 0 and sim.machine.host_memory.used == 0
