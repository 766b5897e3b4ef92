"""The CUDA driver as the CUDA backend uses it: checked calls, devices, contexts.

Everything goes through ``cuda.bindings.driver`` (cuda-python), whose calls
release the GIL. This module imports without cuda-python and without a GPU:
:func:`init` then raises :class:`~halsim.errors.DeviceUnavailableError` with
the reason ("cuda: unavailable (...)"), which ``halsim devices`` prints.
"""

from __future__ import annotations

import mmap
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from halsim.errors import DeviceError, DeviceUnavailableError, OutOfMemoryError

try:  # the extra halsim[cuda]; a missing package only matters once CUDA is asked for
    from cuda.bindings import driver as cu
except Exception as _err:  # ImportError, or a broken install raising something else
    cu = None
    IMPORT_ERROR: BaseException | None = _err
else:
    IMPORT_ERROR = None

PAGE_SIZE = mmap.PAGESIZE


def result_name(err: Any) -> str:
    """``CUDA_ERROR_OUT_OF_MEMORY`` for a CUresult (or its int value)."""
    name = getattr(err, "name", None)
    if name:
        return str(name)
    try:
        return cu.CUresult(int(err)).name
    except Exception:
        return f"CUresult {err!r}"


def is_success(err: Any) -> bool:
    return int(err) == 0


def check(result: tuple, what: str, *, device: str = "", step: str = "", oom: str = "") -> Any:
    """The value(s) of a cuda-python call, or raise DeviceError naming the CUresult.

    cuda-python returns ``(CUresult,)``, ``(CUresult, value)`` or
    ``(CUresult, v1, v2...)``. ``oom`` is the message for an out-of-memory
    error (then :class:`OutOfMemoryError` is raised).
    """
    err = result[0]
    if not is_success(err):
        name = result_name(err)
        if oom and name == "CUDA_ERROR_OUT_OF_MEMORY":
            raise OutOfMemoryError(f"{oom}: {what} failed with {name}", device=device, step=step)
        raise DeviceError(f"{what} failed: {name}", device=device, step=step)
    if len(result) == 1:
        return None
    if len(result) == 2:
        return result[1]
    return result[1:]


# ----- initialisation -----------------------------------------------------------------

_init_lock = threading.Lock()
_init_state: tuple[bool, str] | None = None  # (ok, reason when not ok)


def _unavailable_reason(err: BaseException) -> str:
    text = str(err).strip().replace("\n", " ")
    if "driver library" in text or "libcuda" in text or "display driver" in text:
        return "NVIDIA driver library libcuda not found; is the NVIDIA driver installed?"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def init() -> None:
    """``cuInit`` once per process; raise DeviceUnavailableError when CUDA cannot run here."""
    global _init_state
    with _init_lock:
        if _init_state is None:
            _init_state = _try_init()
        ok, reason = _init_state
    if not ok:
        raise DeviceUnavailableError(f"cuda: unavailable ({reason})")


def _try_init() -> tuple[bool, str]:
    if cu is None:
        return False, f"cuda-python is not installed ({IMPORT_ERROR}); install halsim[cuda]"
    try:
        (err,) = cu.cuInit(0)
    except Exception as exc:  # the driver library is missing: a RuntimeError subclass
        return False, _unavailable_reason(exc)
    if not is_success(err):
        name = result_name(err)
        if name == "CUDA_ERROR_NO_DEVICE":
            return False, "no CUDA device: cuInit returned CUDA_ERROR_NO_DEVICE"
        return False, f"cuInit failed: {name}"
    try:
        err, count = cu.cuDeviceGetCount()
    except Exception as exc:
        return False, _unavailable_reason(exc)
    if not is_success(err):
        return False, f"cuDeviceGetCount failed: {result_name(err)}"
    if count == 0:
        return False, "no CUDA device: the driver reports 0 devices"
    return True, ""


def device_count() -> int:
    init()
    return check(cu.cuDeviceGetCount(), "cuDeviceGetCount")


# ----- devices ------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceInfo:
    """What the driver says about one device, and its retained primary context."""

    index: int
    handle: Any  # CUdevice
    context: Any  # CUcontext (primary, retained for the life of the process)
    name: str  # the product name, e.g. "NVIDIA H100 80GB HBM3"
    total_memory: int
    integrated: bool
    unified_addressing: bool
    can_map_host_memory: bool
    can_use_host_pointer: bool  # CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM
    host_register_supported: bool
    read_only_register: bool  # READ_ONLY_HOST_REGISTER_SUPPORTED
    async_engines: int
    pci_bus_id: int

    @property
    def label(self) -> str:
        return f"cuda:{self.index}"


_devices: dict[int, DeviceInfo] = {}
_devices_lock = threading.Lock()


def device_info(index: int) -> DeviceInfo:
    """The device ``index`` (retaining its primary context once per process)."""
    init()
    with _devices_lock:
        info = _devices.get(index)
        if info is None:
            info = _devices[index] = _query(index)
        return info


def _query(index: int) -> DeviceInfo:
    count = device_count()
    if not 0 <= index < count:
        raise DeviceUnavailableError(f"cuda:{index}: no such device; this machine has {count} CUDA device(s)")
    label = f"cuda:{index}"
    dev = check(cu.cuDeviceGet(index), "cuDeviceGet", device=label)
    raw = check(cu.cuDeviceGetName(256, dev), "cuDeviceGetName", device=label)
    name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, (bytes, bytearray)) else str(raw)
    total = check(cu.cuDeviceTotalMem(dev), "cuDeviceTotalMem", device=label)
    A = cu.CUdevice_attribute

    def attr(which: str) -> int:
        return int(check(cu.cuDeviceGetAttribute(getattr(A, "CU_DEVICE_ATTRIBUTE_" + which), dev),
                         f"cuDeviceGetAttribute({which})", device=label))

    ctx = check(cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain", device=label)
    return DeviceInfo(
        index=index,
        handle=dev,
        context=ctx,
        name=name,
        total_memory=int(total),
        integrated=bool(attr("INTEGRATED")),
        unified_addressing=bool(attr("UNIFIED_ADDRESSING")),
        can_map_host_memory=bool(attr("CAN_MAP_HOST_MEMORY")),
        can_use_host_pointer=bool(attr("CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM")),
        host_register_supported=bool(attr("HOST_REGISTER_SUPPORTED")),
        read_only_register=bool(attr("READ_ONLY_HOST_REGISTER_SUPPORTED")),
        async_engines=attr("ASYNC_ENGINE_COUNT"),
        pci_bus_id=attr("PCI_BUS_ID"),
    )


@contextmanager
def current(context: Any, label: str = "") -> Iterator[None]:
    """Make ``context`` current on this thread for the block, then restore the caller's."""
    check(cu.cuCtxPushCurrent(context), "cuCtxPushCurrent", device=label)
    try:
        yield
    finally:
        cu.cuCtxPopCurrent()


def set_current(context: Any, label: str = "") -> None:
    """Make ``context`` current on this (worker) thread for good."""
    check(cu.cuCtxSetCurrent(context), "cuCtxSetCurrent", device=label)


def mem_info(context: Any) -> tuple[int, int]:
    """(free, total) device memory, as the driver reports it."""
    with current(context):
        free, total = check(cu.cuMemGetInfo(), "cuMemGetInfo")
    return int(free), int(total)
