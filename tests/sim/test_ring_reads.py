"""A ring of several readers reads the page cache by its own curve (Storage.page_cache_ring_curve):
from the curve's first footprint up it replaces one reader's near curve for them."""

import dataclasses
import math

import pytest

from halsim.calibrate import Config, calibrate
from halsim.engine import Engine
from halsim.errors import PlatformError
from halsim.platform import load_platform
from halsim.policies import StreamingPolicy
from halsim.sim import Simulator

from sim_helpers import MiB, make_request, toml_round_trip, toy_platform

NEAR = ((16 * MiB, 1.6), (32 * MiB, 1.4), (64 * MiB, 1.1), (256 * MiB, 1.0))
RING = ((64 * MiB, 1.5), (128 * MiB, 1.3), (256 * MiB, 1.0))


def curved(**over):
    return toy_platform(storage__page_cache_near_curve=NEAR, storage__page_cache_ring_curve=RING, **over)


@pytest.mark.parametrize("staging, readers, speedup", [
    (16 * MiB, 4, 1.6),  # under the ring curve's first footprint: one reader's curve
    (32 * MiB, 4, 1.4),
    (48 * MiB, 4, 1.4 + 0.1 * math.log2(1.5)),  # between one reader's last point below and the ring's first
    (64 * MiB, 4, 1.5),
    (128 * MiB, 8, 1.3),
    (512 * MiB, 8, 1.0),
    (64 * MiB, 1, 1.1),  # one reader: its own curve, whatever the ring curve says
    (128 * MiB, 1, 1.1 - 0.1 / 2),
])
def test_several_readers_read_the_ring_curve_from_its_first_footprint_up(staging, readers, speedup):
    assert curved().storage.near_speedup(8, staging, readers) == pytest.approx(speedup, rel=1e-9)


def test_without_a_ring_curve_several_readers_read_one_reader_s_curve():
    platform = toy_platform(storage__page_cache_near_curve=NEAR)
    assert platform.storage.near_speedup(8, 64 * MiB, 4) == platform.storage.near_speedup(8, 64 * MiB, 1) == 1.1


def read_seconds(platform, slots: int, readers: int, chunk: int = 16 * MiB) -> list[float]:
    device = Simulator(platform).device(0)
    plan = StreamingPolicy(chunk=chunk, slots=slots, readers=readers).plan(make_request([64 * chunk]), device.caps)
    return [s.seconds for s in Engine("serial").run(plan, None, [device]).trace.spans if s.lane.startswith("read/")]


@pytest.mark.parametrize("slots, readers, speedup", [(8, 4, 1.3), (4, 2, 1.5), (4, 1, 1.1), (16, 8, 1.0)])
def test_the_simulator_reads_a_ring_at_its_readers_speedup(slots, readers, speedup):
    platform = curved()  # one page-cache thread at 1 GB/s, host memory that never binds, no contention
    reads = read_seconds(platform, slots, readers)
    assert reads and all(s == pytest.approx(16 * MiB / (speedup * 1e9), rel=1e-6) for s in reads)


@pytest.mark.parametrize("curve, problem", [(((128 * MiB, 1.2), (64 * MiB, 1.5)), "increasing order"),
                                             (((64 * MiB, 0.9),), "at least 1")])
def test_a_bad_ring_curve_is_refused_by_name(curve, problem):
    with pytest.raises(PlatformError, match=f"page_cache_ring_curve.*{problem}"):
        toy_platform(storage__page_cache_ring_curve=curve)


def test_the_ring_curve_round_trips_through_toml(tmp_path):
    assert "page_cache_ring_curve" in toml_round_trip(curved(), tmp_path)


# Rings of 2, 4 and 8 readers of 16 MiB chunks: 64, 128 and 256 MiB of slots, the last the read
# probes' own (the reference), and the tight ring of 8 (128 MiB); host memory that never binds,
# so the footprint share stays out of it.
RING_CONFIG = dataclasses.replace(Config.quick(), scratch=256 * MiB, run_bytes=256 * MiB,
                                  thread_chunk=16 * MiB, threads=(1, 2, 4, 8))


def simulated(ring):
    base = load_platform("h100-pcie5")
    return base.model_copy(update={"storage": base.storage.model_copy(update={"page_cache_ring_curve": ring}),
                                   "host": base.host.model_copy(update={"total_bandwidth": 1e13})})


def test_calibration_gives_the_ring_curve_back():
    ring = ((64 * MiB, 1.3), (128 * MiB, 1.2), (256 * MiB, 1.0))
    result = calibrate(Simulator(simulated(ring)).device(0), RING_CONFIG)
    fitted = result.platform.storage.page_cache_ring_curve
    assert [footprint for footprint, _ in fitted] == [64 * MiB, 128 * MiB, 256 * MiB]
    for (_, got), (_, want) in zip(fitted, ring):
        assert got == pytest.approx(want, rel=0.02)
    assert result.parameter("storage.page_cache_ring_speedup").value == pytest.approx(1.3, rel=0.02)
    for check in result.checks:
        assert check.predicted == pytest.approx(check.measured, rel=0.02), check.probe.label


def test_where_rings_read_as_one_reader_does_calibration_adds_no_ring_curve():
    result = calibrate(Simulator(simulated(())).device(0), RING_CONFIG)
    assert result.platform.storage.page_cache_ring_curve == ()
    assert not result.parameter("storage.page_cache_ring_speedup").measured
