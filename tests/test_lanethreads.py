"""Lane threads: steps run in hand-over order on one thread, errors reach the waiter, shutdown fails what never started."""

import threading
import time

import pytest

from halsim.device import Device, Pending
from halsim.errors import UploadCancelled
from halsim.lanethreads import LaneThreads
from halsim.plan import Op, Step


class _Clock(Device):  # the default wait, nothing else
    name = "clock"

    def open(self, *args, **kwargs):  # pragma: no cover - never opened
        raise NotImplementedError


def _step(k: int) -> Step:
    return Step(k, Op.READ, 0, 1)


def _wait_all(pendings):
    left, done = list(pendings), []
    while left:
        finished = _Clock().wait(left, timeout=5)
        assert finished, "a step never finished"
        done += finished
        left = [p for p in left if p not in finished]
    return done


def test_one_thread_runs_a_lanes_steps_in_the_order_handed_over():
    ran = []
    lane = LaneThreads(1, "t", lambda step: ran.append(step.id))
    try:
        pendings = [lane.submit(Pending(_step(k))) for k in range(200)]
        _wait_all(pendings)
    finally:
        lane.shutdown()
    assert ran == list(range(200))
    assert all(p.finished and p.error is None for p in pendings)


def test_a_steps_error_is_its_pendings_and_the_lane_goes_on():
    def run(step):
        if step.id == 1:
            raise OSError("short read")
    lane = LaneThreads(2, "t", run)
    try:
        pendings = [lane.submit(Pending(_step(k))) for k in range(3)]
        _wait_all(pendings)
    finally:
        lane.shutdown()
    assert isinstance(pendings[1].error, OSError) and pendings[0].error is None and pendings[2].error is None


def test_a_thread_whose_setup_failed_fails_every_step_it_takes():
    lane = LaneThreads(1, "t", lambda step: None, setup=lambda: (_ for _ in ()).throw(RuntimeError("no context")))
    try:
        pendings = [lane.submit(Pending(_step(k))) for k in range(2)]
        _wait_all(pendings)
    finally:
        lane.shutdown()
    assert all(isinstance(p.error, RuntimeError) for p in pendings)


def test_shutdown_fails_the_steps_not_started_and_waits_for_the_running_one():
    release, started = threading.Event(), threading.Event()

    def run(step):
        started.set()
        release.wait(5)
    lane = LaneThreads(1, "t", run)
    running = lane.submit(Pending(_step(0)))
    queued = [lane.submit(Pending(_step(k))) for k in (1, 2)]
    assert started.wait(5)
    threading.Timer(0.05, release.set).start()
    lane.shutdown()
    assert running.finished and running.error is None  # shutdown waited for it
    assert all(isinstance(p.error, UploadCancelled) for p in queued)
    assert not any(t.is_alive() for t in lane._threads)


def test_wait_times_out_with_nothing_finished_and_takes_futures_too():
    import concurrent.futures as cf

    blocked = Pending(_step(0))
    assert _Clock().wait([blocked], timeout=0.01) == []
    future = cf.Future()
    via_future = Pending(_step(1), future)
    future.set_exception(ValueError("bad"))
    assert _Clock().wait([blocked, via_future], timeout=1) == [via_future]
    assert isinstance(via_future.error, ValueError)
    blocked.complete()
    assert _Clock().wait([blocked], timeout=1) == [blocked]


def test_threads_start_as_steps_come_and_one_that_cannot_start_says_so(monkeypatch):
    from halsim.errors import HalsimError

    release = threading.Event()
    lane = LaneThreads(4, "lane-x", lambda step: release.wait(5))
    assert not lane._threads  # nothing handed over: no thread
    first = lane.submit(Pending(_step(0)))
    assert len(lane._threads) == 1
    real_start = threading.Thread.start

    def start(self):
        raise RuntimeError("can't start new thread")
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(HalsimError, match="cannot start thread 2 of 4 for lane-x: can't start new thread"):
        lane.submit(Pending(_step(1)))
    monkeypatch.setattr(threading.Thread, "start", real_start)
    release.set()
    lane.shutdown()  # what a failed run's cleanup does: the thread that started is joined
    assert first.finished and not any(t.is_alive() for t in lane._threads)


def test_a_lane_that_shut_down_refuses_steps():
    from halsim.errors import HalsimError

    lane = LaneThreads(1, "lane-y", lambda step: None)
    lane.shutdown()
    with pytest.raises(HalsimError, match="handed to lane-y after it shut down"):
        lane.submit(Pending(_step(0)))


def test_a_cancelled_future_finishes_its_pending_as_cancelled():
    import concurrent.futures as cf

    future = cf.Future()
    pending = Pending(_step(0), future)
    assert future.cancel()
    assert _Clock().wait([pending], timeout=1) == [pending]
    assert isinstance(pending.error, UploadCancelled)


def test_a_pending_wakes_the_thread_that_waits_for_it_last():
    pending = Pending(_step(0))
    assert _Clock().wait([pending], timeout=0.01) == []  # this thread waited first
    got = []
    waiter = threading.Thread(target=lambda: got.append(_Clock().wait([pending], timeout=5)))
    waiter.start()
    time.sleep(0.05)  # the other thread is blocked in its wait by now (if not, its scan finds the step done)
    pending.complete()
    waiter.join(5)
    assert got == [[pending]]
