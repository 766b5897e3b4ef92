"""The CUDA device (``cuda:N``), on cuda-python's driver bindings.

It translates plan steps into driver calls and decides nothing else:

* buffers: one ``cuMemAlloc`` per tensor (out of memory is
  :class:`~halsim.errors.OutOfMemoryError`, naming the tensor and what is free);
* staging: one pinned ring of ``slots x chunk`` per run, whose slots READ
  steps fill on reader threads; by default each slot is pinned on its own on
  a background thread while the first slots already stream
  (:mod:`halsim.backends.cuda_staging` says why);
* COPY / COPY_BACK: ``cuMemcpyHtoDAsync`` / ``cuMemcpyDtoHAsync`` on the
  stream of the step's copy queue (one stream per queue, made per run), then a
  wait: a spinning stream synchronise while the run's threads each have a core,
  else a blocking-sync event (``HALSIM_CUDA_WAIT``): a copy step completes
  only when its bytes have arrived,
  and that completion is what lets the engine refill the slot;
* IMPORT / UNIMPORT: ``cuMemHostRegister`` (READ_ONLY where the device supports
  it) / ``cuMemHostUnregister`` of a page-aligned window of the mapped file;
  host memory its owner already page-locked is copied from as it is;
  COPY_IMPORTED copies from it with no staging; on integrated GPUs that can use
  registered host memory, BIND makes a buffer of the registered bytes in place;
* DIRECT: cuFile (GPUDirect Storage or its compatibility mode) reads the file
  into the buffer; available only after a probe in a subprocess succeeded.

Every driver call is checked; a failure is a :class:`~halsim.errors.DeviceError`
naming the CUresult and the step. Buffers expose ``__cuda_array_interface__``
and DLPack (``torch.from_dlpack``, ``cupy.asarray``), sharing the memory.

Without cuda-python, a driver or a GPU, :func:`open_device` and
:func:`enumerate_devices` raise ``DeviceUnavailableError("cuda: unavailable (why)")``.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from halsim.backends import cuda_cufile, cuda_dlpack, cuda_staging
from halsim.backends.cuda_driver import (
    PAGE_SIZE,
    DeviceInfo,
    check,
    cu,
    current,
    device_count,
    device_info,
    init,
    is_success,
    mem_info,
    result_name,
    set_current,
)
from halsim.caps import DeviceCaps
from halsim.device import Device, DeviceBuffer, Pending
from halsim.errors import DeviceError, DeviceUnavailableError, HalsimError, ImportRefusedError, OutOfMemoryError
from halsim.files import address_of
from halsim.hostexec import HostExecution, host_threads
from halsim.plan import COPY_OPS, ImportWindow, Op, Step
from halsim.request import BufferSpec, Direction
from halsim.trace import alloc_lane

__all__ = [
    "CudaBuffer",
    "CudaDevice",
    "CudaExecution",
    "CudaTensor",
    "caps_of",
    "enumerate_devices",
    "live_resources",
    "open_device",
]

# ----- what is allocated right now, by this module (tests check it returns to zero) -----

_live_lock = threading.Lock()
_live = {
    "buffers": 0, "buffer_bytes": 0,
    "staging": 0, "staging_bytes": 0,
    "registered": 0, "registered_bytes": 0,
    "streams": 0, "cufile_handles": 0,
}


def _count(kind: str, n: int, nbytes: int = 0) -> None:
    with _live_lock:
        _live[kind] += n
        if f"{kind}_bytes" in _live:
            _live[f"{kind}_bytes"] += nbytes


def live_resources() -> dict[str, int]:
    """Device buffers, pinned staging, registrations, streams and cuFile handles held now."""
    with _live_lock:
        return dict(_live)


def host_view(address: int, length: int) -> memoryview:
    """A writable byte view of ``length`` bytes of host memory at ``address``."""
    if length == 0:
        return memoryview(bytearray(0))
    return memoryview((ctypes.c_ubyte * length).from_address(address)).cast("B")


# ----- buffers and the tensors handed to frameworks -----------------------------------------


def _free_device_memory(context: Any, ptr: int, size: int, label: str) -> None:
    with current(context, label):
        check(cu.cuMemFree(cu.CUdeviceptr(ptr)), f"cuMemFree of {size} bytes", device=label)
    _count("buffers", -1, -size)


class CudaBuffer(DeviceBuffer):
    """One tensor in device memory (``owned``) or registered host memory used in place."""

    def __init__(self, spec: BufferSpec, device_name: str, ptr: int, info: DeviceInfo, owned: bool = True):
        super().__init__(spec, device_name)
        self._ptr = int(ptr)
        self.info = info
        self.owned = owned
        self.freed = False
        self._finalizer = None
        if owned and self._ptr:
            # Frees the memory once: explicitly through free(), or when the buffer is collected.
            self._finalizer = weakref.finalize(self, _free_device_memory, info.context, self._ptr, spec.size, device_name)
            self._finalizer.atexit = False

    @property
    def ptr(self) -> int:
        """The device address of the tensor's first byte."""
        if self.freed:
            raise DeviceError(f"buffer {self.name!r} was freed", device=self.device_name)
        return self._ptr

    def free(self) -> None:
        if self.freed:
            return
        self.freed = True
        if self._finalizer is not None:
            self._finalizer()

    def read_range(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``, copied to the host."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise DeviceError(f"range [{offset}, {offset + length}) is outside buffer {self.name!r} ({self.size} bytes)",
                              device=self.device_name)
        if length == 0:
            return b""
        out = np.empty(length, np.uint8)
        with current(self.info.context, self.device_name):
            check(cu.cuMemcpyDtoH(out.ctypes.data, cu.CUdeviceptr(self.ptr + offset), length),
                  f"cuMemcpyDtoH of buffer {self.name!r}", device=self.device_name)
        return out.tobytes()

    def to_bytes(self) -> bytes:
        return self.read_range(0, self.size)

    def tensor(self) -> "CudaTensor":
        """The tensor (dtype, shape) over this memory: DLPack and CUDA array interface, no copy."""
        return CudaTensor(self)

    @property
    def __cuda_array_interface__(self) -> dict:
        return self.tensor().__cuda_array_interface__

    def __dlpack__(self, **kwargs):
        return self.tensor().__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.tensor().__dlpack_device__()


