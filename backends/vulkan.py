"""The Vulkan device (``vulkan:N``), on the ``vulkan`` package (cffi).

Steps become Vulkan calls, nothing more (the engine schedules):

* buffers: device-local VkBuffers, one per tensor; a tensor larger than
  ``maxMemoryAllocationSize`` (or ``maxBufferSize``) is split over several
  allocations, invisible to the plan. Zero-byte tensors own no Vulkan object.
* staging: one pool per run, HOST_VISIBLE|HOST_COHERENT memory mapped once;
  the slots are views into the mapping, so READ steps ``pread`` straight into
  memory the device copies from. A slot larger than one allocation is
  anonymous host memory imported in pieces.
* COPY / COPY_BACK / COPY_IMPORTED: ``vkCmdCopyBuffer`` on the queue named by
  ``step.queue`` (of a transfer-only family when the device has one), one
  command pool, command buffer and fence per queue lane, created once per
  run; a command buffer is re-recorded only when its regions change, then
  submitted and waited on with its fence. No memory is allocated per step.
* IMPORT: ``VK_EXT_external_memory_host`` on the file's mapped bytes (pointer
  and size checked against ``minImportedHostPointerAlignment``); dedicated
  devices copy from it, integrated and CPU devices (lavapipe) use it in place
  (BIND). At open, a page of a mapped temporary file is imported and read back
  through the device: a driver that refuses or garbles file-backed memory
  (Mesa issue 9251) gets ``can_import_host=False``, so import policies plan
  their fallback instead of failing.

Without a loader or a driver, ``open_device`` and ``enumerate_devices`` raise
:class:`~halsim.errors.DeviceUnavailableError` ("vulkan: unavailable (...)").
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import threading
from typing import Any

import numpy as np

from halsim.caps import DeviceCaps
from halsim.device import Device, DeviceBuffer
from halsim.errors import DeviceError, DeviceUnavailableError, ImportRefusedError, OutOfMemoryError
from halsim.formats import numpy_dtype
from halsim.hostexec import HostExecution, host_threads
from halsim.plan import ImportWindow, Step
from halsim.request import BufferSpec

from .vulkan_driver import Allocation, CommandContext, LogicalDevice
from .vulkan_extent import Extent, align_up, copy_regions
from .vulkan_instance import Instance, PhysicalInfo, messages

__all__ = ["VulkanBuffer", "VulkanDevice", "VulkanExecution", "enumerate_devices", "open_device", "messages"]

HOST_VISIBLE, HOST_COHERENT = 0x2, 0x4  # VkMemoryPropertyFlagBits


class VulkanBuffer(DeviceBuffer):
    """A tensor in Vulkan memory: an :class:`Extent` over one or more VkBuffers.

    ``host`` is set when the bytes are host memory used in place (imported).
    """

    def __init__(self, spec: BufferSpec, device: "VulkanDevice", allocation: Allocation | None,
                 extent: Extent, host: memoryview | None = None):
        super().__init__(spec, device.name)
        self.device = device
        self.logical: LogicalDevice = device.logical  # the VkDevice its VkBuffers belong to
        self.allocation = allocation  # None when the buffer owns no memory (in place, or empty)
        self.extent = extent
        self.host = host
        self._mapped: memoryview | None = None

    @property
    def handles(self) -> list[tuple[Any, int, int]]:
        """(VkBuffer, offset, size) pieces holding the tensor, in order."""
        return [(p.buffer, p.offset, p.size) for p in self.extent.pieces]

    def _host_view(self) -> memoryview | None:
        """The bytes as host memory, when the host can see them without a copy."""
        if self.host is not None:
            return self.host[: self.size]
        if self.size == 0:
            return memoryview(b"")
        allocation = self.allocation
        if allocation is None or len(allocation.objects) != 1:
            return None
        if allocation.memory_flags & (HOST_VISIBLE | HOST_COHERENT) != HOST_VISIBLE | HOST_COHERENT:
            return None
        if self._mapped is None:
            self._mapped = self.logical.map(allocation.objects[0][1], self.size)
        return self._mapped

    def to_bytes(self) -> bytes:
        if self.host is not None or self.size == 0:
            return bytes(self._host_view())
        return self.logical.read(self.extent, 0, self.size)

    def tensor(self) -> Any:
        """A numpy view (dtype and shape) where the host can see the memory — imported
        bytes, or device memory that is host-visible (integrated and CPU devices);
        else the buffer itself (its VkBuffers are in ``handles``)."""
        view = self._host_view()
        if view is None:
            return self
        array = np.frombuffer(view, dtype=np.uint8)
        dtype = numpy_dtype(self.spec.dtype)
        if self.size % dtype.itemsize:
            return array
        shape = self.spec.shape or (self.size // dtype.itemsize,)
        return array.view(dtype).reshape(shape)

    def free(self) -> None:
        """Free the memory this buffer owns and let go of the host bytes it looked at."""
        for view in (self._mapped, self.host):
            if view is not None:
                try:
                    view.release()
                except BufferError:  # a tensor() array still looks at it; it goes with that array
                    pass
        self._mapped = self.host = None  # (vkFreeMemory unmaps)
        if self.allocation is not None:
            self.allocation.free()
            self.allocation = None
        self.extent = Extent()


class _Window:
    """An imported window of the file's host memory."""

    def __init__(self, allocation: Allocation, file_offset: int):
        self.allocation = allocation
        self.file_offset = file_offset


