"""Pinning as the CUDA backend does it: staging slots pinned in the background,
and registration that holds the driver's lock (copies wait meanwhile)."""

import pytest

from halsim.engine import Engine
from halsim.invariants import check_trace
from halsim.policies import ImportPolicy, StreamingPolicy
from halsim.sim import Simulator
from halsim.trace import Trace

from sim_helpers import GB, MiB, make_request, toy_platform


def upload(platform, request, policy):
    sim = Simulator(platform)
    device = sim.device(0)
    plan = policy.plan(request, device.caps)
    result = Engine("overlapped").run(plan, None, [device])
    check_trace(plan, result.trace, complete=True)
    return result


def spans_of(trace, lane_prefix, op=None):
    return sorted((s for s in trace.spans if s.lane.startswith(lane_prefix) and (op is None or s.op == op)),
                  key=lambda s: s.start)


def spans(result, lane_prefix, op=None):
    return spans_of(result.trace, lane_prefix, op)


# Pinning a slot costs 16 MiB at 0.1 GB/s = 0.17 s: slow enough to see.
SLOW_PIN = {"host__pin_bandwidth": "100MB/s", "host__pin_per_call": "1ms"}
RING = StreamingPolicy(chunk=16 * MiB, slots=4, readers=2)


def test_up_front_pinning_delays_the_first_read_by_the_whole_pool():
    result = upload(toy_platform(**SLOW_PIN), make_request([64 * MiB]), RING)
    pool_seconds = 4 * (1e-3 + 16 * MiB / 1e8)
    assert spans(result, "read/")[0].start == pytest.approx(pool_seconds, rel=1e-6)


def test_background_pinning_starts_reading_after_one_slot():
    slot_seconds = 1e-3 + 16 * MiB / 1e8
    result = upload(toy_platform(host__pin_in_background=True, **SLOW_PIN), make_request([64 * MiB]), RING)
    reads = spans(result, "read/")
    pins = spans(result, "alloc/d0", "pin")
    assert len(pins) == 4
    assert reads[0].start == pytest.approx(slot_seconds, rel=1e-6)
    # each read waits for its own slot, and only for it
    for k, read in enumerate(reads):
        assert read.start >= pins[k].end - 1e-12
    up_front = upload(toy_platform(**SLOW_PIN), make_request([64 * MiB]), RING)
    assert result.seconds < up_front.seconds


def test_a_cancelled_run_stops_pinning_and_leaves_nothing_to_the_next():
    from halsim.engine import CancelToken
    from halsim.errors import UploadCancelled

    platform = toy_platform(host__pin_in_background=True, host__register_stalls_copies=True, **SLOW_PIN)
    request = make_request([64 * MiB])
    sim = Simulator(platform)
    device = sim.device(0)
    plan = RING.plan(request, device.caps)
    token = CancelToken()
    trace = Trace()
    with pytest.raises(UploadCancelled):
        Engine().run(plan, None, [device], trace=trace, progress=lambda done, total: token.cancel(), cancel=token)
    pins = spans_of(trace, "alloc/d0", "pin")
    assert 1 <= len(pins) < 4  # the slot being pinned finished; the rest never started
    # Nothing of the cancelled run goes on: the next run on this machine takes what a fresh one does.
    again = Engine().run(plan, None, [device])
    fresh = upload(platform, request, RING)
    assert again.seconds == pytest.approx(fresh.seconds, rel=1e-9)
    assert len(spans(again, "alloc/d0", "pin")) == 4


UNPIN = {"host__unpin_per_call": "2ms", "host__unpin_bandwidth": "1GB/s"}


@pytest.mark.parametrize("background", [False, True])
def test_the_ring_is_freed_after_the_last_step_not_before_the_first(background):
    """Freeing costs slots x unpin_per_call + bytes / unpin_bandwidth, after every step (as the real
    ring's close()); the first read waits for pinning alone."""
    platform = toy_platform(host__pin_in_background=background, **SLOW_PIN, **UNPIN)
    result = upload(platform, make_request([64 * MiB]), RING)
    without = upload(toy_platform(host__pin_in_background=background, **SLOW_PIN), make_request([64 * MiB]), RING)
    freeing = 4 * 2e-3 + 64 * MiB / 1e9
    (unpin,) = spans(result, "alloc/d0", "unpin")
    assert unpin.seconds == pytest.approx(freeing, rel=1e-6)
    last_step = max(s.end for s in result.trace.spans if s.lane.startswith(("read/", "copy/")))
    assert unpin.start == pytest.approx(last_step, abs=1e-9)
    assert spans(result, "read/")[0].start == pytest.approx(spans(without, "read/")[0].start, rel=1e-9)
    assert result.seconds == pytest.approx(without.seconds + freeing, rel=1e-6)
    assert not spans(without, "alloc/d0", "unpin")  # not given: pinning's figures cover the freeing


