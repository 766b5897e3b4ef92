"""The kernel's readahead on a cold file: the drive reads on through a reader's pauses, after its latency."""

import pytest

from halsim.engine import Engine
from halsim.policies import parse_policy
from halsim.request import BufferSpec, SourceInfo, Transfer, UploadRequest
from halsim.sim import Simulator
from halsim.sim.readahead import READ_AHEAD_OP

from sim_helpers import MiB, make_request, toy_platform

CHUNK, COUNT = 16 * MiB, 8
DRIVE, LINK = 1e9, 2e9  # toy_platform's; a chunk's copy is half its read
ONE_SLOT = f"streaming:chunk={CHUNK},slots=1,readers=1"


def cold_ring(read_ahead, request=None, **over):
    # A page-cache thread faster than the drive: what arrived ahead is copied out faster than it was read.
    platform = toy_platform(storage__page_cache_bandwidth="4GB/s", storage__read_ahead=read_ahead, **over)
    sim = Simulator(platform)
    target = sim.device(0)
    request = request or make_request([CHUNK] * COUNT, page_cached=False)
    plan = parse_policy(ONE_SLOT).plan(request, [target.caps])
    result = Engine("overlapped").run(plan, None, [target])
    pinning = sum(sim.machine.pin_seconds(p.bytes, p.slots) for p in plan.pools)
    return sim, result, result.seconds - pinning


def test_without_readahead_a_one_slot_ring_reads_and_copies_in_turn():
    _, _, seconds = cold_ring(0)
    assert seconds == pytest.approx(COUNT * (CHUNK / DRIVE + CHUNK / LINK), rel=1e-9)


def test_readahead_keeps_the_drive_busy_through_each_copy():
    # Each copy lasts CHUNK / LINK; the drive reads CHUNK / 2 meanwhile, which the next read finds cached.
    _, result, seconds = cold_ring(CHUNK)
    assert seconds == pytest.approx(COUNT * CHUNK / DRIVE + CHUNK / LINK, rel=1e-6)
    ahead = [s for s in result.trace.spans if s.lane == "storage" and s.op == READ_AHEAD_OP]
    assert len(ahead) == COUNT - 1 and all(s.nbytes == pytest.approx(CHUNK / 2, abs=1) for s in ahead)


def test_a_window_smaller_than_the_pause_hides_only_its_own_bytes():
    window = 4 * MiB
    _, _, seconds = cold_ring(window)
    first, last_copy = CHUNK / DRIVE, CHUNK / LINK
    assert seconds == pytest.approx(first + (COUNT - 1) * (CHUNK / LINK + (CHUNK - window) / DRIVE) + last_copy,
                                    rel=1e-6)


def test_pauses_shorter_than_the_drive_latency_hide_nothing():
    latency = "10ms"  # longer than a copy (8.4 ms): nothing has arrived when the next read starts
    _, _, without = cold_ring(0, storage__latency=latency)
    _, _, with_window = cold_ring(CHUNK, storage__latency=latency)
    assert with_window == pytest.approx(without, rel=1e-12)


def test_a_page_cached_file_reads_nothing_ahead():
    request = make_request([CHUNK] * COUNT, page_cached=True)
    _, result, _ = cold_ring(CHUNK, request)
    assert not [s for s in result.trace.spans if s.lane == "storage"]


def test_every_byte_crosses_the_drive_once():
    sim, result, _ = cold_ring(CHUNK)
    through = dict(zip(sim.machine.net.names, sim.machine.net.bytes_through))
    assert through["storage"] == pytest.approx(COUNT * CHUNK, abs=COUNT)


def test_a_window_past_what_the_upload_reads_stops_when_it_ends():
    # The file goes on past the one tensor uploaded: the drive reads ahead into the rest until the run ends.
    source = SourceInfo("longer.bin", 4 * CHUNK, 4096, page_cached=False)
    request = UploadRequest(source, (BufferSpec("t0", CHUNK),), (Transfer(0, 0, 0, CHUNK),))
    sim, result, _ = cold_ring(CHUNK, request)
    result.free()
    net = sim.machine.net
    assert not net.flows and not net.waiting
    (ahead,) = [s for s in result.trace.spans if s.op == READ_AHEAD_OP]
    assert 0 < ahead.nbytes < CHUNK
