"""``SimDevice``: a GPU of a simulated machine, driven by the one engine.

Each submitted step becomes a coroutine on simpy events that goes through the machine's
resources — a reader thread, the drive's queue, flows on the network, a copy
engine, the import lane — and records what it did in the Trace: one span on
the step's lane (``read/<k>``, ``copy/d<i>q<q>``, ``import/d<i>``,
``direct/d<i>``, as real devices do) and one per resource it crossed
(``storage``, ``memcpy``, ``link/d<g>/h2d``...). Before any of that, a step
waits for the engine's dispatcher when the platform gives it a cost
(``engine`` lane, :mod:`halsim.sim.dispatch`).

Given a real file, an execution also moves the real bytes (numpy buffers), so
a simulated upload can be compared byte for byte with a real one. Without a
file it only accounts for ranges.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Generator

import numpy as np

from halsim.device import Device, DeviceBuffer, Execution, Pending
from halsim.errors import DeviceError, HalsimError
from halsim.files import copy_bytes
from halsim.plan import Op, Step
from halsim.request import BufferSpec
from halsim.sim.dispatch import DISPATCH_OP, ENGINE_LANE
from halsim.sim.gates import holding
from halsim.sim.readahead import ReadAhead
from halsim.sim.tasks import Task, fire
from halsim.trace import IMPORTED, STAGING, alloc_lane, device_counter

if TYPE_CHECKING:
    from halsim.sim.simulator import Simulator

# Keys of the time a step spent not moving bytes, for explain().
LATENCY = "storage latency"
QUEUE = "storage queue"
OVERHEAD = "copy overhead"
REGISTER = "registration"
BOUND_META = "sim_bound"  # trace.meta key: step id -> {what limited it: seconds}


def _merge(into: dict[str, float], more: dict[str, float]) -> None:
    for key, seconds in more.items():
        into[key] = into.get(key, 0.0) + seconds


class SimBuffer(DeviceBuffer):
    def __init__(self, spec: BufferSpec, device_name: str, array: np.ndarray | None):
        super().__init__(spec, device_name)
        self.array = array  # None when simulating without a file: no bytes to hold

    def to_bytes(self) -> bytes:
        if self.array is None:
            raise DeviceError(f"buffer {self.name!r} holds no bytes: it was simulated without a file "
                              "(pass a HalFile to move real bytes)", device=self.device_name)
        return self.array.tobytes()

    def tensor(self) -> np.ndarray:
        if self.array is None:
            raise DeviceError(f"buffer {self.name!r} holds no bytes (simulated without a file)",
                              device=self.device_name)
        return self.array


class SimExecution(Execution):
    def __init__(self, device: "SimDevice", *args, **kwargs):
        super().__init__(device, *args, **kwargs)
        self.sim = device.simulator
        self.machine = device.simulator.machine
        self.gpu = device.gpu
        self.request = self.plan.request
        self.routes = self.machine.gpu_routes[self.gpu]
        self.gpu_spec = self.machine.platform.gpus[self.gpu]
        self._buffers: dict[int, SimBuffer] = {}
        self._device_bytes: dict[int, int] = {}  # buffers this execution allocated
        self._staging_bytes = 0
        self._slots: list[np.ndarray] = []
        self._slot_ready: list = []  # simpy events, when slots are pinned in the background
        self._stop_pinning = False
        self._pinning = None  # the slot being pinned now, if any
        self._pinned_slots = 0  # slots pinned so far: what release() unpins
        self._slot_bytes = 0
        self._windows: dict[int, memoryview | None] = {}
        self._real = self.file is not None
        self._meta = self.trace.meta.setdefault(BOUND_META, {})
        self.trace.meta.setdefault("platform", self.machine.platform.name)
        self._perform = {
            Op.READ: self._read, Op.WRITE: self._write, Op.COPY: self._copy, Op.COPY_BACK: self._copy,
            Op.COPY_IMPORTED: self._copy, Op.IMPORT: self._import, Op.UNIMPORT: self._unimport,
            Op.BIND: self._bind, Op.DIRECT: self._direct,
        }
        platform, machine, routes = self.machine.platform, self.machine, self.routes
        self._overhead = platform.link_of(self.gpu).overhead
        self._latency = platform.storage.latency
        self._engines = machine.copy_engines[self.gpu]
        h2d, d2h = (routes.h2d, routes.d2h) if machine.pinned_staging else (routes.h2d_pageable, routes.d2h_pageable)
        # Registered (imported) memory is pinned whatever the staging is.
        self._copy_routes = {Op.COPY: (h2d, f"link/d{self.gpu}/h2d"), Op.COPY_BACK: (d2h, f"link/d{self.gpu}/d2h"),
                             Op.COPY_IMPORTED: (routes.h2d, f"link/d{self.gpu}/h2d")}
        self._o_direct = platform.storage.o_direct
        self._hit_rate = platform.storage.page_cache_hit_rate if self.request.source.page_cached else 0.0
        self._cached_read = machine.host_routes.cached_read
        storage = platform.storage
        self._read_ahead = ReadAhead(machine.net, machine.host_routes.read_ahead, storage.read_ahead,
                                     storage.latency, self.request.source.length, self.trace, self.index) \
            if self._hit_rate < 1.0 and not self._o_direct and storage.read_ahead else None
        self._flat_page_cache = not machine.platform.storage.page_cache_curve
        # A ring whose slots fit in the CPU's cache reads faster (storage.page_cache_near_bytes; one slot, less;
        # several readers by their own curve, storage.page_cache_ring_curve).
        pool = self.plan.pool(self.index)
        self._ring_read_speedup = storage.near_speedup(pool.slots, pool.bytes, self.plan.limits.readers) \
            if pool is not None else 1.0
        # ... and with many readers, less of what they write reaches host memory (host.staging_write_curve).
        self._ring_write_share = platform.host.staging_write_share(pool.bytes) if pool is not None else 1.0
        self._queue_lanes = {q: f"copy/d{self.index}q{q}" for q in range(max(self.plan.limits.queues, 1))}
        self._import_queues = self.plan.import_queues(self.index)
        # Registering inside an upload (copies out of imported memory streaming) costs more than alone.
        self._register_factor = machine.platform.host.register_upload_factor if self._import_queues else 1.0
        # The import lane's turn-around grows with the copies out of the window registered last (beyond
        # the first), the ones the engine's thread is handing over and completing meanwhile; registered
        # windows only (an in-place one is mapped, its buffers bound), and only while copies remain.
        per_copy = machine.platform.host.import_handover_per_copy
        copies = Counter(s.window for s in self.plan.steps if s.op is Op.COPY_IMPORTED and s.device == self.index
                         and not self.plan.windows[s.window].in_place) if per_copy else Counter()
        self._handover_wait = {window: per_copy * (n - 1) for window, n in copies.items() if n > 1}
        self._copies_counted = copies
        self._copies_left = sum(copies.values())
        self._registered_last: int | None = None  # the window the import lane registered last
        self._dispatcher = self.sim.dispatcher
        self._step_cost = platform.host.step_cost(self.plan.threads_at_once())
        # Copies out of imported memory handed over but not yet queued: as the CUDA
        # backend does, a registration waits for them (queued first, they run on during it).
        self._unqueued: set[int] = set()
        self._all_queued = None  # fires when _unqueued empties

    # ---------------------------------------------------------------- memory
    def adopt_buffers(self, buffers: dict[int, DeviceBuffer]) -> None:
        """Use an earlier upload's buffers (a download reads them back)."""
        self._buffers = dict(buffers)  # type: ignore[arg-type]
        self._adopted = True

    def allocate(self) -> None:
        machine, trace, name = self.machine, self.trace, self.device.name
        pool = machine.device_memory[self.gpu]
        try:
            start, calls, allocated = machine.now, 0, 0
            for index, spec in self.buffers_to_allocate():
                if self.faults is not None:
                    self.faults.on_allocate("device", spec.size, self)
                pool.take(spec.size, f"buffer {spec.name!r}", name)
                self._device_bytes[index] = spec.size
                array = np.zeros(spec.size, dtype=np.uint8) if self._real else None
                self._buffers[index] = SimBuffer(spec, name, array)
                trace.change(device_counter(self.index), machine.now, spec.size)
                calls, allocated = calls + 1, allocated + spec.size
            if calls:  # one call after another, before the staging is pinned (as a real device does)
                self.sim.advance(machine.alloc_seconds(self.gpu, allocated, calls))
                trace.span(alloc_lane(self.index), "alloc", start, machine.now, allocated, -1, self.index)
            staging = self.plan.pool(self.index)
            if staging is not None and staging.bytes:
                if self.faults is not None:
                    self.faults.on_allocate("staging", staging.bytes, self)
                machine.host_memory.take(staging.bytes, f"{staging.slots} staging slot(s) of "
                                         f"{staging.slot_bytes} bytes", name)
                self._staging_bytes = staging.bytes
                trace.change(STAGING, machine.now, staging.bytes)
                if self._real:
                    self._slots = [np.empty(staging.slot_bytes, dtype=np.uint8) for _ in range(staging.slots)]
                calls = staging.slots if machine.pinned_staging else 0
                seconds = machine.pin_seconds(staging.bytes, calls) if machine.pinned_staging else 0.0
                if seconds > 0 and machine.platform.host.pin_in_background:
                    self._slot_ready = [machine.env.event() for _ in range(staging.slots)]
                    self._slot_bytes, self._pin_started = staging.slot_bytes, machine.now
                    machine.env.process(self._pin_slots(staging.slot_bytes))
                elif seconds > 0:
                    start = machine.now
                    self.sim.advance(seconds)
                    self._slot_bytes, self._pinned_slots = staging.slot_bytes, staging.slots
                    trace.span(alloc_lane(self.index), "pin", start, machine.now, staging.bytes, -1, self.index)
        except BaseException:
            self.release(keep_buffers=False)
            raise

    def _pin_slots(self, slot_bytes: int) -> Generator:
        """Pin the staging slots one by one, as the CUDA backend's background thread does."""
        machine, env = self.machine, self.machine.env
        per_call = machine.platform.host.pin_per_call
        for ready in self._slot_ready:
            if self._stop_pinning:
                return  # released (an error, a cancel, or a run that needed fewer slots)
            start = self._pin_started = env.now
            self._pinning = ready
            with holding(machine.driver_lock) as taken:
                if taken is not None:
                    yield taken
                if per_call:
                    yield env.timeout(per_call)
                flow = machine.net.start(machine.host_routes.pin, slot_bytes)
                yield flow.done
            self.trace.span(alloc_lane(self.index), "pin", start, env.now, slot_bytes, -1, self.index)
            self._pinned_slots += 1
            self._pinning = None
            ready.succeed()

    def _advance_until(self, done) -> None:
        """Let simulated time pass until the event ``done``, a slot's pinning at a time:
        by what pinning a slot takes alone, exact when nothing else runs
        (calibration), and converging when something does."""
        host = self.machine.platform.host
        alone = host.pin_per_call + self._slot_bytes / host.pin_bandwidth
        while not done.triggered:
            self.sim.advance(max(alone - (self.machine.now - self._pin_started), 1e-9))

    def staging_ready(self) -> None:
        if self._stop_pinning:
            raise DeviceError("staging_ready after release: the staging is gone", device=self.device.name)
        for ready in self._slot_ready:
            self._advance_until(ready)

    def release(self, keep_buffers: bool) -> None:
        machine, trace = self.machine, self.trace
        self._stop_pinning = True
        if self._read_ahead is not None:
            self._read_ahead.close()
        # As the real ring's close() joins its thread: the slot being pinned finishes first
        # (and no pinning of this run goes on into the next one on this machine).
        if self._pinning is not None:
            self._advance_until(self._pinning)
        if self._pinned_slots:
            # The ring frees its slots after the last step, as the real one's close() does.
            slots, self._pinned_slots = self._pinned_slots, 0
            seconds = machine.unpin_seconds(slots * self._slot_bytes, slots)
            if seconds > 0:
                start = machine.now
                self.sim.advance(seconds)
                trace.span(alloc_lane(self.index), "unpin", start, machine.now, slots * self._slot_bytes, -1,
                           self.index)
        now = machine.now
        if self._staging_bytes:
            machine.host_memory.give(self._staging_bytes)
            trace.change(STAGING, now, -self._staging_bytes)
            self._staging_bytes = 0
            self._slots = []
        for window_id in list(self._windows):
            window = self.plan.windows[window_id]
            if keep_buffers and window.in_place:
                continue  # it *is* a buffer the caller keeps
            del self._windows[window_id]
            trace.change(IMPORTED, now, -window.length)
        if not keep_buffers:
            pool = machine.device_memory[self.gpu]
            for index, size in self._device_bytes.items():
                pool.give(size)
                trace.change(device_counter(self.index), now, -size)
            self._device_bytes.clear()
            if not self._adopted:
                self._buffers.clear()

    def buffers(self) -> dict[int, DeviceBuffer]:
        return dict(self._buffers)

    # ---------------------------------------------------------------- steps
    def submit(self, step: Step) -> Pending:
        if step.op is Op.COPY_IMPORTED and self.machine.driver_lock is not None and \
                step.queue % max(1, self.plan.limits.queues) in self._import_queues:
            self._unqueued.add(step.id)
        pending = Pending(step, None)
        pending.handle = Task(self._run(step, pending))
        return pending

    def _run(self, step: Step, pending: Pending) -> Generator:
        dispatcher = self._dispatcher
        if dispatcher is not None:
            # The engine's thread hands the step over first: its turn, in submission order.
            start, end, delay = dispatcher.book(self._step_cost)
            self.trace.span(ENGINE_LANE, DISPATCH_OP, start, end, 0, step.id, self.index)
            yield self.machine.env.timeout(delay)
        try:
            if self._slot_ready and step.slot >= 0:
                ready = self._slot_ready[step.slot]
                if not ready.triggered:
                    yield ready  # its slot is still being pinned
            if self.faults is not None:
                self.faults.before(step, self)
            bound: dict[str, float] = {}
            yield from self._perform[step.op](step, bound)
            if bound:
                self._meta[step.id] = bound
            if self._copies_left and step.op is Op.COPY_IMPORTED and step.window in self._copies_counted:
                self._copies_left -= 1
        except HalsimError as err:
            pending.error = err
        except Exception as err:
            pending.error = DeviceError(f"{type(err).__name__}: {err}", device=self.device.name,
                                        step=step.describe(self.request))
        finally:
            self._queued(step.id)  # also when it failed before being queued
        self.sim.finished(pending)

    def _queued(self, step_id: int) -> None:
        unqueued = self._unqueued
        if step_id in unqueued:
            unqueued.discard(step_id)
            if not unqueued and self._all_queued is not None:
                all_queued, self._all_queued = self._all_queued, None
                fire(all_queued)

    def _until_copies_queued(self) -> Generator:
        while self._unqueued:
            if self._all_queued is None:
                self._all_queued = self.machine.env.event()
            yield self._all_queued

    def _flow(self, cls: int, nbytes: int, bound: dict[str, float]) -> Generator:
        flow = self.machine.net.start(cls, nbytes)
        yield flow.done
        _merge(bound, flow.bound)

    def _storage(self, cls: int, nbytes: int, op: str, bound: dict[str, float], latency: bool = True,
                 drive_bytes: int | None = None) -> Generator:
        """A transfer that starts at the drive: wait for a queue place, the latency, then the bytes
        (no latency where the drive is streaming this range already; ``drive_bytes`` of them from the drive)."""
        machine, env = self.machine, self.machine.env
        queue = machine.storage_queue
        waited = queue.acquire()
        t0 = env.now
        if waited is not None:
            yield waited
            bound[QUEUE] = bound.get(QUEUE, 0.0) + env.now - t0
        try:
            start = env.now
            if self._latency and latency:
                yield env.timeout(self._latency)
                bound[LATENCY] = bound.get(LATENCY, 0.0) + self._latency
            yield from self._flow(cls, nbytes, bound)
        finally:
            queue.release()
        self.trace.span("storage", op, start, env.now, nbytes if drive_bytes is None else drive_bytes, -1, self.index)

    def _split(self, nbytes: int) -> tuple[int, int]:
        """(bytes from the drive, bytes from the page cache) of a buffered read."""
        hit = self._hit_rate
        if hit == 1.0:
            return 0, nbytes
        cached = int(round(nbytes * hit))
        return nbytes - cached, cached

    def _buffered_read(self, step: Step, op: str, bound: dict, speedup: float = 1.0,
                       write_share: float = 1.0) -> Generator:
        """A read through the page cache: the drive for what the cache lacks, then one thread's copy
        (``speedup`` times one thread's rate and ``write_share`` of its writes on host memory: into
        slots that stay in the CPU's cache)."""
        machine = self.machine
        cold, cached = self._split(step.length)
        ahead = self._read_ahead.take(step.file_offset, cold) if cold and self._read_ahead is not None else 0
        if ahead == cold:
            cold, cached, ahead = 0, cached + cold, 0
        if cold:
            if ahead:  # the drive carries the rest; the thread copies it all
                start = machine.env._now
                cls = machine.cold_read_class((cold - ahead) / cold)
                yield from self._storage(cls, cold, op, bound, latency=False, drive_bytes=cold - ahead)
                self.trace.span("memcpy", op, start, machine.env._now, ahead, step.id, self.index)
            else:
                yield from self._storage(machine.host_routes.cold_read, cold, op, bound)
        if cached:
            cls = self._cached_read if self._flat_page_cache and speedup == 1.0 and write_share == 1.0 else \
                machine.cached_read_class(step.length, speedup, write_share)
            flow = machine.net.start(cls, cached)
            yield flow.done
            _merge(bound, flow.bound)
            self.trace.span("memcpy", op, flow.started, machine.env._now, cached, step.id, self.index)
        if self._read_ahead is not None:
            self._read_ahead.after(step.file_offset + step.length)

    def _read(self, step: Step, bound: dict) -> Generator:
        machine = self.machine
        env = machine.env
        k = machine.readers.take()
        start = env._now
        try:
            if self._o_direct:
                yield from self._storage(machine.host_routes.direct_read, step.length, "read", bound)
            else:
                yield from self._buffered_read(step, "read", bound, self._ring_read_speedup, self._ring_write_share)
            if self._real:
                self.file.read_into(step.file_offset, self._slot(step))
        finally:
            machine.readers.give(k)
        self.trace.span(f"read/{k}", "read", start, env._now, step.length, step.id, self.index)

    def _write(self, step: Step, bound: dict) -> Generator:
        machine, env, host = self.machine, self.machine.env, self.machine.host_routes
        k = machine.readers.take()
        start = env.now
        try:
            if machine.platform.storage.o_direct:
                yield from self._storage(host.direct_write, step.length, "write", bound)
            else:
                yield from self._flow(host.cached_write, step.length, bound)
                self.trace.span("memcpy", "write", start, env.now, step.length, step.id, self.index)
            if self._real:
                self.file.write_from(step.file_offset, self._slot(step))
        finally:
            machine.readers.give(k)
        self.trace.span(f"read/{k}", "write", start, env.now, step.length, step.id, self.index)

    def _copy(self, step: Step, bound: dict) -> Generator:
        engines = self._engines
        engine = engines[step.queue % len(engines)]
        lock = self.machine.driver_lock
        # Where the driver's lock holds copies back, a copy waits for it while being queued:
        # on a queue that copies out of imported memory the backend queues several at once
        # (so before their engine is free), on a ring's one at a time (once the previous is done).
        queued_early = step.queue % max(1, self.plan.limits.queues) in self._import_queues
        if lock is not None and queued_early:
            yield from lock.queue_past()
            self._queued(step.id)
        waited = engine.acquire()
        if waited is not None:
            yield waited  # copies on one engine run in order
        if lock is not None and not queued_early:
            try:
                yield from lock.queue_past()
            except BaseException:
                engine.release()
                raise
        env = self.machine.env
        start = env._now
        cls, lane = self._copy_routes[step.op]
        # The per-transfer overhead delays the bytes but uses no bandwidth.
        flow = self.machine.net.start(cls, step.length, self._overhead)
        if lock is not None:  # only an unregistration, under the lock, waits for copies in flight
            self.machine.copy_started(self.gpu)
        try:
            yield flow.done
        finally:
            if lock is not None:
                self.machine.copy_finished(self.gpu)
            engine.release()
        if self._overhead:
            bound[OVERHEAD] = flow.started - start
        bound.update(flow.bound)
        end = env._now
        op = step.op.value
        span = self.trace.span
        span(lane, op, flow.started, end, step.length, step.id, self.index)
        if self._real:
            self._move_copy(step)
        lane = self._queue_lanes.get(step.queue) or f"copy/d{self.index}q{step.queue}"
        span(lane, op, start, end, step.length, step.id, self.index)

    def _import(self, step: Step, bound: dict) -> Generator:
        machine, env = self.machine, self.machine.env
        window = self.plan.windows[step.window]
        lane = machine.import_lanes[self.gpu]
        waited = lane.acquire()
        if waited is not None:
            yield waited
        start = env.now
        try:
            wait = self._handover_due()
            if wait:
                yield env.timeout(wait)
                start = env.now
            # Pinning pages makes them resident: the cold part of the file is read in first
            # (a lazy in-place import only maps it: its pages are read after the upload).
            cold, _ = self._split(window.length)
            if cold and not (window.in_place and self.gpu_spec.lazy_import):
                yield from self._storage(machine.host_routes.fault_in, cold, "import", bound)
            begun = env.now
            if machine.driver_lock is not None and not window.in_place:
                # As the CUDA backend does: copies handed over before this registration are
                # queued before it takes the lock (they then run on during it).
                yield env.timeout(0)
                yield from self._until_copies_queued()
            with holding(machine.driver_lock) as taken:
                if taken is not None:
                    yield taken
                yield env.timeout(machine.platform.host.register_per_call * self._register_factor)
                if not window.in_place:  # in place: only map, one call
                    flow = machine.net.start(machine.register_class(self._register_factor), window.length)
                    yield flow.done
            bound[REGISTER] = bound.get(REGISTER, 0.0) + env.now - begun
            self._registered_last = window.id
            self._windows[window.id] = self._host_window(step, window) if self._real else None
            self.trace.change(IMPORTED, env.now, window.length)
        finally:
            lane.release()
        self.trace.span(f"import/d{self.index}", "import", start, env.now, window.length, step.id, self.index)

    def _handover_due(self) -> float:
        """What the import lane waits before its next step (host.import_handover_per_copy)."""
        if not self._copies_left or self._registered_last is None:
            return 0.0
        return self._handover_wait.get(self._registered_last, 0.0)

    def _unimport(self, step: Step, bound: dict) -> Generator:
        machine, env = self.machine, self.machine.env
        window = self.plan.windows[step.window]
        # A release holds no lane: with importers > 1 its wait, like its span, may overlap
        # other imports; calibration's probes run one importer, so the fit is not affected.
        wait = self._handover_due()
        if wait:
            yield env.timeout(wait)
        start = env.now
        seconds = machine.unregister_seconds(0 if window.in_place else window.length, self._register_factor)
        with holding(machine.driver_lock) as taken:
            if taken is not None:
                yield taken
            if machine.driver_lock is not None:
                # Unregistering waits for the GPU's copies in flight, and holds the lock meanwhile
                # (again after each wake: a copy queued before the lock was taken may start meanwhile).
                while (drained := machine.until_copies_done(self.gpu)) is not None:
                    yield drained
            if seconds:
                yield env.timeout(seconds)
        if env.now > start:
            bound[REGISTER] = env.now - start
        if self._windows.pop(window.id, False) is not False:
            self.trace.change(IMPORTED, env.now, -window.length)
        self.trace.span(f"import/d{self.index}", "unimport", start, env.now, window.length, step.id, self.index)

    def _bind(self, step: Step, bound: dict) -> Generator:
        # The buffer is the imported memory: nothing moves, nothing takes time.
        if step.window not in self._windows:
            raise DeviceError("bind before its window was imported", device=self.device.name,
                              step=step.describe(self.request))
        spec = self.request.buffers[step.buffer]
        array = None
        if self._real:
            checker = getattr(self.file, "check_unchanged", None)
            if checker is not None:
                checker()  # a buffer over a truncated mapping would SIGBUS when read
            window = self.plan.windows[step.window]
            view = self._windows[step.window]
            lo = step.file_offset - window.file_offset
            array = np.frombuffer(view[lo : lo + step.length], dtype=np.uint8)
        self._buffers[step.buffer] = SimBuffer(spec, self.device.name, array)
        now = self.machine.env.now
        self.trace.span(f"import/d{self.index}", "bind", now, now, step.length, step.id, self.index)
        return
        yield  # a generator like every step

    def _direct(self, step: Step, bound: dict) -> Generator:
        env = self.machine.env
        start = env.now
        if self.gpu_spec.direct_buffered:
            # A buffered read into the buffer; across the link too for a dedicated GPU.
            yield from self._buffered_read(step, "direct", bound)
            if self.gpu_spec.kind == "dedicated":
                yield from self._flow(self.routes.h2d, step.length, bound)
        else:
            yield from self._storage(self.routes.storage_h2d, step.length, "direct", bound)
        if self._real:
            buffer = self._buffers[step.buffer].array
            self.file.read_into(step.file_offset, memoryview(buffer)[step.buffer_offset : step.buffer_offset + step.length])
        self.trace.span(f"link/d{self.gpu}/h2d", "direct", start, env.now, step.length, step.id, self.index)
        self.trace.span(f"direct/d{self.index}", "direct", start, env.now, step.length, step.id, self.index)

    # ---------------------------------------------------------------- real bytes
    def _slot(self, step: Step) -> memoryview:
        return memoryview(self._slots[step.slot])[step.slot_offset : step.slot_offset + step.length]

    def _host_window(self, step: Step, window) -> memoryview:
        view = self.file.host_view()
        if view is None:
            raise DeviceError("the source has no host memory to import", device=self.device.name,
                              step=step.describe(self.request))
        checker = getattr(self.file, "check_unchanged", None)
        if checker is not None:
            checker()
        return view[window.file_offset : min(window.file_offset + window.length, len(view))]

    def _move_copy(self, step: Step) -> None:
        buffer = memoryview(self._buffers[step.buffer].array)[step.buffer_offset : step.buffer_offset + step.length]
        if step.op is Op.COPY:
            copy_bytes(buffer, self._slot(step))
        elif step.op is Op.COPY_BACK:
            copy_bytes(self._slot(step), buffer)
        else:
            checker = getattr(self.file, "check_unchanged", None)
            if checker is not None:
                checker()  # the file may have shrunk since its import: copying out of the map would SIGBUS
            window = self.plan.windows[step.window]
            lo = step.file_offset - window.file_offset
            copy_bytes(buffer, self._windows[step.window][lo : lo + step.length])