class CudaTensor:
    """A tensor in CUDA memory that frameworks can use as is.

    ``torch.from_dlpack(t)``, ``cupy.from_dlpack(t)`` and ``cupy.asarray(t)``
    see the same memory (no copy); it stays valid until its upload is freed.
    ``dtype`` is the safetensors name (BF16 is DLPack's bfloat16; through the
    CUDA array interface, which has no bfloat16, it reads as uint16).
    """

    __slots__ = ("buffer", "dtype", "shape")

    def __init__(self, buffer: CudaBuffer):
        self.buffer = buffer
        self.dtype, self.shape = cuda_dlpack.tensor_shape(buffer.spec.dtype, buffer.spec.shape, buffer.size)

    @property
    def ptr(self) -> int:
        return self.buffer.ptr

    @property
    def nbytes(self) -> int:
        return self.buffer.size

    @property
    def device_id(self) -> int:
        return self.buffer.info.index

    @property
    def __cuda_array_interface__(self) -> dict:
        # The bytes are complete when the upload returns (every copy was waited for): no stream.
        return cuda_dlpack.cuda_array_interface(self.ptr, self.shape, self.dtype)

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: bool | None = None, **_: Any):
        if copy:
            raise BufferError("halsim CUDA tensors are shared, never copied (copy=True is not supported)")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"tensor is on {self.__dlpack_device__()}, not {tuple(dl_device)}")
        # No stream handshake is needed: the data was synchronised before upload returned.
        return cuda_dlpack.export(self, self.ptr, self.shape, self.dtype, cuda_dlpack.KDL_CUDA, self.device_id)

    def __dlpack_device__(self) -> tuple[int, int]:
        return (cuda_dlpack.KDL_CUDA, self.device_id)

    def to_bytes(self) -> bytes:
        return self.buffer.to_bytes()

    def __repr__(self) -> str:
        return f"CudaTensor({self.buffer.name!r}, {self.dtype}, shape={self.shape}, on {self.buffer.device_name})"


# ----- page-locked host memory, shared by every run of the process ------------------------------


