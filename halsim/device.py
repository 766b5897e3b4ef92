"""The device trait: what every device — simulated or real — provides.

A device turns plan steps into its own API calls; it never decides the order
(the engine does). One run opens an :class:`Execution` on each device it
targets; the engine then submits steps and waits for them.

To add a backend: subclass :class:`Device` (``name``, ``caps``, ``open``, and
``wait`` if its pendings are neither completed by :meth:`Pending.complete` nor
futures) and :class:`Execution`. Real host
devices can start from :class:`halsim.hostexec.HostExecution`, which does the
file I/O, the threads and the bookkeeping, leaving only memory and copies.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Sequence

from halsim.caps import DeviceCaps
from halsim.errors import UploadCancelled

if TYPE_CHECKING:
    from halsim.faults import FaultInjector
    from halsim.files import HalFile
    from halsim.plan import Plan, Step
    from halsim.request import BufferSpec
    from halsim.trace import Trace


class Pending:
    """A submitted step. ``error`` is set when it failed.

    A host device's threads call :meth:`complete` when the step is done; the
    default :meth:`Device.wait` then finds it. (A device whose ``handle`` is a
    ``concurrent.futures.Future`` needs nothing more: the wait completes it from
    the future.)"""

    __slots__ = ("step", "handle", "error", "finished", "notify", "hooked")

    def __init__(self, step: "Step", handle: Any = None):
        self.step = step
        self.handle = handle
        self.error: BaseException | None = None
        self.finished = False
        self.notify: queue.SimpleQueue | None = None  # the wake-up queue of the thread that waits last
        self.hooked = False  # a future handle completes it (the default wait hooks it once)

    def complete(self, error: BaseException | None = None) -> None:
        """Mark the step done (from the thread that ran it) and wake whoever waits for it."""
        self.error = error
        self.finished = True
        notify = self.notify
        if notify is not None:
            notify.put(None)


_wakeups = threading.local()


def _wakeup_queue() -> queue.SimpleQueue:
    """This thread's wake-up queue: the steps it waits for post to it when they finish."""
    signal = getattr(_wakeups, "queue", None)
    if signal is None:
        signal = _wakeups.queue = queue.SimpleQueue()
    return signal


def _complete_from(pending: Pending):
    def done(future) -> None:
        if future.cancelled():  # exception() would raise, inside a callback that swallows it
            pending.complete(UploadCancelled(f"{pending.step.describe()}: cancelled"))
        else:
            pending.complete(future.exception())
    return done


class DeviceBuffer(ABC):
    """A destination buffer in device memory, holding one tensor (or a slice)."""

    def __init__(self, spec: "BufferSpec", device_name: str):
        self.spec = spec
        self.device_name = device_name

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def size(self) -> int:
        return self.spec.size

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The buffer's contents, copied to the host (for verification)."""

    def tensor(self) -> Any:
        """The buffer as the backend's native array (numpy, CUDA array...), no copy."""
        raise NotImplementedError(f"{type(self).__name__} has no tensor view")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.size} bytes on {self.device_name})"


class Execution(ABC):
    """One device's share of one run: its buffers, its staging, its steps."""

    def __init__(self, device: "Device", plan: "Plan", file: "HalFile | None", trace: "Trace",
                 index: int, faults: "FaultInjector | None" = None):
        self.device = device
        self.plan = plan
        self.file = file
        self.trace = trace
        self.index = index  # device index within the request
        self.faults = faults
        # Buffers that *are* imported host memory (BIND): never allocated on the device.
        self._bound = {s.buffer for s in plan.steps if s.op.value == "bind" and s.device == index}
        self._adopted = False  # buffers came from an earlier run (adopt_buffers)

    def buffers_to_allocate(self):
        """(index, spec) of each buffer this execution must allocate itself."""
        if self._adopted:
            return
        for index, spec in enumerate(self.plan.request.buffers):
            if spec.device == self.index and index not in self._bound:
                yield index, spec

    @abstractmethod
    def allocate(self) -> None:
        """Allocate this device's buffers and staging pool. Frees what it got on failure."""

    def staging_ready(self) -> None:
        """Block until the whole staging pool is usable (a device may pin it in the background)."""

    @abstractmethod
    def submit(self, step: "Step") -> Pending:
        """Start ``step``; return at once (or after finishing it, on a serial backend)."""

    @abstractmethod
    def release(self, keep_buffers: bool) -> None:
        """Free staging and imports; free buffers too unless ``keep_buffers``. Idempotent."""

    @abstractmethod
    def buffers(self) -> dict[int, DeviceBuffer]:
        """Buffers of this device, by index into ``plan.request.buffers``."""

    def adopt_buffers(self, buffers: dict[int, DeviceBuffer]) -> None:
        """Use buffers an earlier run made (a download reads an upload's buffers);
        ``allocate`` then allocates only staging and ``release`` never frees them."""
        raise NotImplementedError(f"{type(self).__name__} cannot adopt buffers")

    def free_buffers(self) -> None:
        """Free buffers kept by ``release(keep_buffers=True)``."""
        self.release(keep_buffers=False)


class Device(ABC):
    """A place buffers live. ``caps`` is everything a policy may know of it."""

    name: str = "device"
    caps: DeviceCaps

    def now(self) -> float:
        """The device's clock in seconds (simulated time for the simulator)."""
        return time.perf_counter()

    @abstractmethod
    def open(self, plan: "Plan", file: "HalFile | None", trace: "Trace", index: int = 0,
             faults: "FaultInjector | None" = None) -> Execution:
        """Prepare to run this device's steps of ``plan``."""

    def wait(self, pending: Sequence[Pending], timeout: float | None = None) -> list[Pending]:
        """Block until at least one of ``pending`` is done; return those done.

        The default handles pendings completed by :meth:`Pending.complete` (host
        threads) or by a ``concurrent.futures.Future`` handle. Each wait tells the
        pendings the waiting thread's wake-up queue, and costs one scan of them. (``concurrent.futures.wait`` installs a
        waiter on every future and removes it again on each call: with thousands of
        small steps and a dozen threads sharing the interpreter, that made the
        engine's thread an upload's bottleneck.)
        """
        signal = _wakeup_queue()
        for p in pending:
            if not p.hooked and isinstance(p.handle, cf.Future):
                p.handle.add_done_callback(_complete_from(p))  # at once if it is done already
                p.hooked = True
            p.notify = signal  # before the scan below: a step finishing meanwhile then posts here
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            finished = [p for p in pending if p.finished]
            if finished:
                return finished
            try:
                signal.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return []
            while True:  # one scan answers every wake-up posted so far
                try:
                    signal.get_nowait()
                except queue.Empty:
                    break

    def close(self) -> None:
        """Release long-lived resources (contexts, threads)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
