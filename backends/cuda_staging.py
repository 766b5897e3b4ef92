"""The CUDA backend's pinned staging ring: how its slots get page-locked.

Pinning is the largest fixed cost of a streamed upload. Measured on the lent
H100/H200 machines (``benchmarks/cuda_pinning.py``): one ``cuMemHostAlloc`` of
256 MiB took 0.11-0.16 s, about half the time an 8 GiB upload needs at
35 GB/s; the same 256 MiB as an anonymous mapping on transparent huge pages,
faulted in and registered with ``cuMemHostRegister``, took 0.05 s.

So the default ring (``HALSIM_CUDA_STAGING=pipelined``) pins each slot on its
own, as a huge-page mapping, on a background thread in slot order: the first
read waits for one slot's pinning (a few ms), not the whole pool's, and the
rest is pinned while the first slots already stream. ``HALSIM_CUDA_STAGING=alloc``
keeps the pool as one ``cuMemHostAlloc`` made up front, for comparison.

Either way a ring is made per upload and freed when the upload ends, after an
error or cancel too (``close``).
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from typing import Any, Callable

from halsim.backends import cuda_driver as driver  # its ``cu`` is looked up per call: tests swap in a fake
from halsim.backends.cuda_driver import check, current, is_success, result_name
from halsim.errors import DeviceError, OutOfMemoryError
from halsim.files import address_of

MADV_POPULATE_WRITE = 23  # Linux 5.14+; older kernels fault the pages in on registration

MODES = ("pipelined", "alloc")


def staging_mode(label: str = "") -> str:
    mode = os.environ.get("HALSIM_CUDA_STAGING", "pipelined").strip().lower() or "pipelined"
    if mode not in MODES:
        raise DeviceError(f"HALSIM_CUDA_STAGING={mode!r} is not one of {', '.join(MODES)}", device=label)
    return mode


def pin_anonymous(size: int, label: str, oom: str) -> tuple[mmap.mmap, int]:
    """An anonymous mapping of ``size`` bytes on huge pages where the kernel
    gives them, faulted in and page-locked for DMA; (mapping, address)."""
    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0x20)
    try:
        mapping = mmap.mmap(-1, size, flags=flags)
    except OSError as err:
        raise OutOfMemoryError(f"{oom}: mmap failed: {err.strerror}", device=label) from None
    try:
        if hasattr(mmap, "MADV_HUGEPAGE"):
            mapping.madvise(mmap.MADV_HUGEPAGE)  # 512x fewer pages to fault and lock
        mapping.madvise(MADV_POPULATE_WRITE)
    except OSError:
        pass  # no THP or an old kernel: cuMemHostRegister faults the pages in itself
    view = memoryview(mapping)
    address = address_of(view)
    view.release()
    (err,) = driver.cu.cuMemHostRegister(address, size, driver.cu.CU_MEMHOSTREGISTER_PORTABLE)
    if not is_success(err):
        mapping.close()
        name = result_name(err)
        kind = OutOfMemoryError if name == "CUDA_ERROR_OUT_OF_MEMORY" else DeviceError
        raise kind(f"{oom}: cuMemHostRegister failed: {name}", device=label)
    return mapping, address


def unpin_anonymous(mapping: mmap.mmap, address: int, label: str) -> None:
    try:
        check(driver.cu.cuMemHostUnregister(address), "cuMemHostUnregister of staging", device=label)
    finally:
        mapping.close()


class PipelinedSlots:
    """Slots pinned one by one on a background thread; ``ring[k]`` waits for slot k.

    A failed pinning (out of memory) is raised by every later ``ring[k]``, so
    the READ that needed the slot fails and the engine cleans up.
    """

    def __init__(self, slots: int, slot_bytes: int, context: Any, label: str,
                 view_of: Callable[[int, int], memoryview], on_pinned: Callable[[float, float], None] | None = None):
        self._slot_bytes = slot_bytes
        self._on_pinned = on_pinned  # (start, end) of each slot's pinning, perf_counter seconds: the trace
        self._context, self._label, self._view_of = context, label, view_of
        self._ready = [threading.Event() for _ in range(slots)]
        self._views: list[memoryview | None] = [None] * slots
        self._pinned: list[tuple[mmap.mmap, int]] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pin_all, name=f"halsim-staging-{label}", daemon=True)
        self._thread.start()

    def _pin_all(self) -> None:
        n = len(self._ready)
        try:
            with current(self._context, self._label):
                for k in range(n):
                    if self._stop.is_set():
                        break
                    oom = f"cannot pin staging slot {k} of {n} x {self._slot_bytes} bytes"
                    start = time.perf_counter()
                    mapping, address = pin_anonymous(self._slot_bytes, self._label, oom)
                    self._pinned.append((mapping, address))
                    self._views[k] = self._view_of(address, self._slot_bytes)
                    if self._on_pinned is not None:
                        self._on_pinned(start, time.perf_counter())
                    self._ready[k].set()
        except BaseException as err:  # handed to the step that needs the slot
            self._error = err
        finally:
            for event in self._ready:
                event.set()

    def __len__(self) -> int:
        return len(self._ready)

    def __getitem__(self, k: int) -> memoryview:
        self._ready[k].wait()
        view = self._views[k]
        if view is None:
            error = self._error
            if error is not None:
                # A fresh error per waiter: several reader threads may raise it at once.
                kind = OutOfMemoryError if isinstance(error, OutOfMemoryError) else DeviceError
                message = str(error) if isinstance(error, DeviceError) else \
                    f"pinning the staging ring failed: {type(error).__name__}: {error}"
                raise kind(message) from error
            raise DeviceError("the staging ring was released", device=self._label)
        return view

    def close(self) -> None:
        """Stop pinning, then unpin and unmap every slot (idempotent)."""
        self._stop.set()
        self._thread.join()
        self._views = [None] * len(self._ready)
        pinned, self._pinned = self._pinned, []
        failed = None
        for mapping, address in pinned:
            try:
                unpin_anonymous(mapping, address, self._label)
            except Exception as err:  # unpin the rest
                failed = failed or err
        if failed is not None:
            raise failed


class HostAllocPool:
    """The whole pool as one ``cuMemHostAlloc``, made before the first step."""

    def __init__(self, slots: int, slot_bytes: int, label: str, view_of: Callable[[int, int], memoryview]):
        total = slots * slot_bytes
        self._label = label
        self._ptr = int(check(driver.cu.cuMemHostAlloc(total, driver.cu.CU_MEMHOSTALLOC_PORTABLE), f"cuMemHostAlloc of {total} bytes",
                              device=label, oom=f"cannot pin {slots} x {slot_bytes} bytes of staging"))
        self._views = [view_of(self._ptr + i * slot_bytes, slot_bytes) for i in range(slots)]

    def __len__(self) -> int:
        return len(self._views)

    def __getitem__(self, k: int) -> memoryview:
        return self._views[k]

    def close(self) -> None:
        ptr, self._ptr, self._views = self._ptr, 0, []
        if ptr:
            check(driver.cu.cuMemFreeHost(ptr), "cuMemFreeHost", device=self._label)
