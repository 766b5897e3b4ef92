"""Registering a cold window faults its pages in at the mapping's own rate
(Storage.fault_in_bandwidth), not at pread's."""

import pytest

from halsim.calibrate import Config, calibrate
from halsim.engine import Engine
from halsim.platform import load_platform
from halsim.policies import ImportPolicy
from halsim.sim import Simulator

from sim_helpers import MiB, make_request, toml_round_trip, toy_platform

FAST_REGISTRATION = {"host__register_bandwidth": "1000GB/s", "host__register_per_call": 0,
                     "host__total_bandwidth": 1e18, "storage__latency": 0}


def cold_import_seconds(platform) -> float:
    sim = Simulator(platform)
    device = sim.device(0)
    plan = ImportPolicy(piece=64 * MiB).plan(make_request([256 * MiB], page_cached=False), device.caps)
    result = Engine("serial").run(plan, None, [device])
    return sum(s.seconds for s in result.trace.spans if s.lane.startswith("import/") and s.op == "import")


def test_a_cold_window_is_faulted_in_at_its_own_rate():
    plain = toy_platform(**FAST_REGISTRATION)
    faster = toy_platform(storage__fault_in_bandwidth=2 * plain.storage.bandwidth, **FAST_REGISTRATION)
    assert cold_import_seconds(plain) == pytest.approx(256 * MiB / plain.storage.bandwidth, rel=0.01)
    assert cold_import_seconds(faster) == pytest.approx(cold_import_seconds(plain) / 2, rel=0.01)


def test_round_trips_through_toml(tmp_path):
    text = toml_round_trip(toy_platform(storage__fault_in_bandwidth="2.5GB/s"), tmp_path)
    assert 'fault_in_bandwidth = "2.5GB/s"' in text


def test_calibration_gives_the_rate_back():
    base = load_platform("h100-pcie5")
    storage = base.storage.model_copy(update={"fault_in_bandwidth": 2.0e9})
    result = calibrate(Simulator(base.model_copy(update={"storage": storage})).device(0), Config.quick())
    fitted = result.parameter("storage.fault_in_bandwidth")
    assert fitted.measured and fitted.value == pytest.approx(2.0e9, rel=0.02)
    assert result.platform.storage.bandwidth == pytest.approx(base.storage.bandwidth, rel=0.02)


def test_no_cold_import_without_registration():
    # An integrated GPU imports in place: a cold window is only mapped, nothing to time.
    result = calibrate("sim:igpu-unified", Config.quick())
    assert not any(m.probe.bench == "fault" for m in result.measurements.points)
    assert not result.parameter("storage.fault_in_bandwidth").measured
