"""A ring whose slots stay in the CPU's cache reads the page cache faster
(Storage.page_cache_near_bytes / page_cache_near_speedup, or by footprint: page_cache_near_curve)."""

import dataclasses

import pytest

from halsim.calibrate import Config, calibrate
from halsim.engine import Engine
from halsim.errors import PlatformError
from halsim.platform import load_platform
from halsim.policies import StreamingPolicy
from halsim.sim import Simulator

from sim_helpers import MiB, make_request, toml_round_trip, toy_platform

NEAR = {"storage__page_cache_near_bytes": "16MiB", "storage__page_cache_near_speedup": 1.3,
        "host__total_bandwidth": 1e18}

# Quick's sizes, with a scratch file and runs large enough for every near probe (a 4 MiB read
# probe into 256 MiB of slots; 64 near reads, so 128 MiB of slots are each used twice) and
# only two readers: the full config's 1 GiB of 8-reader rings cost the suite minutes.
NEAR_CONFIG = dataclasses.replace(Config.quick(), scratch=256 * MiB, run_bytes=256 * MiB,
                                  thread_chunk=16 * MiB, threads=(1, 2))


def read_seconds(platform, slots: int, chunk: int = 4 * MiB, total: int = 64 * MiB) -> list[float]:
    sim = Simulator(platform)
    device = sim.device(0)
    plan = StreamingPolicy(chunk=chunk, slots=slots, readers=1).plan(make_request([total]), device.caps)
    result = Engine("serial").run(plan, None, [device])
    return [s.seconds for s in result.trace.spans if s.lane.startswith("read/")]


def test_only_a_ring_that_fits_reads_faster():
    platform = toy_platform(**NEAR)
    rate = platform.storage.page_cache_rate(4 * MiB)
    small, large = read_seconds(platform, slots=4), read_seconds(platform, slots=16)  # 16 MiB, 64 MiB of slots
    assert all(s == pytest.approx(4 * MiB / (1.3 * rate), rel=1e-6) for s in small)
    assert all(s == pytest.approx(4 * MiB / rate, rel=1e-6) for s in large)
    plain = read_seconds(toy_platform(host__total_bandwidth=1e18), slots=4)
    assert all(s == pytest.approx(4 * MiB / rate, rel=1e-6) for s in plain)


@pytest.mark.parametrize("share", [0.5, 0.0, 1.0])
def test_a_ring_of_one_slot_gets_its_share_of_the_speedup(share):
    platform = toy_platform(**NEAR, storage__page_cache_near_one_slot=share)
    rate = platform.storage.page_cache_rate(16 * MiB)
    one_slot = read_seconds(platform, slots=1, chunk=16 * MiB)  # 16 MiB of slots: near, but one slot
    assert all(s == pytest.approx(16 * MiB / ((1 + share * 0.3) * rate), rel=1e-6) for s in one_slot)
    two_slots = read_seconds(platform, slots=2, chunk=8 * MiB)
    assert all(s == pytest.approx(8 * MiB / (1.3 * platform.storage.page_cache_rate(8 * MiB)), rel=1e-6)
               for s in two_slots)


def test_a_one_slot_share_outside_zero_to_one_is_refused_by_name():
    with pytest.raises(PlatformError, match="page_cache_near_one_slot"):
        toy_platform(storage__page_cache_near_one_slot=1.5)


def test_a_speedup_under_one_is_refused_by_name():
    with pytest.raises(PlatformError, match="page_cache_near_speedup"):
        toy_platform(storage__page_cache_near_speedup=0.8)


def test_round_trips_through_toml(tmp_path):
    assert 'page_cache_near_bytes = "16MiB"' in toml_round_trip(toy_platform(**NEAR), tmp_path)


def test_calibration_gives_the_speedup_back_and_finds_none_where_there_is_none():
    base = load_platform("h100-pcie5")
    storage = base.storage.model_copy(update={"page_cache_near_bytes": 16 * MiB, "page_cache_near_speedup": 1.3})
    result = calibrate(Simulator(base.model_copy(update={"storage": storage})).device(0), NEAR_CONFIG)
    assert result.parameter("storage.page_cache_near_speedup").value == pytest.approx(1.3, rel=0.02)
    assert result.platform.storage.page_cache_near_bytes == 16 * MiB
    # The small read probes (64 KiB into 8 MiB of slots) read fast too: the fitted
    # curve leaves that to the speedup, so it reproduces every probe.
    for check in result.checks:
        assert check.predicted == pytest.approx(check.measured, rel=0.02), check.probe.label
    plain = calibrate("sim:h100-pcie5", NEAR_CONFIG)
    assert plain.platform.storage.page_cache_near_speedup == 1.0
    assert plain.platform.storage.page_cache_near_bytes == 0


def test_without_a_large_read_probe_of_its_size_there_is_nothing_to_compare():
    result = calibrate("sim:h100-pcie5", Config.quick())  # 4 MiB reads: only 16 MiB of slots
    assert not result.parameter("storage.page_cache_near_speedup").measured
    assert result.platform.storage.page_cache_near_bytes == 0


CURVE = ((16 * MiB, 1.6), (32 * MiB, 1.4), (64 * MiB, 1.25), (128 * MiB, 1.1), (256 * MiB, 1.0))


@pytest.mark.parametrize("slots, speedup", [(2, 1.6), (4, 1.6), (8, 1.4), (12, 1.4 - 0.15 * 0.5849625007211562),
                                            (16, 1.25), (32, 1.1), (64, 1.0), (128, 1.0)])