def test_a_cancelled_ring_frees_only_the_slots_it_pinned():
    from halsim.engine import CancelToken
    from halsim.errors import UploadCancelled

    platform = toy_platform(host__pin_in_background=True, **SLOW_PIN, **UNPIN)
    sim = Simulator(platform)
    device = sim.device(0)
    plan = RING.plan(make_request([64 * MiB]), device.caps)
    token, trace = CancelToken(), Trace()
    with pytest.raises(UploadCancelled):
        Engine().run(plan, None, [device], trace=trace, progress=lambda done, total: token.cancel(), cancel=token)
    pinned = len(spans_of(trace, "alloc/d0", "pin"))
    (unpin,) = spans_of(trace, "alloc/d0", "unpin")
    assert 1 <= pinned < 4
    assert unpin.nbytes == pinned * 16 * MiB
    assert unpin.seconds == pytest.approx(pinned * (2e-3 + 16 * MiB / 1e9), rel=1e-6)


def test_staging_ready_after_release_is_an_error():
    from halsim.errors import DeviceError
    from halsim.trace import Trace

    sim = Simulator(toy_platform(host__pin_in_background=True, **SLOW_PIN))
    device = sim.device(0)
    execution = device.open(RING.plan(make_request([64 * MiB]), device.caps), None, Trace(), 0)
    execution.allocate()
    execution.release(keep_buffers=False)
    with pytest.raises(DeviceError, match="after release"):
        execution.staging_ready()


def test_copies_alone_never_wait_for_the_driver_lock():
    """Nothing registers or pins here: with the lock or without, two GPUs' rings take the same time."""
    request = make_request([256 * MiB, 256 * MiB], devices=2)
    policy = StreamingPolicy(chunk=16 * MiB, slots=4, readers=4)
    times = []
    for stalls in (False, True):
        platform = toy_platform(gpus=2, host__register_stalls_copies=stalls, host__memcpy_per_thread="100GB/s",
                                storage__page_cache_bandwidth="100GB/s")
        sim = Simulator(platform)
        devices = [sim.device(0), sim.device(1)]
        plan = policy.plan(request, [d.caps for d in devices])
        times.append(Engine().run(plan, None, devices).seconds)
    assert times[1] == pytest.approx(times[0], rel=1e-9)


def test_calibration_waits_for_a_background_pool():
    from halsim.plan import Limits, Plan, StagingPool
    from halsim.request import SourceInfo, UploadRequest
    from halsim.trace import Trace

    sim = Simulator(toy_platform(host__pin_in_background=True, **SLOW_PIN))
    device = sim.device(0)
    request = UploadRequest(SourceInfo("none", 0, 4096, True), (), ())
    plan = Plan(RING, RING, request, (), (StagingPool(0, 4, 16 * MiB),), (), Limits())
    execution = device.open(plan, None, Trace(), 0)
    start = device.now()
    execution.allocate()
    execution.staging_ready()
    execution.release(keep_buffers=False)
    assert device.now() - start == pytest.approx(4 * (1e-3 + 16 * MiB / 1e8), rel=1e-3)


# Registration as fast as the link: 2 GB/s each.
IMPORT = ImportPolicy(piece=64 * MiB)


def test_registration_runs_on_while_copies_queued_before_it_do():
    request = make_request([512 * MiB])
    n, piece = 512 * MiB, 64 * MiB
    free = upload(toy_platform(host__register_bandwidth="2GB/s"), request, IMPORT)
    locked = upload(toy_platform(host__register_bandwidth="2GB/s", host__register_stalls_copies=True), request,
                    IMPORT)
    # Overlapped: the copies (n / 2 GB/s) plus the first piece's registration, with the lock
    # too: each piece's copy is queued before the next piece's registration takes the lock.
    assert free.seconds == pytest.approx(n / (2 * GB) + piece / (2 * GB), rel=0.02)
    assert locked.seconds == pytest.approx(free.seconds, rel=0.02)
    for copy in spans(locked, "copy/"):
        assert not any(r.start < copy.start < r.end for r in spans(locked, "import/d0", "import"))


def test_a_registration_waits_for_copies_handed_over_after_it_was():
    # With a dispatcher the engine hands the next registration over before the copy
    # of the piece just registered (one step_overhead apart). As the CUDA backend does,
    # the registration waits until that copy is queued, and the copy runs on during it.
    request = make_request([512 * MiB])
    n, piece, overhead = 512 * MiB, 64 * MiB, 1e-3
    locked = upload(toy_platform(host__register_bandwidth="2GB/s", host__register_stalls_copies=True,
                                 host__step_overhead="1ms"), request, IMPORT)
    registrations = spans(locked, "import/d0", "import")
    copies = spans(locked, "copy/")
    for copy in copies[:-1]:  # (the span of a registration includes its wait for the copy)
        overlap = max(min(copy.end, r.end) - max(copy.start, r.start) for r in registrations)
        assert overlap >= 0.9 * (copy.end - copy.start)
    # Each piece after the first is copied while the next registers: the copies end
    # one piece and a few dispatch turns after the last registration, not n / 2 GB/s after it.
    assert copies[-1].end - registrations[-1].end < piece / (2 * GB) + 8 * overhead
    assert locked.seconds < n / (2 * GB) + 2 * piece / (2 * GB) + 8 * n // piece * overhead


