"""Calibration: the simulator recovers its own parameters; the CPU device gives a usable platform."""

from __future__ import annotations

import dataclasses
import math

import pytest
from typer.testing import CliRunner

from halsim.calibrate import (
    Config,
    Measurements,
    Probe,
    SimTarget,
    calibrate,
    copy_plan,
    import_plan,
    import_upload_plan,
    measure,
    pool_plan,
    probes,
    read_plan,
    target_for,
)
from halsim.caps import DeviceCaps
from halsim.cli import app
from halsim.fit import UNMEASURABLE_RATE, annotate_toml, fitted_table, linear_fit, search_fit
from halsim.invariants import check_plan
from halsim.platform import list_platforms, load_platform
from halsim.request import SourceInfo

KiB, MiB = 1 << 10, 1 << 20

# The CPU device in a fraction of a second: timings are noisy, the suite only checks the plumbing.
TINY = Config(scratch=4 * MiB, copy_chunks=(64 * KiB, 256 * KiB, MiB), read_sizes=(64 * KiB, 256 * KiB, MiB),
              cold_sizes=(256 * KiB, MiB), threads=(1, 2), thread_chunk=512 * KiB, memcpy_bytes=2 * MiB,
              pin_slots=(1, 2), pin_bytes=(256 * KiB, MiB), import_pieces=(256 * KiB, MiB), run_bytes=2 * MiB,
              max_steps=16, repeats=2, alloc_sizes=(256 * KiB,), alloc_counts=(1, 2))


def truth(name: str) -> dict[str, float]:
    """Each parameter calibration fits, as the platform states it (pageable: the simulator's default)."""
    p = load_platform(name)
    link = p.link_of(0)
    return {
        "storage.bandwidth": p.storage.bandwidth, "storage.latency": p.storage.latency,
        "storage.page_cache_bandwidth": p.storage.page_cache_bandwidth,
        "host.memcpy_per_thread": p.host.memcpy_per_thread, "host.total_bandwidth": p.host.total_bandwidth,
        "host.pin_bandwidth": p.host.pin_bandwidth, "host.pin_per_call": p.host.pin_per_call,
        "host.unpin_per_call": p.host.unpin_per_call, "host.unpin_bandwidth": p.host.unpin_bandwidth,
        "gpu.alloc_per_call": p.gpus[0].alloc_per_call, "gpu.alloc_bandwidth": p.gpus[0].alloc_bandwidth,
        "host.register_bandwidth": p.host.register_bandwidth, "host.register_per_call": p.host.register_per_call,
        "host.unregister_bandwidth": p.host.unregister_bandwidth,
        "link.h2d": link.h2d, "link.d2h": link.d2h, "link.overhead": link.overhead,
        "link.pageable": link.pageable or min(p.host.memcpy_per_thread, link.h2d),
        "gpu.copy_engines": p.gpus[0].copy_engines, "host.step_overhead": p.host.step_overhead,
        "host.thread_contention": p.host.thread_contention, "host.dma_weight": p.host.dma_weight,
        "storage.page_cache_near_speedup": p.storage.page_cache_near_speedup,
        "storage.fault_in_bandwidth": p.storage.fault_in_bandwidth or p.storage.bandwidth,
        "host.register_upload_factor": p.host.register_upload_factor, "storage.read_ahead": p.storage.read_ahead,
        "host.import_handover_per_copy": p.host.import_handover_per_copy,
        "host.staging_write_share": p.host.staging_write_curve[0][1] if p.host.staging_write_curve else 1.0,
        "storage.page_cache_ring_speedup":
            p.storage.page_cache_ring_curve[0][1] if p.storage.page_cache_ring_curve else 1.0,
    }


@pytest.fixture(scope="module")
def cpu_calibration():
    return calibrate("cpu", TINY)


# ---------------------------------------------------------------- the key test of the fit