class HostRegistry:
    """Ranges of host memory registered with ``cuMemHostRegister``, page by page.

    The driver refuses to register a page twice, yet two windows may share
    one: neighbouring runs of a file whose gap is under a page, or windows of
    the same mapping imported by two runs at once. So a window reuses the
    registered ranges it overlaps and registers only the pages no range holds
    yet; a range is unregistered when the last window using it lets go.
    Registration is PORTABLE, so one registry serves every device's context.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # base -> [end, windows using it, Event while its registration is in progress else None]
        self._ranges: dict[int, list] = {}

    def acquire(self, start: int, end: int, register, unregister) -> tuple[tuple[int, int], ...]:
        """Hold [start, end) (page-aligned); ``register(base, length)`` fills the gaps.

        Returns the (base, end) of each registered range the window uses, in
        address order: a copy must not cross from one into the next (the
        driver refuses that), so copies are split at these boundaries.
        Registering runs outside the lock, so several importers pin pages at
        once; a window that overlaps a range still being registered waits for it.
        """
        while True:
            with self._lock:
                used = sorted(b for b, (e, _, _) in self._ranges.items() if b < end and start < e)
                busy = next((self._ranges[b][2] for b in used if self._ranges[b][2] is not None), None)
                if busy is None:
                    gaps, cursor = [], start
                    for base in used:
                        if base > cursor:
                            gaps.append((cursor, base))
                        cursor = max(cursor, self._ranges[base][0])
                    if cursor < end:
                        gaps.append((cursor, end))
                    for base in used:
                        self._ranges[base][1] += 1
                    reserved = threading.Event()
                    for lo, hi in gaps:
                        self._ranges[lo] = [hi, 1, reserved]
                    break
            busy.wait()
        made: list[tuple[int, int]] = []
        try:
            for lo, hi in gaps:
                register(lo, hi - lo)
                made.append((lo, hi))
        except BaseException:
            for lo, hi in made:
                try:
                    unregister(lo, hi - lo)
                except Exception:
                    pass
            with self._lock:
                for lo, _ in gaps:
                    self._ranges.pop(lo, None)
                for base in used:
                    self._ranges[base][1] -= 1
            reserved.set()
            raise
        with self._lock:
            for lo, _ in gaps:
                self._ranges[lo][2] = None
            held = tuple(sorted(used + [lo for lo, _ in gaps]))
            result = tuple((base, self._ranges[base][0]) for base in held)
        reserved.set()
        return result

    def release(self, held: tuple[tuple[int, int], ...], unregister) -> None:
        failure = None
        freed = []
        with self._lock:
            for base, _ in held:
                entry = self._ranges.get(base)
                if entry is None:
                    continue
                entry[1] -= 1
                if entry[1] <= 0:
                    entry[2] = threading.Event()  # windows that want these pages wait for the unpin
                    freed.append((base, entry[0], entry[2]))
        for base, end_of, done in freed:  # unpinning is slow: outside the lock
            try:
                unregister(base, end_of - base)
            except Exception as err:  # keep releasing the rest
                failure = failure or err
            with self._lock:
                del self._ranges[base]
            done.set()
        if failure is not None:
            raise failure

    def pinned_elsewhere(self, start: int, end: int, probe) -> bool:
        """Whether [start, end) is page-locked by someone other than halsim: ``probe``
        asks the driver, under the registry's lock, so that no window can be
        registering these pages meanwhile and be mistaken for their owner."""
        with self._lock:
            if any(b < end and start < e for b, (e, _, _) in self._ranges.items()):
                return False  # halsim's own registration: acquire() shares it
            return probe(start, end)

    def ranges(self) -> dict[int, tuple[int, int]]:
        with self._lock:
            return {base: (end, users) for base, (end, users, _) in self._ranges.items()}


HOST_REGISTRY = HostRegistry()


# ----- one run on one device ----------------------------------------------------------------


@dataclass(frozen=True)
class _Registration:
    address: int  # first byte of the window
    length: int
    held: tuple[tuple[int, int], ...]  # the registered ranges it uses: (base, end), in address order
    device_ptr: int  # where the device sees ``address`` (integrated, in place); 0 otherwise


def _blocking_wait(plan, label: str) -> bool:
    """How a copy is waited for: HALSIM_CUDA_WAIT=block (a blocking-sync event: the
    core goes to the readers), spin (cuStreamSynchronize: the lowest latency), or
    auto (the default): spin while every thread of the run that works at once has a
    core of its own — the readers, every device's copy threads and import lane, and
    the engine's — else block. With the engine's lean lane threads, spinning ran rings
    0-15 % faster than blocking on the 16-CPU H100 machine (12 readers, 2-3 queues:
    docs/benchmarks/cuda.md, sixth session); a blocked copy thread wakes later, and
    the slot it frees waits that long."""
    mode = os.environ.get("HALSIM_CUDA_WAIT", "auto").strip().lower() or "auto"
    if mode not in ("auto", "block", "spin"):
        raise DeviceError(f"HALSIM_CUDA_WAIT={mode!r} is not one of auto, block, spin", device=label)
    if mode == "auto":
        return _threads_at_once(plan, label) > host_threads()
    return mode == "block"


def _threads_at_once(plan, label: str) -> int:
    return plan.threads_at_once(lambda device: _copy_depths(plan, device, label))


def _copy_depths(plan, index: int, label: str) -> list[int]:
    """Copies queued at once on each stream: the plan's :meth:`~halsim.plan.Plan.copy_depths`.
    A ring's queue takes one at a time: queueing two gained nothing there (25.1
    against 26.5 GB/s, same run on the H100). HALSIM_CUDA_COPY_DEPTH=N sets every
    queue to N, at most ``copies_per_queue``; N=1 is the backend before it queued ahead."""
    value = os.environ.get("HALSIM_CUDA_COPY_DEPTH", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise DeviceError(f"HALSIM_CUDA_COPY_DEPTH={value!r} is not a positive whole number", device=label)
        return [min(int(value), max(1, plan.limits.copies_per_queue))] * max(1, plan.limits.queues)
    return plan.copy_depths(index)


UNQUEUED_LIMIT_S = 60.0  # queueing a copy takes microseconds: this long means something is stuck


class CudaExecution(HostExecution):
    def __init__(self, device: "CudaDevice", plan, file, trace, index: int, faults=None):
        super().__init__(device, plan, file, trace, index, faults)
        self._copy_depths = _copy_depths(plan, index, device.name)
        # Copies out of imported memory the engine has handed over but that are not yet
        # queued on a stream. cuMemHostRegister holds the driver's lock, and a copy queued
        # while it runs waits for it to end; a copy queued before it runs on during it
        # (measured, docs/benchmarks/cuda.md). So an import waits until these are queued —
        # only where each has a thread to queue it at once (a full-depth queue), or the
        # wait would be for copies to finish.
        self._unqueued: set[int] = set()
        self._queued = threading.Condition()
        self.info: DeviceInfo = device.info
        self.label = device.name
        self._streams: list[Any] = []
        self._staging: cuda_staging.PipelinedSlots | cuda_staging.HostAllocPool | None = None
        self._staging_size = 0
        self._staging_mode = cuda_staging.staging_mode(self.label)
        self._cufile: cuda_cufile.CuFileSource | None = None
        self._cufile_lock = threading.Lock()
        self._blocking_wait = _blocking_wait(plan, self.label)
        self._thread_events = threading.local()
        self._events: list[Any] = []

    # ----- helpers ---------------------------------------------------------------------
    def _context(self):
        return current(self.info.context, self.label)

    def _call(self, result: tuple, what: str, step: Step | None = None) -> Any:
        if is_success(result[0]):
            return result[1] if len(result) == 2 else None
        where = step.describe(self.request) if step is not None else ""
        return check(result, what, device=self.label, step=where)  # raises

    def _check_range(self, buffer: DeviceBuffer, offset: int, length: int, step: Step) -> None:
        if offset < 0 or offset + length > buffer.size:
            raise DeviceError(f"range [{offset}, {offset + length}) is outside buffer {buffer.name!r} "
                              f"({buffer.size} bytes)", device=self.label, step=step.describe(self.request))

    def _stream(self, step: Step) -> Any:
        return self._streams[step.queue % len(self._streams)]

    def copy_threads_per_queue(self, queue: int) -> int:
        return self._copy_depths[queue]  # each thread records and waits for its own event: the stream stays in order

    def submit(self, step: Step) -> Pending:
        if step.op is Op.COPY_IMPORTED and \
                self._copy_depths[step.queue % len(self._copy_depths)] >= self.plan.limits.copies_per_queue:
            with self._queued:
                self._unqueued.add(step.id)
        try:
            return super().submit(step)
        except BaseException:
            self._copy_queued(step)
            raise

    def _run_step(self, step: Step) -> None:
        try:
            super()._run_step(step)
        finally:
            self._copy_queued(step)  # also when it failed before queueing anything

    def _copy_queued(self, step: Step) -> None:
        if step.id in self._unqueued:
            with self._queued:
                self._unqueued.discard(step.id)
                if not self._unqueued:
                    self._queued.notify_all()

    def _until_copies_queued(self, window: ImportWindow) -> None:
        with self._queued:
            if not self._queued.wait_for(lambda: not self._unqueued, timeout=UNQUEUED_LIMIT_S):
                late = sorted(self._unqueued)
                raise DeviceError(f"before importing the window at file offset {window.file_offset}: the copies of "
                                  f"steps {late[:8]} were handed over {UNQUEUED_LIMIT_S:g} s ago and are still not "
                                  "queued on their streams", device=self.label)

    # ----- lifetime ----------------------------------------------------------------------
    def allocate(self) -> None:
        with self._context():
            try:
                for _ in range(max(1, self.plan.limits.queues)):
                    stream = check(cu.cuStreamCreate(int(cu.CUstream_flags.CU_STREAM_NON_BLOCKING)),
                                   "cuStreamCreate", device=self.label)
                    self._streams.append(stream)
                    _count("streams", 1)
            except BaseException:
                self._destroy_streams()
                raise
            if self.request.direction is Direction.DOWNLOAD:
                # The buffers may still be written by work on other streams (a
                # framework's kernels, a memset): let it finish before copying out.
                check(cu.cuCtxSynchronize(), "cuCtxSynchronize before a download", device=self.label)
            super().allocate()  # buffers and staging; on failure it calls release()

    def thread_setup(self) -> None:
        set_current(self.info.context, self.label)

    def release(self, keep_buffers: bool) -> None:
        with self._context():
            try:
                super().release(keep_buffers)
            finally:
                errors = []
                for undo in (self._close_cufile, self._destroy_events, self._destroy_streams):
                    try:
                        undo()
                    except Exception as err:
                        errors.append(err)
                if errors:
                    raise DeviceError(f"cleanup failed: {errors[0]}", device=self.label) from errors[0]

    def _destroy_streams(self) -> None:
        streams, self._streams = self._streams, []
        _count("streams", -len(streams))
        self._destroy_each(streams, cu.cuStreamDestroy, "cuStreamDestroy")

    def _destroy_events(self) -> None:
        with self._lock:
            events, self._events = self._events, []
        self._thread_events = threading.local()
        self._destroy_each(events, cu.cuEventDestroy, "cuEventDestroy")

    def _destroy_each(self, handles: list, destroy, what: str) -> None:
        """Destroy every handle, even after one fails; then raise the first failure."""
        failed = None
        for handle in handles:
            (err,) = destroy(handle)
            if not is_success(err) and failed is None:
                failed = result_name(err)
        if failed:
            raise DeviceError(f"{what} failed: {failed}", device=self.label)

    def _close_cufile(self) -> None:
        with self._cufile_lock:
            source, self._cufile = self._cufile, None
        if source is not None:
            _count("cufile_handles", -1)
            source.close()

    # ----- memory ------------------------------------------------------------------------
    def alloc_buffer(self, spec: BufferSpec) -> DeviceBuffer:
        ptr = 0
        if spec.size:
            err, dptr = cu.cuMemAlloc(spec.size)
            if not is_success(err):
                name = result_name(err)
                if name == "CUDA_ERROR_OUT_OF_MEMORY":
                    free = cu.cuMemGetInfo()
                    have = f"{free[1]} of {free[2]} bytes free" if is_success(free[0]) else "free memory unknown"
                    raise OutOfMemoryError(
                        f"cannot allocate {spec.size} bytes for tensor {spec.name!r}: CUDA_ERROR_OUT_OF_MEMORY "
                        f"({have} on {self.info.name})", device=self.label)
                raise DeviceError(f"cuMemAlloc of {spec.size} bytes for tensor {spec.name!r} failed: {name}",
                                  device=self.label)
            ptr = int(dptr)
            _count("buffers", 1, spec.size)
        return CudaBuffer(spec, self.label, ptr, self.info, owned=True)

    def free_buffer(self, buffer: DeviceBuffer) -> None:
        buffer.free()

    def alloc_staging(self, slots: int, slot_bytes: int):
        total = slots * slot_bytes
        if total == 0:
            return [memoryview(bytearray(0)) for _ in range(slots)]
        lane = alloc_lane(self.index)
        if self._staging_mode == "alloc":
            start = time.perf_counter()
            ring = cuda_staging.HostAllocPool(slots, slot_bytes, self.label, host_view)
            self.trace.span(lane, "pin", start, time.perf_counter(), total, -1, self.index)
        else:
            ring = cuda_staging.PipelinedSlots(
                slots, slot_bytes, self.info.context, self.label, host_view,
                on_pinned=lambda start, end: self.trace.span(lane, "pin", start, end, slot_bytes, -1, self.index))
        self._staging, self._staging_size = ring, total
        _count("staging", 1, total)
        return ring

    def free_staging(self) -> None:
        ring, size = self._staging, self._staging_size
        self._staging, self._staging_size = None, 0
        if ring is not None:
            _count("staging", -1, -size)
            start = time.perf_counter()
            try:
                with self._context():
                    ring.close()
            finally:  # on the lane of the simulator's: compare and explain show it beside the pinning
                self.trace.span(alloc_lane(self.index), "unpin", start, time.perf_counter(), size, -1, self.index)

    # ----- copies ------------------------------------------------------------------------
    def copy_in(self, step: Step, source: memoryview, buffer: DeviceBuffer, offset: int) -> None:
        n = len(source)
        if not n:
            return
        self._check_range(buffer, offset, n, step)
        stream = self._stream(step)
        self._call(cu.cuMemcpyHtoDAsync(cu.CUdeviceptr(buffer.ptr + offset), address_of(source), n, stream),
                   "cuMemcpyHtoDAsync", step)
        self._wait(stream, "cuMemcpyHtoDAsync", step)

    def copy_out(self, step: Step, buffer: DeviceBuffer, offset: int, target: memoryview) -> None:
        n = len(target)
        if not n:
            return
        self._check_range(buffer, offset, n, step)
        stream = self._stream(step)
        self._call(cu.cuMemcpyDtoHAsync(address_of(target), cu.CUdeviceptr(buffer.ptr + offset), n, stream),
                   "cuMemcpyDtoHAsync", step)
        self._wait(stream, "cuMemcpyDtoHAsync", step)

    def _wait(self, stream: Any, what: str, step: Step) -> None:
        """Until the copies queued on ``stream`` are done: the step completes only then."""
        self._copy_queued(step)
        if not self._blocking_wait:
            # Spinning (GIL released): the lowest latency, one busy core per copy thread.
            self._call(cu.cuStreamSynchronize(stream), f"cuStreamSynchronize after {what}", step)
            return
        # More threads than cores: sleep on a blocking-sync event, leaving the core to the readers.
        event = getattr(self._thread_events, "event", None)
        if event is None:
            flags = int(cu.CUevent_flags.CU_EVENT_BLOCKING_SYNC) | int(cu.CUevent_flags.CU_EVENT_DISABLE_TIMING)
            event = self._thread_events.event = self._call(cu.cuEventCreate(flags), "cuEventCreate", step)
            with self._lock:
                self._events.append(event)
        self._call(cu.cuEventRecord(event, stream), f"cuEventRecord after {what}", step)
        self._call(cu.cuEventSynchronize(event), f"cuEventSynchronize after {what}", step)

    # ----- zero-copy import --------------------------------------------------------------
    def _register(self, window: ImportWindow, base: int, length: int) -> None:
        in_place = bool(self.device.caps.import_in_place)
        extra = cu.CU_MEMHOSTREGISTER_PORTABLE | (cu.CU_MEMHOSTREGISTER_DEVICEMAP if in_place else 0)
        choices = [cu.CU_MEMHOSTREGISTER_READ_ONLY | extra, extra] if self.info.read_only_register else [extra]
        refused = []
        for flags in choices:
            (err,) = cu.cuMemHostRegister(base, length, flags)
            if is_success(err):
                _count("registered", 1, length)
                return
            refused.append(f"{result_name(err)} with flags {flags:#x}")
        raise ImportRefusedError(
            f"cuMemHostRegister of {length} bytes for the window at file offset {window.file_offset} failed: "
            f"{'; '.join(refused)}", device=self.label)

    def _unregister(self, base: int, length: int) -> None:
        _count("registered", -1, -length)
        with self._context():
            check(cu.cuMemHostUnregister(base), f"cuMemHostUnregister of {length} bytes", device=self.label)

    def import_window(self, window: ImportWindow, view: memoryview) -> _Registration:
        length = len(view)
        if not length:
            return _Registration(0, 0, (), 0)
        address = address_of(view)
        if address % PAGE_SIZE:
            raise ImportRefusedError(
                f"window at file offset {window.file_offset} starts at host address {address:#x}, "
                f"which is not page-aligned ({PAGE_SIZE} bytes)", device=self.label)
        end = address + -(-length // PAGE_SIZE) * PAGE_SIZE  # the driver locks whole pages
        with self._context():
            if not self.device.caps.import_in_place and \
                    HOST_REGISTRY.pinned_elsewhere(address, address + length, self._pinned_by_its_owner):
                # Already page-locked (cuMemHostAlloc, a framework's pinned tensor): copy
                # from it as it is. Registering again would be refused, and costs time.
                return _Registration(address, length, (), 0)
            self._until_copies_queued(window)
            held = HOST_REGISTRY.acquire(address, end, lambda b, n: self._register(window, b, n), self._unregister)
            device_ptr = 0
            if self.device.caps.import_in_place:
                err, dptr = cu.cuMemHostGetDevicePointer(address, 0)
                if not is_success(err):
                    HOST_REGISTRY.release(held, self._unregister)
                    raise ImportRefusedError(f"cuMemHostGetDevicePointer failed: {result_name(err)}", device=self.label)
                device_ptr = int(dptr)
        return _Registration(address, length, held, device_ptr)

    def _pinned_by_its_owner(self, start: int, end: int) -> bool:
        """Whether [start, end) lies in one page-locked allocation (the registry has
        already ruled out its own registrations)."""
        attribute = cu.CUpointer_attribute
        host = int(cu.CUmemorytype.CU_MEMORYTYPE_HOST)
        ids = set()
        for probe in (start, end - 1):
            err, kind = cu.cuPointerGetAttribute(attribute.CU_POINTER_ATTRIBUTE_MEMORY_TYPE, probe)
            if not is_success(err) or int(kind) != host:
                return False  # pageable memory: the driver answers with an error
            err, buffer_id = cu.cuPointerGetAttribute(attribute.CU_POINTER_ATTRIBUTE_BUFFER_ID, probe)
            if not is_success(err):
                return False
            ids.add(int(buffer_id))
        return len(ids) == 1  # a copy must not cross from one allocation into the next

    def unimport_window(self, window: ImportWindow, handle: _Registration) -> None:
        if handle.held:
            HOST_REGISTRY.release(handle.held, self._unregister)

    def copy_imported(self, step: Step, handle: _Registration, source: memoryview, buffer: DeviceBuffer,
                      offset: int) -> None:
        n = len(source)
        if len(handle.held) <= 1 or not n:
            self.copy_in(step, source, buffer, offset)
            return
        # The window is made of several registrations (it shares pages with
        # another window): one copy per registration it touches.
        self._check_range(buffer, offset, n, step)
        stream = self._stream(step)
        start = address_of(source)
        at = start
        for base, end in handle.held:
            if end <= at or base >= start + n:
                continue
            piece = min(end, start + n) - at
            self._call(cu.cuMemcpyHtoDAsync(cu.CUdeviceptr(buffer.ptr + offset + (at - start)), at, piece, stream),
                       "cuMemcpyHtoDAsync", step)
            at += piece
        if at != start + n:
            raise DeviceError(f"{start + n - at} bytes of the copy lie outside the imported window", device=self.label,
                              step=step.describe(self.request))
        self._wait(stream, "cuMemcpyHtoDAsync", step)

    def bind(self, step: Step, handle: _Registration, source: memoryview, spec: BufferSpec) -> DeviceBuffer:
        if not handle.device_ptr:
            raise DeviceError("this device cannot use registered host memory in place", device=self.label,
                              step=step.describe(self.request))
        ptr = handle.device_ptr + (address_of(source) - handle.address) if len(source) else 0
        return CudaBuffer(spec, self.label, ptr, self.info, owned=False)

    # ----- storage straight into device memory ---------------------------------------------
    def _cufile_source(self) -> cuda_cufile.CuFileSource | None:
        fd = getattr(self.file, "fd", None)
        if fd is None:
            return None  # a file in memory: there is no storage to read
        with self._cufile_lock:
            if self._cufile is None:
                cuda_cufile.open_driver()
                self._cufile = cuda_cufile.CuFileSource(self.file.name, fd, self.label)
                _count("cufile_handles", 1)
            return self._cufile

    def direct(self, step: Step, buffer: DeviceBuffer, offset: int) -> None:
        n = step.length
        if not n:
            return
        self._check_range(buffer, offset, n, step)
        source = self._cufile_source()
        if source is not None:
            source.read(buffer.ptr, n, step.file_offset, offset, step=step.describe(self.request))
            return
        view = self.file.host_view() if self.file is not None else None
        if view is None:
            raise DeviceError("the source is neither a file cuFile can read nor host memory", device=self.label,
                              step=step.describe(self.request))
        piece = view[step.file_offset : step.file_offset + n]
        self._call(cu.cuMemcpyHtoD(cu.CUdeviceptr(buffer.ptr + offset), address_of(piece), n), "cuMemcpyHtoD", step)


# ----- the device --------------------------------------------------------------------------------


def caps_of(info: DeviceInfo, direct_storage: bool) -> DeviceCaps:
    """The caps a policy may know of this device, from the driver's attributes."""
    in_place = info.integrated and info.can_use_host_pointer
    return DeviceCaps(
        kind="integrated" if info.integrated else "dedicated",
        unified_memory=in_place,
        can_import_host=info.host_register_supported,
        import_alignment=PAGE_SIZE,
        direct_storage=direct_storage,
        copy_queues=max(1, info.async_engines),
        memory_bytes=info.total_memory,
        max_allocation=info.total_memory,
        host_threads=host_threads(),
    )


