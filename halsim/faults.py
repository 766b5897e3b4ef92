"""The one fault-injection hook, shared by every device.

Every device calls ``faults.before(step, execution)`` just before it performs
a step, and ``faults.on_allocate(kind, nbytes, execution)`` just before it
allocates device memory (``kind="device"``) or staging (``kind="staging"``).
A :class:`FaultInjector` holds a list of :class:`Fault`\\ s, each firing on the
``index``-th matching event (counted from 0, over all devices of the run), so a
test can put any fault at every step position::

    injector = FaultInjector(Fault("copy_error", index=3))
    halsim.upload(path, "cpu", "streaming", faults=injector)   # -> DeviceError

Faults and what they do:

``read_error``     the step's file read fails (FileAccessError naming the file);
``write_error``    the step's file write fails (a download's WRITE);
``short_read``     the file shrinks under the step: a real file on disk is
                   truncated in the middle of the step's range, so the
                   file layer's own checks must catch it (no SIGBUS); a file
                   with no path fails as a short read;
``copy_error``     the copy fails (DeviceError naming the device and the step);
``import_refused`` the device refuses to import host memory (ImportRefusedError);
``cancel``         the run's CancelToken is set just before the step (the step
                   itself still runs: the engine must notice, drain and clean up);
``device_oom``     the device-memory allocation fails (OutOfMemoryError);
``staging_oom``    the staging allocation fails (OutOfMemoryError).

A device that performs steps off the host (a simulator, a GPU) calls the same
two methods; the fault raises from them as if the operation itself failed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from halsim.errors import DeviceError, FileAccessError, ImportRefusedError, OutOfMemoryError, UploadCancelled
from halsim.plan import Op, Step

if TYPE_CHECKING:
    from halsim.device import Execution
    from halsim.engine import CancelToken

# The events each fault kind counts by default: the ops of the steps it fires on,
# or the allocation kind.
STEP_FAULTS: dict[str, frozenset[Op]] = {
    "read_error": frozenset({Op.READ, Op.DIRECT}),
    "write_error": frozenset({Op.WRITE}),
    "short_read": frozenset({Op.READ, Op.DIRECT, Op.IMPORT, Op.COPY_IMPORTED}),
    "copy_error": frozenset({Op.COPY, Op.COPY_BACK, Op.COPY_IMPORTED}),
    "import_refused": frozenset({Op.IMPORT}),
    "cancel": frozenset(Op),
}
ALLOC_FAULTS: dict[str, str] = {"device_oom": "device", "staging_oom": "staging"}
KINDS = tuple(STEP_FAULTS) + tuple(ALLOC_FAULTS)
# The error each fault must end in (cancel: UploadCancelled), for devices and tests alike.
EXPECTED_ERRORS: dict[str, type] = {
    "read_error": FileAccessError,
    "write_error": FileAccessError,
    "short_read": FileAccessError,
    "copy_error": DeviceError,
    "import_refused": ImportRefusedError,
    "device_oom": OutOfMemoryError,
    "staging_oom": OutOfMemoryError,
    "cancel": UploadCancelled,
}


@dataclass(frozen=True)
class Fault:
    """Fire ``kind`` on the ``index``-th matching event (0-based).

    ``op`` narrows a step fault to the steps of one op (``Fault("cancel",
    op=Op.COPY, index=2)``: the third copy); by default every op in
    :data:`STEP_FAULTS` for the kind counts.
    """

    kind: str
    index: int = 0
    op: Op | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.index < 0:
            raise ValueError("fault index must not be negative")
        if self.op is not None and self.kind in ALLOC_FAULTS:
            raise ValueError(f"{self.kind} counts allocations, not steps")

    def matches_step(self, step: Step) -> bool:
        if self.kind not in STEP_FAULTS:
            return False
        return step.op is self.op if self.op is not None else step.op in STEP_FAULTS[self.kind]


@dataclass
class Fired:
    fault: Fault
    what: str  # the step or allocation it fired on


class FaultInjector:
    """Counts steps and allocations, and fires its faults. Thread-safe."""

    def __init__(self, *faults: Fault, cancel: "CancelToken | None" = None):
        from halsim.engine import CancelToken

        self.faults = tuple(faults)
        self.cancel = cancel if cancel is not None else CancelToken()
        self.fired: list[Fired] = []
        self.truncated: list[tuple[str, int]] = []  # (path, new length) of files shrunk
        self._counts = [0] * len(self.faults)
        self._lock = threading.Lock()

    # ----- the hooks devices call ------------------------------------------------
    def before(self, step: Step, execution: "Execution") -> None:
        """Called by a device just before it performs ``step``; may raise."""
        due = []
        with self._lock:
            for i, fault in enumerate(self.faults):
                if fault.matches_step(step):
                    if self._counts[i] == fault.index:
                        due.append(fault)
                    self._counts[i] += 1
        for fault in due:
            self._fire_step(fault, step, execution)

    def on_allocate(self, kind: str, nbytes: int, execution: "Execution") -> None:
        """Called by a device just before it allocates ``nbytes`` of ``kind`` memory; may raise."""
        due = []
        with self._lock:
            for i, fault in enumerate(self.faults):
                if ALLOC_FAULTS.get(fault.kind) == kind:
                    if self._counts[i] == fault.index:
                        due.append(fault)
                    self._counts[i] += 1
        for fault in due:
            device = execution.device.name
            self.fired.append(Fired(fault, f"{kind} allocation of {nbytes} bytes on {device}"))
            raise OutOfMemoryError(f"injected: out of {kind} memory allocating {nbytes} bytes", device=device)

    # ----- firing ----------------------------------------------------------------
    def _fire_step(self, fault: Fault, step: Step, execution: "Execution") -> None:
        request = execution.plan.request
        where = step.describe(request)
        device = execution.device.name
        file = execution.file
        name = file.name if file is not None else request.source.name
        self.fired.append(Fired(fault, where))
        kind = fault.kind
        if kind == "cancel":
            self.cancel.cancel()
        elif kind in ("read_error", "write_error"):
            verb = "read" if kind == "read_error" else "write"
            raise FileAccessError(name, f"injected {verb} error at offset {step.file_offset} ({where})")
        elif kind == "short_read":
            self._shrink(file, step, name, where)
        elif kind == "copy_error":
            raise DeviceError("injected copy error", device=device, step=where)
        elif kind == "import_refused":
            raise ImportRefusedError("injected: the driver refused to import host memory", device=device, step=where)

    def _shrink(self, file: Any, step: Step, name: str, where: str) -> None:
        """Truncate the real file inside the step's range; the file layer must notice."""
        new_length = max(0, step.file_offset + step.length // 2)
        path = getattr(file, "name", None)
        if file is not None and getattr(file, "fd", None) is not None and path and os.path.isfile(path):
            # An import window runs past the end of the file (it is aligned): cut the
            # part of the range the file has, or the step would never notice.
            end = min(step.file_offset + step.length, os.path.getsize(path))
            new_length = max(0, step.file_offset + (end - step.file_offset) // 2)
            if os.path.getsize(path) > new_length:
                # A mapped file waits for the copies touching its mapping: they checked its size
                # before this, and a copy under way from pages past the new end would SIGBUS.
                truncate_to = getattr(file, "truncate_to", None)
                truncate_to(new_length) if truncate_to is not None else os.truncate(path, new_length)
                with self._lock:
                    self.truncated.append((path, new_length))
            return
        raise FileAccessError(name, f"short read at offset {new_length}: the file ended early (injected, {where})")

    @property
    def fired_kinds(self) -> list[str]:
        return [f.fault.kind for f in self.fired]


__all__ = ["Fault", "FaultInjector", "KINDS", "STEP_FAULTS", "ALLOC_FAULTS"]
