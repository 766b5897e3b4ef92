"""h100-pcie5 reproduces the measured pinned copy curve (issue 2) within 5% at every size."""

import pytest

from halsim.engine import Engine
from halsim.platform import load_platform
from halsim.policies import parse_policy
from halsim.sim import Simulator

from sim_helpers import make_request

KiB, MiB = 1 << 10, 1 << 20
MEASURED = {64 * KiB: 17.4, 256 * KiB: 35.0, 1 * MiB: 47.9, 4 * MiB: 52.2, 16 * MiB: 53.8, 64 * MiB: 54.4}


@pytest.mark.parametrize("chunk, gb_per_s", sorted(MEASURED.items()))
def test_pinned_copy_rate_by_chunk_size(chunk, gb_per_s):
    # The measurement copied from memory pinned beforehand: no slot is still being pinned.
    platform = load_platform("h100-pcie5")
    platform = platform.model_copy(update={"host": platform.host.model_copy(update={"pin_in_background": False})})
    sim = Simulator(platform)
    request = make_request([chunk * 8])
    plan = parse_policy(f"streaming:chunk={chunk},slots=2,readers=1").plan(request, sim.device(0).caps)
    # One step at a time: each copy has the link and host memory to itself, as in the measurement.
    result = Engine("serial").run(plan, None, [sim.device(0)])
    copies = [s for s in result.trace.spans if s.lane == "copy/d0q0"]
    assert len(copies) == 8
    rate = sum(s.nbytes for s in copies) / sum(s.seconds for s in copies) / 1e9
    assert rate == pytest.approx(gb_per_s, rel=0.05)


def test_pinned_d2h_and_pageable_rates():
    p = load_platform("h100-pcie5")
    sim = Simulator(p, pinned_staging=False)
    net, routes = sim.machine.net, sim.machine.gpu_routes[0]
    assert net.solo_rate(routes.d2h) == pytest.approx(54.7e9)
    assert net.solo_rate(routes.h2d_pageable) == pytest.approx(8.6e9)


def test_host_memcpy_scaling_is_an_upper_envelope_of_the_measurement():
    # Per-thread 10.4 GB/s capped by 65 GB/s of traffic (memcpy counts twice): 10.4, 20.8, 32.5, 32.5.
    p = load_platform("h100-pcie5")
    sim = Simulator(p)
    net, cached_read = sim.machine.net, sim.machine.host_routes.cached_read
    memcpy = net.flow_class([("host memory", 2)], p.host.memcpy_per_thread, "thread")
    measured = {1: 10.4, 2: 18.0, 4: 28.2, 8: 32.5}
    for threads, gb in measured.items():
        total = sum(r for r, _ in net._solve(tuple([memcpy] * threads)).values()) * threads / 1e9
        assert gb * 0.999 <= total <= gb * 1.16
    assert net.solo_rate(cached_read) == pytest.approx(5.7e9)