def test_a_measured_curve_gives_each_ring_the_speedup_of_its_footprint(slots, speedup):
    platform = toy_platform(storage__page_cache_near_curve=CURVE, host__total_bandwidth=1e18)
    rate = platform.storage.page_cache_rate(4 * MiB)
    reads = read_seconds(platform, slots=slots, total=512 * MiB)  # 4 MiB x slots of staging
    assert all(s == pytest.approx(4 * MiB / (speedup * rate), rel=1e-6) for s in reads)


def test_the_curve_overrides_the_single_step():
    platform = toy_platform(**NEAR, storage__page_cache_near_curve=((16 * MiB, 1.1), (64 * MiB, 1.0)))
    assert platform.storage.near_speedup(4, 16 * MiB) == pytest.approx(1.1)
    assert platform.storage.near_speedup(1, 16 * MiB) == pytest.approx(1.05)  # one slot: its share
    assert platform.storage.near_speedup(4, 0) == 1.0


@pytest.mark.parametrize("curve, problem", [(((32 * MiB, 1.2), (16 * MiB, 1.5)), "increasing order"),
                                             (((16 * MiB, 0.9),), "at least 1"),
                                             (((0, 1.2),), "above 0")])
def test_a_bad_curve_is_refused_by_name(curve, problem):
    with pytest.raises(PlatformError, match=f"page_cache_near_curve.*{problem}"):
        toy_platform(storage__page_cache_near_curve=curve)


def test_the_curve_round_trips_through_toml(tmp_path):
    text = toml_round_trip(toy_platform(storage__page_cache_near_curve=CURVE), tmp_path)
    assert "page_cache_near_curve" in text


@pytest.fixture(scope="module")
def curved():
    """The simulator, its reads sped up by CURVE, calibrated against itself."""
    base = load_platform("h100-pcie5")
    storage = base.storage.model_copy(update={"page_cache_near_curve": CURVE})
    return calibrate(Simulator(base.model_copy(update={"storage": storage})).device(0), NEAR_CONFIG)


def test_calibration_gives_the_curve_back_at_every_footprint_it_measures(curved):
    result = curved
    fitted = dict(result.platform.storage.page_cache_near_curve)
    assert set(fitted) == {footprint for footprint, _ in CURVE}
    for footprint, speedup in CURVE:
        assert fitted[footprint] == pytest.approx(speedup, rel=0.02), footprint
    assert result.parameter("storage.page_cache_near_speedup").value == pytest.approx(1.6, rel=0.02)
    for check in result.checks:
        assert check.predicted == pytest.approx(check.measured, rel=0.02), check.probe.label


def test_full_calibration_probes_four_footprints_with_each_slot_reused():
    from halsim.calibrate import near_probes, read_footprint

    for config in (Config.full(), NEAR_CONFIG):
        near = near_probes(config)
        assert [read_footprint(p) for p in near] == [16 * MiB, 32 * MiB, 64 * MiB, 128 * MiB]
        assert all(p.count >= 2 * p.width and p.size * p.count <= config.scratch for p in near)
    assert near_probes(Config.quick()) == []  # its 4 MiB read probe uses only 16 MiB of slots


def test_a_larger_footprint_measured_faster_than_a_smaller_one_is_pooled_with_it(curved):
    from halsim.fit import fit_platform

    measured = curved.measurements
    points = []
    for pt in measured.points:
        if pt.probe.bench == "near" and pt.probe.width == 16:  # 64 MiB: measured faster than 32 MiB
            pt = dataclasses.replace(pt, samples={"near": [v / 1.5 for v in pt.samples["near"]]})
        points.append(pt)
    curve = dict(fit_platform(dataclasses.replace(measured, points=points)).platform.storage.page_cache_near_curve)
    # 1.6, 1.4 and 1.875 (64 MiB, measured too fast) break the order: the three are pooled to their
    # mean, where a running maximum would have carried 1.875 to 16 and 32 MiB too.
    assert curve[16 * MiB] == curve[32 * MiB] == curve[64 * MiB] == pytest.approx((1.6 + 1.4 + 1.25 * 1.5) / 3, rel=0.02)
    assert curve[128 * MiB] == pytest.approx(1.1, rel=0.02)


def test_near_reads_into_the_read_probes_own_footprint_are_not_a_point_of_the_curve(curved):
    """Runs 37-38 measured near reads into 256 MiB of slots too (a reference tried and dropped):
    their records still fit, to the same curve."""
    from halsim.fit import fit_platform

    measured = curved.measurements
    near = next(pt for pt in measured.points if pt.probe.bench == "near")
    reference = dataclasses.replace(near, probe=dataclasses.replace(near.probe, width=256 * MiB // near.probe.size),
                                    samples={"near": [v * 1.1 for v in near.samples["near"]]})
    refit = fit_platform(dataclasses.replace(measured, points=measured.points + [reference]))
    assert refit.platform.storage.page_cache_near_curve == curved.platform.storage.page_cache_near_curve


def test_a_curve_that_never_rises_pools_its_noisy_points():
    from halsim.fit import _never_rising

    assert _never_rising([(16, 1.6), (32, 1.4), (64, 1.25), (256, 1.0)]) == [(16, 1.6), (32, 1.4), (64, 1.25), (256, 1.0)]
    assert _never_rising([(16, 1.5), (32, 1.6), (64, 1.2), (128, 1.25), (256, 1.0)]) == \
        [(16, 1.55), (32, 1.55), (64, 1.225), (128, 1.225), (256, 1.0)]
    # a point under 1 pools with the reference's 1.0 and the curve never drops under 1
    assert _never_rising([(16, 1.3), (32, 1.0), (64, 1.1), (128, 0.9), (256, 1.0)]) == \
        [(16, 1.3), (32, 1.05), (64, 1.05), (128, 1.0), (256, 1.0)]