class SimDevice(Device):
    """GPU ``gpu`` of a :class:`~halsim.sim.Simulator`'s machine."""

    def __init__(self, simulator: "Simulator", gpu: int):
        platform = simulator.platform
        self.simulator = simulator
        self.gpu = gpu
        self.caps = platform.caps(gpu)
        many = len(platform.gpus) > 1
        # The registry's spelling, so get_device(device.name) gives this GPU again.
        self.name = f"sim:{platform.name}" + (f":{gpu}" if many else "")

    def now(self) -> float:
        return self.simulator.env.now

    @property
    def pins_staging_in_background(self) -> bool:
        return self.simulator.platform.host.pin_in_background

    @property
    def registration_stalls_copies(self) -> bool:
        return self.simulator.platform.host.register_stalls_copies

    @property
    def direct_reads_buffered(self) -> bool:
        return self.simulator.platform.gpus[self.gpu].direct_buffered

    @property
    def imports_lazily(self) -> bool:
        return self.simulator.platform.gpus[self.gpu].lazy_import

    def open(self, plan, file, trace, index: int = 0, faults=None) -> SimExecution:
        return SimExecution(self, plan, file, trace, index, faults)

    def wait(self, pending, timeout: float | None = None) -> list[Pending]:
        return self.simulator.wait(pending)

    def describe(self) -> dict[str, Any]:
        gpu = self.simulator.platform.gpus[self.gpu]
        return {"name": self.name, "gpu": gpu.name, "caps": self.caps.describe()}