@pytest.mark.parametrize("name", list_platforms())
def test_calibrating_the_simulator_recovers_its_own_parameters(name):
    expected = truth(name)
    result = calibrate(f"sim:{name}", Config.quick())
    if expected["host.step_overhead"]:  # h100-pcie5: 76us per step
        assert result.parameter("host.step_overhead").measured
    checked = 0
    for f in result.fitted:
        if not f.measured:
            continue
        want = expected[f.path]
        if f.lower_bound:  # the benchmarks never made it the bottleneck: only "at least" is known
            assert f.value <= want * 1.02, f"{name}: {f.path} lower bound {f.value:g} above the truth {want:g}"
        else:
            assert f.value == pytest.approx(want, rel=0.02, abs=1e-9), f"{name}: {f.path}"
            checked += 1
    assert checked >= 10
    # The fitted platform reproduces every microbenchmark of the platform it came from.
    for check in result.checks:
        assert check.predicted == pytest.approx(check.measured, rel=0.02), check.probe.label


def test_threads_that_slow_one_another_are_told_from_a_full_memory_system():
    """Each of k copying threads at rate / (1 + 0.1 (k - 1)), and a memory system that fills
    at 8 readers with copies: calibration gives back both, not one standing in for the other."""
    from halsim.sim import Simulator

    base = load_platform("h100-pcie5")
    host = base.host.model_copy(update={"thread_contention": 0.1, "total_bandwidth": 60e9})
    eight = dataclasses.replace(Config.quick(), threads=(1, 2, 4, 8))  # the full config's readers, quick's sizes
    result = calibrate(Simulator(base.model_copy(update={"host": host})).device(0), eight)
    assert result.parameter("host.thread_contention").value == pytest.approx(0.1, rel=0.02)
    assert result.parameter("host.total_bandwidth").value == pytest.approx(60e9, rel=0.02)
    # without contention the same fit finds none
    calm = base.model_copy(update={"host": base.host.model_copy(update={"thread_contention": 0.0})})
    plain = calibrate(Simulator(calm).device(0), Config.quick())
    assert plain.platform.host.thread_contention == 0.0


def test_a_ring_whose_slots_stay_in_the_cache_is_told_from_the_host_s_bandwidth():
    """Eight readers whose ring of one slot each writes only half its bytes to host memory (the rest
    stays in the CPU's cache), on a memory system that fills: calibration gives back the share
    beside the bandwidth and the contention, and a ring of two slots each keeps all of its traffic."""
    from halsim.sim import Simulator

    base = load_platform("h100-pcie5")
    # The full config's readers and chunk (rings of 2 MiB chunks are bound by the dispatcher, not host memory)
    eight = dataclasses.replace(Config.quick(), threads=(1, 2, 4, 8), thread_chunk=16 * MiB, scratch=256 * MiB)
    tight = 8 * eight.thread_chunk  # the tight probe's ring: one slot per reader
    host = base.host.model_copy(update={"thread_contention": 0.1, "total_bandwidth": 60e9,
                                        "staging_write_curve": ((tight, 0.5), (2 * tight, 1.0))})
    result = calibrate(Simulator(base.model_copy(update={"host": host})).device(0), eight)
    assert result.parameter("host.staging_write_share").value == pytest.approx(0.5, rel=0.02)
    assert result.platform.host.staging_write_curve == ((tight, pytest.approx(0.5, rel=0.02)), (2 * tight, 1.0))
    assert result.parameter("host.total_bandwidth").value == pytest.approx(60e9, rel=0.02)
    assert result.parameter("host.thread_contention").value == pytest.approx(0.1, rel=0.02)
    # where every byte reaches host memory the fit adds no curve
    plain = base.model_copy(update={"host": base.host.model_copy(update={"thread_contention": 0.1,
                                                                         "total_bandwidth": 60e9})})
    assert calibrate(Simulator(plain).device(0), eight).platform.host.staging_write_curve == ()


