"""One thread's page-cache read rate by request size (Storage.page_cache_curve)."""

import pytest

from halsim.calibrate import Config, calibrate
from halsim.engine import Engine
from halsim.errors import PlatformError
from halsim.policies import StreamingPolicy
from halsim.sim import Simulator

from sim_helpers import MiB, make_request, toml_round_trip, toy_platform

KiB = 1 << 10
CURVE = [[64 * KiB, "3GB/s"], [16 * MiB, "6GB/s"], [64 * MiB, "4.5GB/s"]]


def test_rate_is_interpolated_in_log_size_and_flat_past_the_ends():
    storage = toy_platform(storage__page_cache_curve=CURVE).storage
    assert storage.page_cache_rate(16 * MiB) == pytest.approx(6e9)
    assert storage.page_cache_rate(32 * MiB) == pytest.approx(5.25e9)  # halfway in log size
    assert storage.page_cache_rate(KiB) == pytest.approx(3e9)
    assert storage.page_cache_rate(1 << 30) == pytest.approx(4.5e9)
    flat = toy_platform().storage
    assert flat.page_cache_rate(64 * MiB) == flat.page_cache_bandwidth


@pytest.mark.parametrize("curve", [[[16 * MiB, "6GB/s"], [MiB, "5GB/s"]], [[0, "1GB/s"]], [[MiB, 0]],
                                   [[MiB, "1GB/s"], [MiB, "2GB/s"]]])
def test_bad_curves_are_refused_by_name(curve):
    with pytest.raises(PlatformError, match="page_cache_curve"):
        toy_platform(storage__page_cache_curve=curve)


def test_each_read_runs_at_its_sizes_rate():
    platform = toy_platform(storage__page_cache_curve=CURVE, host__total_bandwidth=1e18)
    for chunk, rate in ((16 * MiB, 6e9), (64 * MiB, 4.5e9)):
        sim = Simulator(platform)
        device = sim.device(0)
        plan = StreamingPolicy(chunk=chunk, slots=1, readers=1).plan(make_request([256 * MiB]), device.caps)
        result = Engine("serial").run(plan, None, [device])
        reads = [s for s in result.trace.spans if s.lane.startswith("read/")]
        assert all(s.seconds == pytest.approx(chunk / rate, rel=1e-6) for s in reads)


def test_curve_round_trips_through_toml(tmp_path):
    toml_round_trip(toy_platform(storage__page_cache_curve=CURVE), tmp_path)


def test_calibration_gives_the_curve_back():
    curve = [[64 * KiB, "2GB/s"], [MiB, "5GB/s"], [4 * MiB, "4GB/s"]]
    truth = toy_platform(storage__page_cache_curve=curve, host__total_bandwidth="100GB/s")
    result = calibrate(Simulator(truth).device(0), Config.quick())
    got = result.platform.storage
    assert got.page_cache_curve, result.notes
    for size in Config.quick().read_sizes:
        assert got.page_cache_rate(size) == pytest.approx(truth.storage.page_cache_rate(size), rel=0.02)


def test_calibrating_a_flat_page_cache_gives_no_curve():
    result = calibrate("sim:h100-pcie5", Config.quick())
    assert result.platform.storage.page_cache_curve == ()
