"""A CPU device that counts what is live: buffers, staging, executions, imports."""

from __future__ import annotations

import threading

from halsim.backends.cpu import CpuDevice, CpuExecution


class CountingExecution(CpuExecution):
    def alloc_buffer(self, spec):
        buffer = super().alloc_buffer(spec)
        self.device.count("buffers", +1, spec.size)
        return buffer

    def free_buffer(self, buffer):
        super().free_buffer(buffer)
        self.device.count("buffers", -1, buffer.size)

    def alloc_staging(self, slots, slot_bytes):
        views = super().alloc_staging(slots, slot_bytes)
        self.device.count("staging", +1, slots * slot_bytes)
        return views

    def free_staging(self):
        if getattr(self, "_staging", None):
            self.device.count("staging", -1, sum(a.nbytes for a in self._staging))
        super().free_staging()

    def import_window(self, window, view):
        self.device.count("imports", +1, window.length)
        return super().import_window(window, view)

    def unimport_window(self, window, handle):
        self.device.count("imports", -1, window.length)
        super().unimport_window(window, handle)


class CountingCpuDevice(CpuDevice):
    """``live[kind]`` = (objects, bytes) still allocated; ``opened`` counts executions."""

    def __init__(self, caps=None):
        super().__init__(name="cpu")
        if caps is not None:
            self.caps = caps
        self.live = {"buffers": [0, 0], "staging": [0, 0], "imports": [0, 0]}
        self.opened = 0
        self._lock = threading.Lock()

    def count(self, kind: str, objects: int, nbytes: int) -> None:
        with self._lock:
            self.live[kind][0] += objects
            self.live[kind][1] += objects * nbytes if objects > 0 else -nbytes

    def open(self, plan, file, trace, index=0, faults=None):
        self.opened += 1
        return CountingExecution(self, plan, file, trace, index, faults)

    def nothing_live(self, *kinds: str) -> bool:
        return all(self.live[k] == [0, 0] for k in (kinds or self.live))