def test_where_any_dma_weight_fits_the_probes_each_dma_byte_stays_whole():
    """h100-pcie5 with a link 20 % faster: its probes never fill host memory, so every DMA weight
    reproduces them to rounding; the fit took the search's floor (0.05) from that rounding before."""
    from halsim.sim import Simulator

    base = load_platform("h100-pcie5")
    faster = base.model_copy(update={"links": (base.links[0].model_copy(update={"h2d": base.links[0].h2d * 1.2}),)})
    result = calibrate(Simulator(faster).device(0), Config.quick())
    assert result.parameter("host.total_bandwidth").lower_bound
    assert result.parameter("host.dma_weight").value == 1.0


def test_the_simulator_tells_calibration_how_it_imports_and_reads_direct():
    from halsim.sim import Simulator

    base = load_platform("igpu-unified")
    gpu = base.gpus[0].model_copy(update={"lazy_import": True, "direct_buffered": True, "direct_storage": True})
    result = calibrate(Simulator(base.model_copy(update={"gpus": (gpu,)})).device(0), Config.quick())
    assert result.platform.gpus[0].lazy_import and result.platform.gpus[0].direct_buffered
    assert not calibrate("sim:igpu-unified", Config.quick()).platform.gpus[0].lazy_import


def test_measurements_come_back_from_their_json():
    import json

    measured = calibrate("sim:dgpu-pcie4", Config.quick()).measurements
    again = Measurements.from_dict(json.loads(json.dumps(measured.to_dict())))
    assert again == measured


def test_the_drive_s_readahead_is_read_not_fitted():
    from halsim.fit import fit_platform
    from halsim.sim import Simulator

    base = load_platform("dgpu-pcie4")
    eight = base.model_copy(update={"storage": base.storage.model_copy(update={"read_ahead": 8 * MiB})})
    known = calibrate(Simulator(eight).device(0), Config.quick())
    assert known.measurements.read_ahead == 8 * MiB
    assert known.platform.storage.read_ahead == 8 * MiB and known.parameter("storage.read_ahead").measured
    known.measurements.read_ahead = None  # a calibration from before it was recorded, or no sysfs
    unknown = fit_platform(known.measurements).parameter("storage.read_ahead")
    assert not unknown.measured and unknown.value == 128 * KiB


def test_the_drive_s_bandwidth_comes_from_several_readers_not_one_reader_s_requests():
    """On the H200 VMs one reader's cold requests read 2-20 % below the drive's rate, the smaller the
    slower, which the model does not have. The drive's bandwidth is fitted from the reads by several
    readers (a gigabyte in 16 MiB requests there), which read as a cold upload does; one reader's slow
    requests leave it where it is, and stay in sight as probes predicted fast."""
    from halsim.fit import fit_platform
    from halsim.sim import Simulator

    base = load_platform("dgpu-pcie4")
    # The H200 VMs' drive: its readahead outruns the latency between one reader's requests
    # (the latency cannot stand in for the slow requests there).
    drive = base.storage.model_copy(update={"bandwidth": 1.9e9, "latency": 44e-6, "read_ahead": 8 * MiB})
    like_the_full_config = dataclasses.replace(Config.quick(), threads=(1, 2, 4, 8), thread_chunk=16 * MiB,
                                               scratch=256 * MiB, cold_sizes=(256 * KiB, MiB, 4 * MiB, 16 * MiB))
    measured = calibrate(Simulator(base.model_copy(update={"storage": drive})).device(0),
                         like_the_full_config).measurements
    slower = {256 * KiB: 1.25, MiB: 1.15, 4 * MiB: 1.11, 16 * MiB: 1.08}  # as the H200 VMs' probes, roughly
    for pt in measured.of("cold"):
        if pt.probe.width == 1:
            pt.samples = {k: [v * slower[pt.probe.size] for v in values] for k, values in pt.samples.items()}
    fitted = fit_platform(measured)
    bandwidth = fitted.parameter("storage.bandwidth")
    assert bandwidth.value == pytest.approx(1.9e9, rel=0.02)  # fitted to every probe: 1.835 GB/s
    assert "several readers" in bandwidth.source
    one_reader_16mib = next(c for c in fitted.checks if c.probe.label == "cold 16MiB")
    assert one_reader_16mib.error < -0.03


