"""Closed-form cases through the engine: one copy, serial and overlapped pipelines, shared links."""

import pytest

from halsim.engine import Engine
from halsim.policies import parse_policy
from halsim.sim import Simulator

from sim_helpers import GB, MiB, make_request, toy_platform


def run(platform, request, spec, mode="overlapped", devices=None):
    sim = Simulator(platform)
    targets = devices(sim) if devices else [sim.device(i) for i in request.devices]
    plan = parse_policy(spec).plan(request, [d.caps for d in targets])
    result = Engine(mode).run(plan, None, targets)
    return sim, plan, result


def pin(sim, plan):
    return sum(sim.machine.pin_seconds(p.bytes, p.slots) for p in plan.pools)


def test_one_chunk_through_one_link_takes_latency_plus_bytes_over_bandwidth():
    p = toy_platform(links__overhead="5us")
    n = 64 * MiB
    _, _, result = run(p, make_request([n]), f"streaming:chunk={n},slots=1,readers=1")
    (copy,) = [s for s in result.trace.spans if s.lane == "copy/d0q0"]
    assert copy.seconds == pytest.approx(5e-6 + n / 2e9, rel=1e-9)


def test_a_read_from_the_drive_adds_the_request_latency():
    p = toy_platform(storage__latency="100us")
    n = 8 * MiB
    _, _, result = run(p, make_request([n], page_cached=False), f"streaming:chunk={n},slots=1,readers=1")
    (read,) = [s for s in result.trace.spans if s.lane == "read/0"]
    assert read.seconds == pytest.approx(100e-6 + n / 1e9, rel=1e-9)


def test_serial_pipeline_takes_the_sum():
    chunk, count = 16 * MiB, 8
    sim, plan, result = run(toy_platform(), make_request([chunk] * count), f"streaming:chunk={chunk},slots=1,readers=1")
    expected = pin(sim, plan) + count * (chunk / GB + chunk / (2 * GB))
    assert result.seconds == pytest.approx(expected, rel=1e-9)


def test_serial_engine_mode_takes_the_sum_even_with_slots():
    chunk, count = 16 * MiB, 8
    sim, plan, result = run(toy_platform(), make_request([chunk] * count),
                            f"streaming:chunk={chunk},slots=4,readers=4", mode="serial")
    assert result.seconds == pytest.approx(pin(sim, plan) + count * 1.5 * chunk / GB, rel=1e-9)


def test_overlapped_pipeline_takes_the_slowest_stage_plus_fill_and_drain():
    chunk, count = 16 * MiB, 8
    sim, plan, result = run(toy_platform(), make_request([chunk] * count), f"streaming:chunk={chunk},slots=4,readers=1")
    # Reads (1 GB/s) bound; the last copy (2 GB/s) drains after the last read.
    expected = pin(sim, plan) + count * chunk / GB + chunk / (2 * GB)
    assert result.seconds == pytest.approx(expected, rel=1e-9)


def test_overlapped_copy_bound_pipeline():
    # Four reader threads read at 4 GB/s together; the 2 GB/s link binds. Fill: the first read wave.
    chunk, count = 16 * MiB, 16
    sim, plan, result = run(toy_platform(), make_request([chunk] * count),
                            f"streaming:chunk={chunk},slots=8,readers=4")
    expected = pin(sim, plan) + chunk / GB + count * chunk / (2 * GB)
    assert result.seconds == pytest.approx(expected, rel=1e-6)


def test_two_copy_queues_share_one_link_equally():
    n = 32 * MiB
    _, _, result = run(toy_platform(), make_request([n, n]), f"streaming:chunk={n},slots=2,readers=2,queues=2")
    copies = sorted((s for s in result.trace.spans if s.lane.startswith("copy/")), key=lambda s: s.lane)
    assert [s.lane for s in copies] == ["copy/d0q0", "copy/d0q1"]
    # Both reads end together, both copies then share 2 GB/s: each moves n at 1 GB/s.
    for s in copies:
        assert s.seconds == pytest.approx(n / GB, rel=1e-9)


def test_copies_on_one_engine_run_in_order():
    p = toy_platform(gpus__copy_engines=1)
    n = 8 * MiB
    _, _, result = run(p, make_request([n] * 6), f"streaming:chunk={n},slots=6,readers=6,queues=1")
    copies = sorted((s for s in result.trace.spans if s.lane == "copy/d0q0"), key=lambda s: s.start)
    for a, b in zip(copies, copies[1:]):
        assert b.start >= a.end - 1e-15
        assert b.seconds == pytest.approx(n / (2 * GB), rel=1e-9)  # alone on the link


def test_direct_storage_skips_host_memory():
    n = 64 * MiB
    _, _, result = run(toy_platform(), make_request([n]), f"direct:chunk={n},readers=1")
    lanes = {s.lane for s in result.trace.spans}
    assert "memcpy" not in lanes and "storage" in lanes and "direct/d0" in lanes
    # GPUDirect reads the drive, not the page cache: 1 GB/s.
    assert result.seconds == pytest.approx(n / GB, rel=1e-9)


def test_pageable_staging_is_slower_than_pinned():
    from halsim.platform import load_platform

    request = make_request([64 * MiB] * 8)
    spec = "streaming:chunk=64MiB,slots=1,readers=1"
    times = {}
    for pinned in (True, False):
        sim = Simulator(load_platform("h100-pcie5"), pinned_staging=pinned)
        plan = parse_policy(spec).plan(request, sim.device(0).caps)
        result = Engine().run(plan, None, [sim.device(0)])
        copies = [s for s in result.trace.spans if s.lane == "copy/d0q0"]
        times[pinned] = sum(s.seconds for s in copies)
    assert times[False] / times[True] == pytest.approx(54.5 / 8.6, rel=0.02)
