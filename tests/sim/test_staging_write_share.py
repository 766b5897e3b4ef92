"""Many readers whose ring fits in the CPU's cache load host memory with less than what they
write, and slow one another less (HostMemory.staging_write_curve)."""

import pytest

from halsim.calibrate import ring_read_plan
from halsim.engine import Engine
from halsim.errors import PlatformError
from halsim.request import SourceInfo
from halsim.sim import Simulator

from sim_helpers import GB, MiB, toml_round_trip, toy_platform

READ = 4 * MiB
TOTAL = 64 * MiB


def reads_wall(platform, slots: int, readers: int = 4) -> float:
    """Seconds for ``readers`` threads to read TOTAL bytes of a page-cached file into ``slots`` slots."""
    device = Simulator(platform).device(0)
    plan = ring_read_plan(SourceInfo("f.bin", TOTAL, 4096, True), READ, TOTAL // READ, readers, slots)
    spans = [s for s in Engine("overlapped").run(plan, None, [device]).trace.spans if s.lane.startswith("read/")]
    return max(s.end for s in spans) - min(s.start for s in spans)


def curve(share: float):
    return {"host__staging_write_curve": [["16MiB", share], ["32MiB", 1.0]]}


@pytest.mark.parametrize("share", [0.5, 0.0])
def test_a_ring_that_fits_moves_only_its_share_of_the_writes_through_host_memory(share):
    # Four readers at 1 GB/s each on a 2 GB/s memory system: host memory binds. A read
    # moves its bytes out of the page cache and, of its writes, the share that leaves the cache.
    bound = {"host__total_bandwidth": 2 * GB}
    small = reads_wall(toy_platform(**bound, **curve(share)), slots=4)  # 16 MiB of slots
    assert small == pytest.approx(TOTAL * (1 + share) / (2 * GB), rel=1e-6)
    assert reads_wall(toy_platform(**bound), slots=4) == pytest.approx(TOTAL * 2 / (2 * GB), rel=1e-6)
    # A ring past the curve's last point: all of its writes
    assert reads_wall(toy_platform(**bound, **curve(share)), slots=8) == pytest.approx(TOTAL * 2 / (2 * GB), rel=1e-6)


def test_readers_whose_writes_stay_in_the_cache_slow_one_another_less():
    # Host memory never binds; each of k threads reads at rate / (1 + c (crowd - own weight)),
    # where a read counts at (1 + share) / 2: four readers at share 0 slow one another as two would.
    calm = {"host__thread_contention": 0.2}
    alone = TOTAL / (1 * GB) / 4
    assert reads_wall(toy_platform(**calm), slots=4) == pytest.approx(alone * (1 + 0.2 * 3), rel=1e-6)
    assert reads_wall(toy_platform(**calm, **curve(0.0)), slots=4) == pytest.approx(alone * (1 + 0.2 * 1.5), rel=1e-6)


def test_a_share_outside_zero_to_one_is_refused_by_name():
    with pytest.raises(PlatformError, match="staging_write_curve"):
        toy_platform(**curve(1.5))


def test_round_trips_through_toml(tmp_path):
    assert "staging_write_curve" in toml_round_trip(toy_platform(**curve(0.5)), tmp_path)