def test_with_one_reader_only_the_drive_s_bandwidth_comes_from_its_reads_by_size():
    one_reader = calibrate("sim:dgpu-pcie4", dataclasses.replace(Config.quick(), threads=(1,)))
    bandwidth = one_reader.parameter("storage.bandwidth")
    assert bandwidth.source == "cold reads by size (sim fit)"
    assert bandwidth.residual is not None  # over the reads that set it


def test_pinning_a_ring_and_freeing_it_are_fitted_apart():
    """A ring freed at its own cost: calibration gives back both; a run stored before the freeing was
    timed apart (``pin`` holding the pair) fits the pair as pinning and charges nothing at release."""
    from halsim.fit import fit_platform
    from halsim.sim import Simulator

    base = load_platform("h100-pcie5")
    host = base.host.model_copy(update={"unpin_per_call": 4e-4, "unpin_bandwidth": 40e9})
    result = calibrate(Simulator(base.model_copy(update={"host": host})).device(0), Config.quick())
    fitted = result.platform.host
    assert fitted.pin_bandwidth == pytest.approx(base.host.pin_bandwidth, rel=0.02)
    assert fitted.pin_per_call == pytest.approx(base.host.pin_per_call, rel=0.02)
    assert fitted.unpin_per_call == pytest.approx(4e-4, rel=0.02)
    assert fitted.unpin_bandwidth == pytest.approx(40e9, rel=0.02)
    for check in result.checks:
        if check.probe.bench == "pin":  # judged by the pair
            assert check.predicted == pytest.approx(check.measured, rel=0.02)
    stored = result.measurements
    pairs = {pt.probe: [a + b for a, b in zip(pt.samples["pin"], pt.samples["unpin"])] for pt in stored.of("pin")}
    stored.points = [dataclasses.replace(pt, samples={"pin": pairs[pt.probe]}) if pt.probe in pairs else pt
                     for pt in stored.points]
    old = fit_platform(stored)
    assert not old.parameter("host.unpin_per_call").measured and old.platform.host.unpin_per_call == 0.0
    assert old.platform.host.unpin_bandwidth is None
    pair = 8 * (4e-4 + 16 * MiB / 40e9) + 8 * (base.host.pin_per_call + 16 * MiB / base.host.pin_bandwidth)
    assert old.platform.host.pin_per_call * 8 + 8 * 16 * MiB / old.platform.host.pin_bandwidth == \
        pytest.approx(pair, rel=0.02)


def test_device_buffer_allocation_is_fitted():
    """What an upload spends allocating its buffers, per buffer and per byte: given back; a run
    stored before it was measured allocates for free."""
    from halsim.fit import fit_platform
    from halsim.sim import Simulator

    base = load_platform("dgpu-pcie4")
    gpu = base.gpus[0].model_copy(update={"alloc_per_call": 9e-5, "alloc_bandwidth": 300e9})
    result = calibrate(Simulator(base.model_copy(update={"gpus": (gpu,)})).device(0), Config.quick())
    assert result.platform.gpus[0].alloc_per_call == pytest.approx(9e-5, rel=0.02)
    assert result.platform.gpus[0].alloc_bandwidth == pytest.approx(300e9, rel=0.02)
    assert {c.probe.label for c in result.checks if c.probe.bench == "alloc"} == \
        {"alloc 1MiB", "alloc 16MiB", "alloc 1MiB x4 buffers", "alloc 16MiB x4 buffers"}
    stored = result.measurements
    stored.points = [pt for pt in stored.points if pt.probe.bench != "alloc"]
    old = fit_platform(stored)
    assert old.platform.gpus[0].alloc_per_call == 0.0 and not old.parameter("gpu.alloc_per_call").measured