class CudaDevice(Device):
    """``cuda:N``: one CUDA device, through its primary context."""

    def __init__(self, index: int = 0):
        self.info = device_info(index)
        self.name = self.info.label
        self.product = self.info.name
        self.direct_storage, self.direct_detail = cuda_cufile.probe(index)
        self.caps = caps_of(self.info, self.direct_storage)

    @property
    def pins_staging_in_background(self) -> bool:
        return cuda_staging.staging_mode(self.name) == "pipelined"

    # Measured on the lent H100 (docs/benchmarks/cuda.md): cuMemHostRegister and
    # cuMemHostUnregister take the driver's lock, so an import cost registration +
    # copy + unregistration in series, and copies slowed while staging was pinned.
    # For the simulator (calibrate copies it into the Platform).
    registration_stalls_copies = True

    def open(self, plan, file, trace, index: int = 0, faults=None) -> CudaExecution:
        return CudaExecution(self, plan, file, trace, index, faults)

    def mem_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory."""
        return mem_info(self.info.context)

    def __repr__(self) -> str:
        return f"CudaDevice({self.name!r}, {self.product!r})"


def open_device(index: int = 0) -> CudaDevice:
    try:
        return CudaDevice(index)
    except DeviceUnavailableError:
        raise
    except HalsimError as err:
        raise DeviceUnavailableError(f"cuda:{index}: unavailable ({err})") from err


def enumerate_devices() -> list[tuple[str, DeviceCaps]]:
    init()
    found = []
    for index in range(device_count()):
        device = open_device(index)
        found.append((device.name, device.caps))
    return found