def test_unregistering_waits_for_the_copies_in_flight_and_holds_back_the_next():
    request = make_request([512 * MiB])
    n, piece = 512 * MiB, 64 * MiB
    copies, unpinning = n / (2 * GB), n / (4 * GB)  # the toy link: 2 GB/s
    unpin = {"host__register_bandwidth": "4GB/s", "host__unregister_bandwidth": "4GB/s"}
    at_end_policy = ImportPolicy(piece=piece, release="at_end")
    free = upload(toy_platform(**unpin), request, IMPORT)
    locked = upload(toy_platform(host__register_stalls_copies=True, **unpin), request, IMPORT)
    at_end = upload(toy_platform(host__register_stalls_copies=True, **unpin), request, at_end_policy)
    # Without the lock, releases overlap the copies: the first registration and the last release show.
    assert free.seconds == pytest.approx(copies + 2 * piece / (4 * GB), rel=0.02)
    # With it, each release waits for the copies in flight and holds the next ones back.
    assert locked.seconds >= copies + unpinning
    for copy in spans(locked, "copy/"):
        assert not any(r.start < copy.start < r.end for r in spans(locked, "import/d0", "unimport"))
    # Released at the end: the registrations overlap the copies, the releases follow the last one.
    assert at_end.seconds == pytest.approx(copies + piece / (4 * GB) + unpinning, rel=0.02)
    assert at_end.seconds < locked.seconds
    releases = spans(at_end, "import/d0", "unimport")
    assert len(releases) == n // piece and releases[0].start >= spans(at_end, "copy/")[-1].end - 1e-12


def test_copies_wait_while_slots_are_pinned_in_the_background():
    request = make_request([256 * MiB])
    pins = {"host__pin_bandwidth": "2GB/s", "host__pin_in_background": True}
    free = upload(toy_platform(**pins), request, RING)
    locked = upload(toy_platform(host__register_stalls_copies=True, **pins), request, RING)
    assert locked.seconds > free.seconds
    pinning = spans(locked, "alloc/d0", "pin")
    assert len(pinning) == 4
    for copy in spans(locked, "copy/"):  # no copy is queued while a slot is being pinned
        assert not any(p.start < copy.start < p.end for p in pinning)


def test_flags_round_trip_through_toml():
    from halsim.platform import load_platform

    p = toy_platform(host__pin_in_background=True, host__register_stalls_copies=True)
    text = p.to_toml()
    assert "pin_in_background = true" in text and "register_stalls_copies = true" in text
    import tempfile, os
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "p.toml")
        with open(path, "w") as f:
            f.write(text)
        assert load_platform(path) == p


def test_staging_first_runs_no_step_before_the_whole_pool_is_pinned():
    sim = Simulator(toy_platform(host__pin_in_background=True, **SLOW_PIN))
    device = sim.device(0)
    plan = RING.plan(make_request([64 * MiB]), device.caps)
    result = Engine().run(plan, None, [device], staging_first=True)
    pins = spans(result, "alloc/d0", "pin")
    assert len(pins) == 4
    assert spans(result, "read/")[0].start >= pins[-1].end - 1e-12


def test_the_driver_lock_holds_back_only_copies_queued_while_it_is_held():
    import simpy

    from halsim.sim.gates import DriverLock, holding
    from halsim.sim.tasks import Task

    env = simpy.Environment()
    lock = DriverLock(env)
    queued = {}

    def holder(name, at, seconds):
        yield env.timeout(at)
        with holding(lock) as waited:
            if waited is not None:
                yield waited
            queued[name] = env.now
            yield env.timeout(seconds)

    def copy(name, at):
        yield env.timeout(at)
        yield from lock.queue_past()
        queued[name] = env.now

    Task(copy("before", 0.0))
    Task(holder("register", 0.0, 1.0))
    Task(copy("during", 0.5))
    Task(holder("unregister", 0.2, 1.0))  # next in line: takes the lock when the first lets go
    Task(copy("later", 1.5))
    env.run()
    assert queued == {"before": 0.0, "register": 0.0, "unregister": 1.0, "during": 1.0, "later": 2.0}


def test_one_driver_lock_for_every_gpu_of_a_machine():
    sim = Simulator(toy_platform(gpus=2, host__register_stalls_copies=True))
    assert sim.machine.driver_lock is not None
    assert Simulator(toy_platform(gpus=2)).machine.driver_lock is None