def test_rounds_measured_apart_pool_into_one_set_of_samples():
    target = target_for("sim:dgpu-pcie4")
    config = dataclasses.replace(Config.quick(), repeats=1)
    parts = [measure(target, config) for _ in range(3)]
    pooled = Measurements.pooled(parts)
    assert pooled.config.repeats == 3 and [m.probe for m in pooled.points] == [m.probe for m in parts[0].points]
    for m, first in zip(pooled.points, parts[0].points):
        assert all(len(v) == 3 for v in m.samples.values()) and m.value() == pytest.approx(first.value())
    with pytest.raises(ValueError, match="cannot pool"):
        Measurements.pooled([parts[0], measure(target_for("sim:h100-pcie5"), config)])


def test_registration_and_its_release_are_fitted_apart():
    """A device that unpins at its own rate: calibration gives back both rates."""
    from halsim.sim import Simulator

    base = load_platform("h100-pcie5")
    host = base.host.model_copy(update={"register_bandwidth": 20e9, "unregister_bandwidth": 60e9})
    platform = base.model_copy(update={"host": host})
    result = calibrate(Simulator(platform).device(0), Config.quick())
    assert result.parameter("host.register_bandwidth").value == pytest.approx(20e9, rel=0.02)
    assert result.parameter("host.unregister_bandwidth").value == pytest.approx(60e9, rel=0.02)
    assert result.platform.host.unregister_bandwidth == pytest.approx(60e9, rel=0.02)
    assert 'unregister_bandwidth = "' in result.to_toml()  # written as a rate, like the others
    # and a device whose releases cost only their call gives none
    plain = calibrate("sim:dgpu-pcie4", Config.quick())
    assert plain.platform.host.unregister_bandwidth is None
    assert not plain.parameter("host.unregister_bandwidth").measured


def test_a_dispatch_bound_device_gives_back_its_step_overhead():
    """An integrated GPU whose engine costs 40us a step: the step overhead comes back, and
    nothing else is thrown off by the steps' waits (the streaming and multi-reader runs)."""
    from halsim.sim import Simulator

    base = load_platform("igpu-unified")
    platform = base.model_copy(update={"host": base.host.model_copy(update={"step_overhead": 40e-6})})
    result = calibrate(Simulator(platform).device(0), Config.quick())
    step = result.parameter("host.step_overhead")
    assert step.measured and step.value == pytest.approx(40e-6, rel=0.02)
    assert step.error is not None and step.residual is not None and step.residual < 0.02
    assert result.platform.host.step_overhead == step.value and 'step_overhead = "40us"' in result.to_toml()
    for check in result.checks:
        assert check.predicted == pytest.approx(check.measured, rel=0.02), check.probe.label


def test_a_step_cost_that_rises_with_threads_comes_back_as_a_curve():
    """The serial copies' gap at 2 threads, 1 MiB rings of 2 and 4 readers at 4 and 6: each
    point comes back, and the streaming and multi-reader runs are not thrown off by it
    (the host's sharing and the curve are fitted in turns)."""
    from halsim.sim import Simulator

    base = load_platform("igpu-unified")
    curve = ((2, 30e-6), (4, 50e-6), (6, 60e-6))
    platform = base.model_copy(update={"host": base.host.model_copy(
        update={"step_overhead": 30e-6, "step_overhead_curve": curve})})
    result = calibrate(Simulator(platform).device(0), Config.quick())
    fitted = result.platform.host.step_overhead_curve
    assert [n for n, _ in fitted] == [2, 4, 6]
    assert [c for _, c in fitted] == pytest.approx([c for _, c in curve], rel=0.02)
    assert result.parameter("host.step_overhead").value == pytest.approx(60e-6, rel=0.02)
    assert "2: 30 us" in result.parameter("host.step_overhead").source
    for check in result.checks:
        assert check.predicted == pytest.approx(check.measured, rel=0.02), check.probe.label


