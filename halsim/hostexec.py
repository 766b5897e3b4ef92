"""Shared machinery of real devices driven from host threads.

File reads and writes (READ, WRITE, DIRECT's host fallback) are the same on
every real device: ``pread`` into host memory on ``readers`` threads, which
release the GIL. Copies go to one thread per copy queue, so a queue runs in
order as hardware queues do (a backend whose copies are asynchronous on an
in-order stream may take more: ``copy_threads_per_queue``). A backend subclasses :class:`HostExecution` and
supplies memory and copies (``alloc_buffer``, ``alloc_staging``, ``copy_in``...).
"""

from __future__ import annotations

import contextlib
import os
import threading
from abc import abstractmethod
from typing import Any

from halsim.device import DeviceBuffer, Execution, Pending
from halsim.errors import DeviceError, HalsimError, ImportRefusedError
from halsim.lanethreads import LaneThreads
from halsim.plan import ImportWindow, Op, Step
from halsim.request import BufferSpec
from halsim.trace import IMPORTED, STAGING, alloc_lane, device_counter


def host_threads() -> int:
    """CPU threads this process may run on (its affinity: a container's share, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class HostExecution(Execution):
    """A real device's execution: threads for I/O and queues, bookkeeping, cleanup."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.request = self.plan.request
        self._buffers: dict[int, DeviceBuffer] = {}
        self._slots: list[memoryview] = []
        self._staging_bytes = 0
        self._windows: dict[int, Any] = {}  # window id -> backend handle
        self._lock = threading.Lock()
        self._pools: dict[str, LaneThreads] = {}
        self._thread_lane = threading.local()
        self._lane_counters: dict[str, int] = {}  # threads started so far, per pool

    # ----- what a backend provides -------------------------------------------------
    @abstractmethod
    def alloc_buffer(self, spec: BufferSpec) -> DeviceBuffer: ...

    @abstractmethod
    def free_buffer(self, buffer: DeviceBuffer) -> None: ...

    @abstractmethod
    def alloc_staging(self, slots: int, slot_bytes: int) -> list[memoryview]:
        """Host-visible staging slots (pinned or mapped), as writable byte views."""

    @abstractmethod
    def free_staging(self) -> None: ...

    @abstractmethod
    def copy_in(self, step: Step, source: memoryview, buffer: DeviceBuffer, offset: int) -> None:
        """Host bytes -> device buffer at ``offset``; return when the copy has completed."""

    @abstractmethod
    def copy_out(self, step: Step, buffer: DeviceBuffer, offset: int, target: memoryview) -> None:
        """Device buffer at ``offset`` -> host bytes; return when complete."""

    def import_window(self, window: ImportWindow, view: memoryview) -> Any:
        """Make ``view`` (the window's host bytes) usable by the device; return a handle."""
        return view

    def unimport_window(self, window: ImportWindow, handle: Any) -> None:
        """Undo :meth:`import_window`."""

    def copy_imported(self, step: Step, handle: Any, source: memoryview, buffer: DeviceBuffer, offset: int) -> None:
        """Imported host bytes -> device buffer. Default: an ordinary host-to-device copy."""
        self.copy_in(step, source, buffer, offset)

    def bind(self, step: Step, handle: Any, source: memoryview, spec: BufferSpec) -> DeviceBuffer:
        """A buffer that *is* the imported bytes (unified memory)."""
        raise DeviceError("this device cannot use host memory in place", device=self.device.name,
                          step=step.describe(self.request))

    def direct(self, step: Step, buffer: DeviceBuffer, offset: int) -> None:
        """Storage -> device buffer with no staging."""
        raise DeviceError("this device has no direct storage path", device=self.device.name,
                          step=step.describe(self.request))

    def thread_setup(self) -> None:
        """Runs once on each worker thread (e.g. make a CUDA context current)."""

    # ----- Execution ---------------------------------------------------------------
    def adopt_buffers(self, buffers: dict[int, DeviceBuffer]) -> None:
        self._buffers = dict(buffers)
        self._adopted = True

    def allocate(self) -> None:
        trace, now = self.trace, self.device.now
        try:
            start, allocated = now(), 0
            for index, spec in self.buffers_to_allocate():
                if self.faults is not None:
                    self.faults.on_allocate("device", spec.size, self)
                self._buffers[index] = self.alloc_buffer(spec)
                trace.change(device_counter(self.index), now(), spec.size)
                allocated += spec.size
            if allocated:  # on the simulator's lane: a real upload spends milliseconds here (cuMemAlloc)
                trace.span(alloc_lane(self.index), "alloc", start, now(), allocated, -1, self.index)
            pool = self.plan.pool(self.index)
            if pool is not None:
                if self.faults is not None:
                    self.faults.on_allocate("staging", pool.bytes, self)
                self._slots = self.alloc_staging(pool.slots, pool.slot_bytes)
                self._staging_bytes = pool.bytes
                trace.change(STAGING, now(), pool.bytes)
        except BaseException:
            self.release(keep_buffers=False)
            raise
        threads_of = {"io": max(1, self.plan.limits.readers), "host": max(1, self.plan.limits.imports)}
        for q in range(max(1, self.plan.limits.queues)):
            threads_of[f"q{q}"] = self.copy_threads_per_queue(q)
        for pool, threads in threads_of.items():  # their threads start as steps come
            self._pools[pool] = LaneThreads(threads, f"halsim-{pool}-d{self.index}", self._run_step,
                                            lambda pool=pool: self._init_thread(pool))

    def copy_threads_per_queue(self, queue: int) -> int:
        """Threads that run queue ``queue``'s copies: one, so a queue's copies run in order.
        A device whose copies are asynchronous on an in-order queue may take more,
        so that several are submitted at once (each thread waits for its own)."""
        return 1

    def staging_ready(self) -> None:
        for k in range(len(self._slots)):
            self._slots[k]  # a ring pinned in the background waits here for slot k (or raises its error)

    def _init_thread(self, pool: str) -> None:
        # Lanes are numbered within each pool: reader k is "read/k" whatever the queues do.
        with self._lock:
            self._thread_lane.index = self._lane_counters.get(pool, 0)
            self._lane_counters[pool] = self._thread_lane.index + 1
        self.thread_setup()

    def submit(self, step: Step) -> Pending:
        if step.op in (Op.READ, Op.WRITE, Op.DIRECT):
            pool = self._pools["io"]
        elif step.op in (Op.COPY, Op.COPY_BACK, Op.COPY_IMPORTED):
            pool = self._pools[f"q{step.queue % max(1, self.plan.limits.queues)}"]
        else:
            pool = self._pools["host"]
        try:
            return pool.submit(Pending(step))
        except HalsimError as err:  # no thread to be had
            raise DeviceError(str(err), device=self.device.name, step=step.describe(self.request)) from err

    def _lane(self, step: Step) -> str:
        d = self.index
        if step.op in (Op.READ, Op.WRITE, Op.DIRECT):
            return f"read/{getattr(self._thread_lane, 'index', 0)}" if step.op is not Op.DIRECT else f"direct/d{d}"
        if step.op in (Op.COPY, Op.COPY_BACK, Op.COPY_IMPORTED):
            return f"copy/d{d}q{step.queue}"
        return f"import/d{d}"

    def _run_step(self, step: Step) -> None:
        if self.faults is not None:
            self.faults.before(step, self)
        if step.slot >= 0 and self._slots:
            # A ring pinned in the background: wait for this slot before the step's
            # span starts (as the simulator does), so pinning is not timed as reading.
            self._slots[step.slot]
        start = self.device.now()
        try:
            self._perform(step)
        except HalsimError:
            raise
        except Exception as err:
            raise DeviceError(f"{type(err).__name__}: {err}", device=self.device.name,
                              step=step.describe(self.request)) from err
        self.trace.span(self._lane(step), step.op.value, start, self.device.now(), step.length, step.id, self.index)

    def _slot(self, step: Step) -> memoryview:
        return self._slots[step.slot][step.slot_offset : step.slot_offset + step.length]

    def _touching_map(self):
        """Around a step that touches the file's mapping: the file checks its size first."""
        touching = getattr(self.file, "touching", None)
        return touching() if touching is not None else contextlib.nullcontext()

    def _host_bytes(self, step: Step) -> memoryview:
        window = self.plan.windows[step.window]
        view = self.file.host_view() if self.file is not None else None
        if view is None:
            raise DeviceError("the source has no host memory to import", device=self.device.name,
                              step=step.describe(self.request))
        return view[step.file_offset : step.file_offset + step.length] if step.op is not Op.IMPORT else \
            view[window.file_offset : min(window.file_offset + window.length, len(view))]

    def _perform(self, step: Step) -> None:
        op = step.op
        if op is Op.READ:
            self.file.read_into(step.file_offset, self._slot(step))
        elif op is Op.COPY:
            self.copy_in(step, self._slot(step), self._buffers[step.buffer], step.buffer_offset)
        elif op is Op.COPY_BACK:
            self.copy_out(step, self._buffers[step.buffer], step.buffer_offset, self._slot(step))
        elif op is Op.WRITE:
            self.file.write_from(step.file_offset, self._slot(step))
        elif op is Op.IMPORT:
            window = self.plan.windows[step.window]
            checker = getattr(self.file, "check_unchanged", None)
            if checker is not None:
                checker()  # touching a mapping of a truncated file would SIGBUS
            try:
                handle = self.import_window(window, self._host_bytes(step))
            except ImportRefusedError:
                if checker is not None:
                    checker()  # the file shrank while the device pinned it: that is the error to report
                raise
            with self._lock:
                self._windows[window.id] = handle
            self.trace.change(IMPORTED, self.device.now(), window.length)
        elif op is Op.UNIMPORT:
            window = self.plan.windows[step.window]
            with self._lock:
                handle = self._windows.pop(window.id)
            self.unimport_window(window, handle)
            self.trace.change(IMPORTED, self.device.now(), -window.length)
        elif op is Op.COPY_IMPORTED:
            with self._touching_map():
                self.copy_imported(step, self._windows[step.window], self._host_bytes(step),
                                   self._buffers[step.buffer], step.buffer_offset)
        elif op is Op.BIND:
            spec = self.request.buffers[step.buffer]
            with self._touching_map():
                buffer = self.bind(step, self._windows[step.window], self._host_bytes(step), spec)
            with self._lock:
                self._buffers[step.buffer] = buffer
        elif op is Op.DIRECT:
            self.direct(step, self._buffers[step.buffer], step.buffer_offset)
        else:  # pragma: no cover - Op is closed
            raise DeviceError(f"unknown step {op}", device=self.device.name)

    def release(self, keep_buffers: bool) -> None:
        for pool in self._pools.values():
            pool.shutdown()
        self._pools.clear()
        now = self.device.now
        errors = []
        if self._slots or self._staging_bytes:
            self._slots = []
            try:
                self.free_staging()
            except Exception as err:  # keep freeing the rest
                errors.append(err)
            self.trace.change(STAGING, now(), -self._staging_bytes)
            self._staging_bytes = 0
        with self._lock:
            windows = dict(self._windows)
        for window_id, handle in windows.items():
            window = self.plan.windows[window_id]
            if keep_buffers and window.in_place:
                continue
            try:
                self.unimport_window(window, handle)
            except Exception as err:
                errors.append(err)
            with self._lock:
                self._windows.pop(window_id, None)
            self.trace.change(IMPORTED, now(), -window.length)
        if not keep_buffers and not self._adopted:
            for index, buffer in list(self._buffers.items()):
                if index not in self._bound:
                    try:
                        self.free_buffer(buffer)
                    except Exception as err:
                        errors.append(err)
                    self.trace.change(device_counter(self.index), now(), -buffer.size)
            self._buffers.clear()
        if errors:
            raise DeviceError(f"cleanup failed: {errors[0]}", device=self.device.name) from errors[0]

    def buffers(self) -> dict[int, DeviceBuffer]:
        return dict(self._buffers)
