"""The CPU device: device memory is host memory (numpy), copies are memcpy.

It is the embedded default and the reference for the other devices: every
step really moves bytes, on the same threads a GPU backend would use. Imported
host memory is used in place (unified memory), and reading storage straight
into a buffer (``direct``) is a ``pread`` into it.
"""

from __future__ import annotations

import os

import numpy as np

from halsim.caps import DeviceCaps
from halsim.device import Device, DeviceBuffer
from halsim.errors import OutOfMemoryError
from halsim.files import copy_bytes
from halsim.formats import numpy_dtype
from halsim.hostexec import HostExecution, host_threads
from halsim.plan import Step
from halsim.request import BufferSpec


def _host_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover - non-POSIX
        return 1 << 34


class CpuBuffer(DeviceBuffer):
    def __init__(self, spec: BufferSpec, device_name: str, array: np.ndarray):
        super().__init__(spec, device_name)
        self.array = array  # uint8, spec.size bytes

    def to_bytes(self) -> bytes:
        return self.array.tobytes()

    def tensor(self) -> np.ndarray:
        """The tensor as numpy with its dtype and shape (bytes view, no copy)."""
        dtype = numpy_dtype(self.spec.dtype)
        shape = self.spec.shape or (self.spec.size // dtype.itemsize,)
        if self.spec.size % dtype.itemsize:
            return self.array
        return self.array.view(dtype).reshape(shape)

    # DLPack through numpy: torch.from_dlpack(buffer) works with no copy.
    def __dlpack__(self, **kwargs):
        return self.tensor().__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.tensor().__dlpack_device__()


class CpuExecution(HostExecution):
    def alloc_buffer(self, spec: BufferSpec) -> DeviceBuffer:
        try:
            return CpuBuffer(spec, self.device.name, np.empty(spec.size, dtype=np.uint8))
        except MemoryError:
            raise OutOfMemoryError(f"cannot allocate {spec.size} bytes for buffer {spec.name!r}",
                                   device=self.device.name) from None

    def free_buffer(self, buffer: DeviceBuffer) -> None:
        buffer.array = np.empty(0, dtype=np.uint8)

    def alloc_staging(self, slots: int, slot_bytes: int) -> list[memoryview]:
        try:
            self._staging = [np.empty(slot_bytes, dtype=np.uint8) for _ in range(slots)]
        except MemoryError:
            self._staging = []
            raise OutOfMemoryError(f"cannot allocate {slots} x {slot_bytes} bytes of staging",
                                   device=self.device.name) from None
        return [memoryview(a) for a in self._staging]

    def free_staging(self) -> None:
        self._staging = []

    def copy_in(self, step: Step, source: memoryview, buffer: DeviceBuffer, offset: int) -> None:
        copy_bytes(memoryview(buffer.array)[offset : offset + len(source)], source)

    def copy_out(self, step: Step, buffer: DeviceBuffer, offset: int, target: memoryview) -> None:
        copy_bytes(target, memoryview(buffer.array)[offset : offset + len(target)])

    def bind(self, step: Step, handle, source: memoryview, spec: BufferSpec) -> DeviceBuffer:
        array = np.frombuffer(source, dtype=np.uint8)  # read-only view of the mapped file
        return CpuBuffer(spec, self.device.name, array)

    def direct(self, step: Step, buffer: DeviceBuffer, offset: int) -> None:
        self.file.read_into(step.file_offset, memoryview(buffer.array)[offset : offset + step.length])


class CpuDevice(Device):
    """``cpu``: buffers in host memory."""

    # How its imports and direct reads work, for the simulator (calibrate copies them into
    # the Platform): an in-place import is the file's mapping, read when a tensor is first
    # used; a direct read is a buffered pread, from the page cache when the file is warm.
    imports_lazily = True
    direct_reads_buffered = True

    def __init__(self, name: str = "cpu", copy_queues: int = 2):
        self.name = name
        self.caps = DeviceCaps(
            kind="cpu",
            unified_memory=True,
            can_import_host=True,
            import_alignment=64,
            direct_storage=True,
            copy_queues=copy_queues,
            memory_bytes=_host_memory_bytes(),
            max_allocation=_host_memory_bytes(),
            host_threads=host_threads(),
        )

    def open(self, plan, file, trace, index=0, faults=None) -> CpuExecution:
        return CpuExecution(self, plan, file, trace, index, faults)


def open_device(index: int = 0) -> CpuDevice:
    if index != 0:
        from halsim.errors import DeviceUnavailableError

        raise DeviceUnavailableError(f"cpu:{index}: there is one CPU device, cpu:0")
    return CpuDevice()


def enumerate_devices() -> list[tuple[str, DeviceCaps]]:
    device = CpuDevice()
    return [("cpu", device.caps)]