def test_a_dma_that_weighs_less_on_host_memory_comes_back():
    """Readers alone and readers with copies streaming tell the DMA's weight from the host's
    total: a platform whose copies weigh half a byte a byte gives back 0.5."""
    from halsim.sim import Simulator

    base = load_platform("dgpu-pcie4")
    host = base.host.model_copy(update={"total_bandwidth": 24e9, "dma_weight": 0.5})
    result = calibrate(Simulator(base.model_copy(update={"host": host})).device(0), Config.quick())
    weight = result.parameter("host.dma_weight")
    assert weight.measured and weight.value == pytest.approx(0.5, rel=0.05)
    assert result.platform.host.dma_weight == weight.value
    for check in result.checks:
        assert check.predicted == pytest.approx(check.measured, rel=0.02), check.probe.label


def test_full_config_saturates_what_quick_cannot():
    """With 8 readers the RAID's bandwidth binds; quick mode's 4 only bound it from below."""
    result = calibrate("sim:dgx-h100", Config.full())
    storage = result.parameter("storage.bandwidth")
    assert not storage.lower_bound
    assert storage.value == pytest.approx(truth("dgx-h100")["storage.bandwidth"], rel=0.02)


def test_parameters_the_device_cannot_show_are_marked_not_measured():
    result = calibrate("sim:igpu-unified", Config.quick())
    register = result.parameter("host.register_bandwidth")  # imports in place: no per-byte cost
    assert not register.measured and register.value == UNMEASURABLE_RATE
    engines = result.parameter("gpu.copy_engines")  # one copy queue: nothing to overlap
    assert not engines.measured and engines.value == 1


# ---------------------------------------------------------------- the microbenchmarks are valid plans


def test_benchmark_plans_that_are_uploads_in_part_keep_the_invariants():
    # Copy and read benchmarks move bytes nobody delivers (timing only); pools and imports are regular.
    source = SourceInfo("scratch", 16 * MiB, 4096, True)
    for plan in (import_plan(Probe("import", MiB, 4), source, False), pool_plan(Probe("pin", MiB, 1, 4)),
                 pool_plan(Probe("pin", 0, 0, 0))):
        check_plan(plan)


def test_benchmark_plans_run_on_every_kind_of_device():
    source = SourceInfo("scratch", 16 * MiB, 4096, True)
    copies = copy_plan(Probe("copies", MiB, 8, 2))
    assert [s.queue for s in copies.steps] == [0, 1] * 4 and not any(s.deps for s in copies.steps)
    reads = read_plan(Probe("read", MiB, 16, 4), source)
    assert all(s.deps == ((s.id - 4,) if s.id >= 4 else ()) for s in reads.steps)  # four in flight
    # Each read to its own slot, as a ring's reads go to slots x chunk bytes (not one slot the CPU caches).
    assert [s.slot for s in reads.steps] == list(range(16)) and reads.limits.readers == 4


@pytest.mark.parametrize("size, count, readers, slots", [(MiB, 16, 4, 16), (64 * MiB, 16, 1, 4),
                                                         (16 * MiB, 64, 3, 18), (256 * MiB, 4, 1, 1)])
def test_read_probes_write_to_a_ring_sized_set_of_slots(size, count, readers, slots):
    plan = read_plan(Probe("read", size, count, readers), SourceInfo("scratch", size * count, 4096, True))
    assert plan.pools[0].slots == slots and slots % readers == 0
    assert {s.slot for s in plan.steps} == set(range(min(slots, count)))
    # A slot is refilled only after the read before it in that slot is done (through the deps chain).
    last_in_slot: dict[int, int] = {}
    for step in plan.steps:
        if step.slot in last_in_slot:
            before, chain = last_in_slot[step.slot], step.id
            while chain > before:
                chain = plan.steps[chain].deps[0]
            assert chain == before
        last_in_slot[step.slot] = step.id