class VulkanExecution(HostExecution):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logical: LogicalDevice = self.device.logical
        self._staging: list[Allocation] = []
        self._slot_extents: list[Extent] = []
        self._contexts: dict[int, CommandContext] = {}
        self._contexts_lock = threading.Lock()

    # ----- memory --------------------------------------------------------------
    def alloc_buffer(self, spec: BufferSpec) -> DeviceBuffer:
        if spec.size == 0:
            return VulkanBuffer(spec, self.device, None, Extent())
        allocation = self.logical.allocate_device(spec.size, f"buffer {spec.name!r}")
        return VulkanBuffer(spec, self.device, allocation, allocation.extent)

    def free_buffer(self, buffer: DeviceBuffer) -> None:
        buffer.free()

    def alloc_staging(self, slots: int, slot_bytes: int) -> list[memoryview]:
        limit = self.logical.max_piece
        views: list[memoryview] = []
        try:
            if slot_bytes <= limit:
                # As few mapped allocations as the allocation limit allows (usually one).
                per = max(1, min(slots, limit // slot_bytes))
                for first in range(0, slots, per):
                    count = min(per, slots - first)
                    allocation = self.logical.allocate_host(count * slot_bytes, "staging")
                    self._staging.append(allocation)
                    for k in range(count):
                        views.append(allocation.host[k * slot_bytes : (k + 1) * slot_bytes])
                        self._slot_extents.append(allocation.extent.slice(k * slot_bytes, slot_bytes))
            else:
                for _ in range(slots):
                    allocation = self._imported_slot(slot_bytes)
                    self._staging.append(allocation)
                    views.append(allocation.host[:slot_bytes])
                    self._slot_extents.append(allocation.extent.slice(0, slot_bytes))
        except BaseException:
            views.clear()
            self.free_staging()
            raise
        return views

    def _imported_slot(self, slot_bytes: int) -> Allocation:
        """A slot larger than one allocation: anonymous host pages, imported in pieces."""
        align = max(self.logical.info.import_alignment, mmap.PAGESIZE)
        length = align_up(slot_bytes, align)
        try:
            mapping = mmap.mmap(-1, length)
        except OSError as err:
            raise OutOfMemoryError(f"cannot map {length} bytes of staging: {err}", device=self.device.name) from None
        view = memoryview(mapping)
        try:
            allocation = self.logical.import_host(view, length, f"a {slot_bytes}-byte staging slot")
        except ImportRefusedError as err:
            view.release()
            mapping.close()
            raise OutOfMemoryError(
                f"a staging slot of {slot_bytes} bytes is larger than one Vulkan allocation "
                f"({self.logical.max_piece} bytes) and host memory cannot be imported ({err}); "
                "use a smaller chunk (streaming) instead", device=self.device.name) from None
        allocation.keep.append(mapping)
        return allocation

    def free_staging(self) -> None:
        self._drain()
        staging, self._staging = self._staging, []
        self._slot_extents = []
        for allocation in staging:
            allocation.free()

    # ----- copies --------------------------------------------------------------
    def _context(self, step: Step) -> CommandContext:
        lane = step.queue % max(1, self.plan.limits.queues)  # one worker thread per lane
        context = self._contexts.get(lane)
        if context is None:
            context = self.logical.command_context()
            with self._contexts_lock:
                self._contexts[lane] = context
        return context

    def _copy(self, step: Step, groups, to_host: bool) -> None:
        self.logical.copy(self._context(step), step.queue, groups, to_host)

    def copy_in(self, step: Step, source: memoryview, buffer: DeviceBuffer, offset: int) -> None:
        if len(source):
            groups = copy_regions(self._slot_extents[step.slot], step.slot_offset, buffer.extent, offset, len(source))
            self._copy(step, groups, to_host=False)

    def copy_out(self, step: Step, buffer: DeviceBuffer, offset: int, target: memoryview) -> None:
        if len(target):
            groups = copy_regions(buffer.extent, offset, self._slot_extents[step.slot], step.slot_offset, len(target))
            self._copy(step, groups, to_host=True)

    def import_window(self, window: ImportWindow, view: memoryview) -> Any:
        what = f"file bytes [{window.file_offset}, {window.file_offset + window.length}) of {self.request.source.name}"
        return _Window(self.logical.import_host(view, window.length, what), window.file_offset)

    def unimport_window(self, window: ImportWindow, handle: Any) -> None:
        handle.allocation.free()

    def copy_imported(self, step: Step, handle: Any, source: memoryview, buffer: DeviceBuffer, offset: int) -> None:
        if step.length:
            groups = copy_regions(handle.allocation.extent, step.file_offset - handle.file_offset,
                                  buffer.extent, offset, step.length)
            self._copy(step, groups, to_host=False)

    def bind(self, step: Step, handle: Any, source: memoryview, spec: BufferSpec) -> DeviceBuffer:
        if not self.device.caps.unified_memory:
            return super().bind(step, handle, source, spec)
        if step.buffer_offset or step.length != spec.size:
            raise DeviceError("an in-place buffer must be one whole range of the file",
                              device=self.device.name, step=step.describe(self.request))
        extent = handle.allocation.extent.slice(step.file_offset - handle.file_offset, spec.size)
        return VulkanBuffer(spec, self.device, None, extent, host=source)

    # ----- cleanup -------------------------------------------------------------
    def _drain(self) -> None:
        """Wait for the device if a copy may still be running (its wait failed)."""
        if any(c.dirty for c in list(self._contexts.values())):
            self.logical.wait_idle()

    def release(self, keep_buffers: bool) -> None:
        # Buffers bound in place own no memory (their window does), so the base
        # class does not free them; they still hold views of the file's bytes.
        bound = [] if keep_buffers or self._adopted else [self._buffers[i] for i in self._bound if i in self._buffers]
        try:
            super().release(keep_buffers)
        finally:
            for buffer in bound:
                buffer.free()
            with self._contexts_lock:
                contexts, self._contexts = list(self._contexts.values()), {}
            for context in contexts:
                context.destroy()


class VulkanDevice(Device):
    """``vulkan:N``: the N-th Vulkan physical device.

    ``max_piece`` caps one VkBuffer/VkDeviceMemory below the driver's limits
    (tests use it to split small buffers); ``probe=False`` skips the file-import
    probe and trusts the extension (the default comes from the environment:
    ``HALSIM_VULKAN_PROBE=0`` skips it).
    """

    def __init__(self, index: int = 0, *, max_piece: int | None = None, probe: bool | None = None):
        if probe is None:
            probe = os.environ.get("HALSIM_VULKAN_PROBE", "1") not in ("0", "false", "no", "off")
        instance = Instance.get()
        info: PhysicalInfo = instance.physical_info(index)
        self.index = index
        self.name = f"vulkan:{index}"
        self.info = info
        self._max_piece = max_piece
        self._lock = threading.Lock()
        self.logical = LogicalDevice(instance, info, self.name, max_piece)
        try:
            if not self.logical.can_import:
                self.import_problem = "no VK_EXT_external_memory_host"
            elif probe:
                self.import_problem = _probe(self)
            else:
                self.import_problem = None
        except BaseException:
            self.logical.close()
            raise
        self.caps = DeviceCaps(
            kind=info.kind,
            unified_memory=info.kind in ("integrated", "cpu"),
            can_import_host=self.import_problem is None,
            import_alignment=info.import_alignment or 4096,
            direct_storage=False,
            copy_queues=info.queue_count,
            memory_bytes=info.device_local_bytes,
            max_allocation=info.max_allocation,
            host_threads=host_threads(),
        )

    @property
    def imports_lazily(self) -> bool:
        """For the simulator: lavapipe's host-pointer import wraps the mapping, whose pages are
        read when first used; a GPU's driver pins them, reading a cold file in first."""
        return self.info.kind == "cpu"

    @property
    def description(self) -> str:
        family = "transfer-only" if self.info.transfer_only else "general"
        note = f"; import refused: {self.import_problem}" if self.import_problem else ""
        return (f"{self.info.name}: {self.caps.describe()} (queue family {self.info.queue_family}, {family}){note}")

    def open(self, plan, file, trace, index=0, faults=None) -> VulkanExecution:
        with self._lock:  # reopen after close(): the device object stays usable
            if self.logical.handle is None:
                self.logical = LogicalDevice(Instance.get(), self.info, self.name, self._max_piece)
        return VulkanExecution(self, plan, file, trace, index, faults)

    def live_objects(self) -> dict[str, int]:
        """Vulkan objects alive on this device: ``memory``, ``buffer``, ``command_pool``, ``fence``."""
        return self.logical.live()

    def close(self) -> None:
        """Destroy the VkDevice, unless buffers still live on it (then it stays
        until exit). The next ``open`` creates a new one."""
        with self._lock:
            live = self.logical.live()
            if live.get("memory") or live.get("buffer"):
                return
            self.logical.close()


_probe_results: dict[tuple[int, str], str | None] = {}
_open: dict[int, VulkanDevice] = {}
_open_lock = threading.Lock()


PROBE_TIMEOUT_S = 60


def _probe(device: VulkanDevice) -> str | None:
    """The file-import probe, run once per physical device and process."""
    key = (device.index, device.info.name)
    if key not in _probe_results:
        _probe_results[key] = _run_probe(device.index)
    return _probe_results[key]


def _run_probe(index: int) -> str | None:
    """Run :func:`probe_in_this_process` in a child process: on the NVIDIA driver
    (H100, 580.159) a refused import of a mapped file made every later
    vkAllocateMemory of the process fail with VK_ERROR_OUT_OF_DEVICE_MEMORY, so
    the attempt must not happen in this one."""
    code = ("import sys; from halsim.backends.vulkan import probe_in_this_process as p; "
            f"r = p({index}); sys.stdout.write('OK' if r is None else r)")
    try:
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return f"the import probe hung for {PROBE_TIMEOUT_S} s"
    except OSError as err:
        return f"cannot run the import probe: {err}"
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the import probe failed (exit {child.returncode}: {last})"
    return None if child.stdout == "OK" else child.stdout or "the import probe said nothing"


def probe_in_this_process(index: int) -> str | None:
    """The probe itself (run by :func:`_probe` in a child process)."""
    device = VulkanDevice(index, probe=False)
    try:
        return device.logical.probe_file_import()
    finally:
        device.close()


def open_device(index: int = 0) -> VulkanDevice:
    """The process's ``vulkan:index`` device, opened on first use and shared after."""
    with _open_lock:
        device = _open.get(index)
        if device is None:
            device = VulkanDevice(index)
            _open[index] = device
        return device


def enumerate_devices() -> list[tuple[str, DeviceCaps]]:
    instance = Instance.get()
    if not instance.physical:
        raise DeviceUnavailableError("vulkan: unavailable (no Vulkan physical device: is a driver (ICD) installed?)")
    return [(f"vulkan:{i}", open_device(i).caps) for i in range(len(instance.physical))]
