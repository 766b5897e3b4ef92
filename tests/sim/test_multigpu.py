"""Several GPUs of one machine contend for switches, host memory and storage."""

import pytest

from halsim.engine import Engine
from halsim.platform import load_platform
from halsim.policies import parse_policy
from halsim.sim import Simulator, simulate

from sim_helpers import GB, MiB, make_request, toy_platform


def two_gpu_run(platform, gpus, request, spec):
    sim = Simulator(platform)
    targets = [sim.device(g) for g in gpus]
    plan = parse_policy(spec).plan(request, [d.caps for d in targets])
    result = Engine().run(plan, None, targets)
    return result


def link_rate(result):
    spans = [s for s in result.trace.spans if s.lane.startswith("link/")]
    return sum(s.nbytes for s in spans) / sum(s.seconds for s in spans)


def test_devices_of_one_simulator_share_the_machine():
    sim = Simulator("dgx-h100")
    assert sim.device(3).simulator is sim and sim.device(3) is sim.device(3)
    assert len(sim.devices) == 8 and len({d.name for d in sim.devices}) == 8


def test_gpus_behind_one_switch_share_its_uplink():
    request = make_request([256 * MiB] * 8, devices=2)
    spec = "import:piece=256MiB"  # copies from registered memory: link-bound, no reader threads
    same = two_gpu_run(load_platform("dgx-h100"), (0, 1), request, spec)
    apart = two_gpu_run(load_platform("dgx-h100"), (0, 2), request, spec)
    assert link_rate(apart) == pytest.approx(54.5e9, rel=0.01)  # each GPU has its own uplink
    assert link_rate(same) < 0.8 * link_rate(apart)
    assert same.seconds > apart.seconds
    bound = [k for step in same.trace.meta["sim_bound"].values() for k in step]
    assert "switch/pcie-switch-0/h2d" in bound


def test_two_gpus_split_one_switch_evenly():
    p = toy_platform(gpus=2, switch=True)
    n = 64 * MiB
    result = two_gpu_run(p, (0, 1), make_request([n, n], devices=2), f"import:piece={n}")
    links = [s for s in result.trace.spans if s.lane.startswith("link/")]
    assert sorted(s.lane for s in links) == ["link/d0/h2d", "link/d1/h2d"]
    # 2 GB/s uplink, two flows: 1 GB/s each while both run.
    imports = [s for s in result.trace.spans if s.op == "import"]
    assert len(imports) == 2
    for s in links:
        assert s.nbytes / s.seconds == pytest.approx(1 * GB, rel=1e-6)


def test_host_memory_caps_gpus_without_switches():
    p = toy_platform(gpus=2, host__total_bandwidth="3GB/s", links__h2d="2GB/s")
    n = 64 * MiB
    result = two_gpu_run(p, (0, 1), make_request([n, n], devices=2), f"import:piece={n}")
    links = [s for s in result.trace.spans if s.lane.startswith("link/")]
    assert max(s.start for s in links) < min(s.end for s in links)  # the two copies overlap
    for s in links:
        assert s.nbytes / s.seconds == pytest.approx(1.5 * GB, rel=1e-6)


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_sharded_upload_on_many_gpus(gpus):
    r = simulate("iree-1gib", "dgx-h100", "streaming:chunk=16MiB,slots=4,readers=4", gpus=gpus, shard="rows")
    assert r.bytes == 1 << 30
    assert r.peak_device_bytes == 1 << 30
    devices = {s.device for s in r.trace.spans}
    assert devices == set(range(gpus))


def test_more_gpus_go_faster_until_the_host_binds():
    times = {g: simulate("iree-1gib", "dgx-h100", "import", gpus=g, shard="rows").seconds for g in (1, 2, 4)}
    assert times[4] < times[2] < times[1]