def test_probes_follow_the_caps():
    caps = DeviceCaps(copy_queues=1, can_import_host=False)
    benches = {p.bench for p in probes(Config.quick(), caps, pageable=False)}
    assert {"copies", "import", "pageable"}.isdisjoint(benches)
    assert {"h2d", "d2h", "memcpy", "read", "cold", "pin"} <= benches


def test_the_import_upload_runs_again_with_several_tensors_a_window():
    """As a model file has them: one copy per tensor, a valid upload, and only the one-tensor run
    sets the registrations' upload factor."""
    from halsim.calibrate import INSIDE_TENSORS
    from halsim.plan import Op

    caps = DeviceCaps(copy_queues=2, can_import_host=True)
    inside = [p for p in probes(Config.quick(), caps, pageable=False) if p.bench == "register_in_upload"]
    assert [p.width for p in inside] == [1, INSIDE_TENSORS] and inside[0].size == inside[1].size
    assert inside[1].label.endswith(f"x{INSIDE_TENSORS} tensors")
    source = SourceInfo("calibration", inside[1].size * inside[1].count, host_alignment=4096)
    for probe in inside:
        plan = import_upload_plan(probe, source, caps)
        check_plan(plan)
        copies = [s for s in plan.steps if s.op is Op.COPY_IMPORTED]
        assert len(copies) == probe.count * probe.width
        assert len(plan.request.buffers) == probe.count * probe.width
    # The fit takes the one-tensor run only: the factor comes out the same without the other.
    measured = measure(SimTarget.of(load_platform("h100-pcie5")), Config.quick())
    several = [pt for pt in measured.points if pt.probe.bench == "register_in_upload" and pt.probe.width > 1]
    assert several
    alone = dataclasses.replace(measured, points=[pt for pt in measured.points if pt not in several])
    from halsim.fit import fit_platform

    assert fit_platform(measured).platform.host.register_upload_factor == \
        fit_platform(alone).platform.host.register_upload_factor


def test_simulated_measurements_are_one_sample_each():
    measured = measure(SimTarget.of(load_platform("h100-pcie5")), Config.quick())
    assert measured.simulated and measured.points
    assert all(len(v) == 1 for m in measured.points for v in m.samples.values())
    # The import upload also reads off its import lane's hand-overs and its whole time.
    inside = measured.of("register_in_upload")[0]
    handover, upload = inside.value("handover"), inside.value("upload")
    steps = inside.probe.count * 2  # a registration and a release a window
    assert 0 < handover < upload / steps and upload > inside.probe.count * inside.value()


# ---------------------------------------------------------------- fitting


def test_linear_fit_recovers_a_line_and_its_errors():
    sizes = [2.0**k for k in range(16, 27)]
    exact = linear_fit([[1.0, x] for x in sizes], [3e-6 + x / 25e9 for x in sizes])
    assert exact.coef[0] == pytest.approx(3e-6) and 1 / exact.coef[1] == pytest.approx(25e9)
    assert exact.residual < 1e-9
    noisy = linear_fit([[1.0, x] for x in sizes], [(3e-6 + x / 25e9) * (1 + 0.05 * (-1) ** i)
                                                   for i, x in enumerate(sizes)])
    assert 0 < noisy.stderr[1] / noisy.coef[1] < 0.2
    assert noisy.residual == pytest.approx(0.05, rel=0.3)


def test_search_fit_finds_a_minimum_and_flags_a_lower_bound():
    x, bounded = search_fit(lambda v: math.log(v / 7e9) ** 2, 1e9, 1e11)
    assert bounded and x == pytest.approx(7e9, rel=1e-4)
    x, bounded = search_fit(lambda v: math.log(min(v, 5e9) / 5e9) ** 2, 1e9, 1e11)  # flat above 5e9
    assert not bounded and x == pytest.approx(5e9, rel=1e-4)


# ---------------------------------------------------------------- the CPU device


def test_cpu_calibration_gives_a_platform(cpu_calibration):
    result = cpu_calibration
    platform = result.platform
    assert platform.gpus[0].kind == "integrated"  # the CPU's "device memory" is host memory
    assert platform.gpus[0].can_import and platform.gpus[0].direct_storage
    # what the device says of itself: its imports only map the file, its direct reads are preads
    assert platform.gpus[0].lazy_import and platform.gpus[0].direct_buffered
    assert not platform.host.register_stalls_copies
    for f in result.fitted:
        if f.value is not None:
            assert math.isfinite(f.value) and f.value >= 0, f.path
        assert f.residual is None or math.isfinite(f.residual)
    assert {m.probe.bench for m in result.measurements.points} >= {"memcpy", "h2d", "d2h", "pageable", "read", "pin",
                                                                    "import"}
    assert all(len(v) == TINY.repeats for m in result.measurements.points for v in m.samples.values())
    fitted_table(result.fitted)  # renders


def test_toml_round_trip(cpu_calibration, tmp_path):
    path = cpu_calibration.save(tmp_path / "cpu.toml")
    text = path.read_text()
    assert "# Calibrated by `halsim calibrate` on cpu" in text and "residual" in text
    assert load_platform(path) == cpu_calibration.platform


def test_annotations_are_comments_only():
    result = calibrate("sim:h100-pcie5", Config.quick())
    text = result.platform.to_toml()
    annotated = annotate_toml(text, result.fitted)
    assert [line.split("  #")[0] for line in annotated.splitlines()] == text.splitlines()


def test_cold_reads_leave_the_scratch_file_out_of_the_cache(tmp_path):
    from halsim import pagecache

    target = target_for("cpu", tmp_path)
    target.open(2 * MiB)
    try:
        with target.source(cold=True) as (file, source):
            assert not source.page_cached and file.length == 2 * MiB
            assert pagecache.resident_fraction(target.path) <= 0.02
    except pagecache.ColdUnavailable as err:  # pragma: no cover - depends on the file system
        pytest.skip(str(err))
    finally:
        target.close()
    assert not list(tmp_path.iterdir())  # the scratch file is gone


# ---------------------------------------------------------------- the command line


def test_cli_calibrate_writes_a_platform_that_simulate_accepts(tmp_path):
    runner = CliRunner()
    out = tmp_path / "sim.toml"
    result = runner.invoke(app, ["calibrate", "--device", "sim:h100-pcie5", "--quick", "-o", str(out),
                                 "--json", str(tmp_path / "sim.json")])
    assert result.exit_code == 0, result.output
    assert "link.h2d" in result.output and out.exists() and (tmp_path / "sim.json").exists()
    # A ring of four readers: a quick calibration pins what bounds it. (Twelve readers, which
    # auto may pick, need the host's total bandwidth, of which --quick finds only a lower bound.)
    ring = ["--policy", "streaming:chunk=16MiB,slots=8,readers=4"]
    simulated = runner.invoke(app, ["simulate", "-w", "iree-1gib", "--platform", str(out), "--json", *ring])
    assert simulated.exit_code == 0, simulated.output
    reference = runner.invoke(app, ["simulate", "-w", "iree-1gib", "--platform", "h100-pcie5", "--json", *ring])
    import json

    mine, theirs = json.loads(simulated.output)["seconds"], json.loads(reference.output)["seconds"]
    assert mine == pytest.approx(theirs, rel=0.02)


def test_cli_calibrate_names_a_bad_device():
    result = CliRunner().invoke(app, ["calibrate", "--device", "nosuch:0", "--quick"])
    assert result.exit_code == 1 and "nosuch" in result.output


@pytest.mark.parametrize("name", list_platforms())
def test_every_probe_is_one_this_version_knows(name):
    """fidelity_replay.py drops stored probes outside BENCHES: none that calibration makes may be."""
    from halsim.calibrate import BENCHES, probes

    caps = load_platform(name).caps(0)
    for config in (Config.quick(), Config.full()):
        assert {p.bench for p in probes(config, caps, pageable=True)} <= BENCHES
