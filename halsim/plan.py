"""Plans: the explicit steps of one upload or download, as plain data.

A plan is what a policy decides and what the engine walks. Each step names
its operands by index (file range, staging slot, imported window, buffer) and
the steps it depends on; reusing a staging slot is just a dependency on the
copies out of its previous fill. Every streaming invariant can be checked on a
plan alone (see :func:`halsim.invariants.check_plan`).
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from halsim.request import UploadRequest

if TYPE_CHECKING:
    from halsim.policies import Policy


class Op(str, enum.Enum):
    READ = "read"  # file range -> staging slot (host)
    COPY = "copy"  # staging slot -> device buffer
    COPY_BACK = "copy_back"  # device buffer -> staging slot
    WRITE = "write"  # staging slot -> file range (host)
    IMPORT = "import"  # make a window of the file's host memory visible to the device
    COPY_IMPORTED = "copy_imported"  # imported window -> device buffer, no staging
    BIND = "bind"  # the buffer *is* imported memory (integrated/unified devices): no copy
    UNIMPORT = "unimport"  # release an imported window
    DIRECT = "direct"  # storage -> device buffer, no host copy (GPUDirect-style)


# Which engine limit a step counts against.
IO_OPS = frozenset({Op.READ, Op.WRITE, Op.DIRECT})
COPY_OPS = frozenset({Op.COPY, Op.COPY_BACK, Op.COPY_IMPORTED})
HOST_OPS = frozenset({Op.IMPORT, Op.UNIMPORT, Op.BIND})
# Ops that deliver tensor bytes to (or from) a buffer.
DELIVERING_OPS = frozenset({Op.COPY, Op.COPY_BACK, Op.COPY_IMPORTED, Op.BIND, Op.DIRECT})


@dataclass(frozen=True, slots=True)
class Step:
    id: int
    op: Op
    device: int
    length: int
    file_offset: int = -1
    buffer: int = -1  # index into request.buffers
    buffer_offset: int = 0
    slot: int = -1  # staging slot, in the pool of ``device``
    slot_offset: int = 0
    window: int = -1  # index into plan.windows
    queue: int = 0  # copy queue on ``device``
    deps: tuple[int, ...] = ()

    def describe(self, request: UploadRequest | None = None) -> str:
        target = ""
        if self.buffer >= 0:
            name = request.buffers[self.buffer].name if request else str(self.buffer)
            target = f" buffer {name!r}+{self.buffer_offset}"
        where = f" file@{self.file_offset}" if self.file_offset >= 0 else ""
        slot = f" slot {self.slot}" if self.slot >= 0 else ""
        window = f" window {self.window}" if self.window >= 0 else ""
        return f"step {self.id} {self.op.value} {self.length} bytes{where}{slot}{window}{target} on device {self.device}"


@dataclass(frozen=True, slots=True)
class StagingPool:
    """Host staging for one device: ``slots`` buffers of ``slot_bytes`` each."""

    device: int
    slots: int
    slot_bytes: int

    @property
    def bytes(self) -> int:
        return self.slots * self.slot_bytes


@dataclass(frozen=True, slots=True)
class ImportWindow:
    """A range of the source file's host memory imported into one device.

    ``file_offset`` and ``length`` are aligned to the device's import alignment;
    ``in_place`` windows back buffers directly and live as long as they do.
    """

    id: int
    device: int
    file_offset: int
    length: int
    in_place: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """Concurrency the engine must respect."""

    readers: int = 1  # READ/WRITE/DIRECT steps in flight, over all devices (shared host)
    queues: int = 1  # copy queues per device
    copies_per_queue: int = 2  # copies in flight on one queue (queues run in order)
    imports: int = 1  # IMPORT/UNIMPORT/BIND in flight


@dataclass(frozen=True)
class Plan:
    policy: "Policy"  # the policy that produced these steps (after any fallback)
    requested: "Policy"  # the policy the user asked for
    request: UploadRequest
    steps: tuple[Step, ...]
    pools: tuple[StagingPool, ...] = ()
    windows: tuple[ImportWindow, ...] = ()
    limits: Limits = Limits()
    notes: tuple[str, ...] = ()  # why a fallback happened, and similar
    _cache: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __hash__(self) -> int:
        return hash((self.policy, self.request, self.steps, self.pools, self.windows, self.limits))

    @property
    def staging_bytes(self) -> int:
        return sum(p.bytes for p in self.pools)

    def pool(self, device: int) -> StagingPool | None:
        for pool in self.pools:
            if pool.device == device:
                return pool
        return None

    @property
    def device_bytes(self) -> dict[int, int]:
        """Device memory the request needs, per device (buffers only)."""
        need: dict[int, int] = {}
        for spec in self.request.buffers:
            need[spec.device] = need.get(spec.device, 0) + spec.size
        return need

    def count(self, *ops: Op) -> int:
        return sum(1 for s in self.steps if s.op in ops)

    def import_queues(self, device: int) -> frozenset[int]:
        """``device``'s copy queues that copy out of imported memory: no slot waits on
        those copies, so a backend may queue several on them at once."""
        queues = max(1, self.limits.queues)
        return frozenset(s.queue % queues for s in self.steps if s.op is Op.COPY_IMPORTED and s.device == device)

    def copy_depths(self, device: int) -> list[int]:
        """Copies a real device queues at once on each of ``device``'s queues: on one that
        copies out of imported memory the plan's ``copies_per_queue`` (queued before the
        next registration, they run on during it); on a ring's, one (its slot waits on it)."""
        imported, most = self.import_queues(device), max(1, self.limits.copies_per_queue)
        return [most if q in imported else 1 for q in range(max(1, self.limits.queues))]

    def threads_at_once(self, copy_depths: Callable[[int], Sequence[int]] | None = None) -> int:
        """Host threads a real run of this plan keeps working at once: the readers, every
        device's copy threads (one per copy queued at once, ``copy_depths``, by default
        :meth:`copy_depths`) and import lane, and the engine's own thread."""
        depths = copy_depths or self.copy_depths
        ops = {(s.op, s.device) for s in self.steps}
        devices = self.request.devices
        readers = max(1, self.limits.readers) if any(op in (Op.READ, Op.WRITE) for op, _ in ops) else 0
        copies = sum(sum(depths(d)) for d in devices)
        importers = sum(max(1, self.limits.imports) for d in devices if (Op.IMPORT, d) in ops)
        return readers + copies + importers + 1

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for step in self.steps:
            counts[step.op.value] = counts.get(step.op.value, 0) + 1
        return {
            "policy": self.policy.spec(),
            "requested": self.requested.spec(),
            "steps": len(self.steps),
            "by_op": counts,
            "staging_bytes": self.staging_bytes,
            "windows": len(self.windows),
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        def encode(obj):
            if isinstance(obj, Op):
                return obj.value
            raise TypeError(type(obj))

        body = {
            "policy": self.policy.model_dump(mode="json"),
            "requested": self.requested.model_dump(mode="json"),
            "request": {
                "source": asdict(self.request.source),
                "direction": self.request.direction.value,
                "buffers": [asdict(b) for b in self.request.buffers],
                "transfers": [asdict(t) for t in self.request.transfers],
            },
            "pools": [asdict(p) for p in self.pools],
            "windows": [asdict(w) for w in self.windows],
            "limits": asdict(self.limits),
            "notes": list(self.notes),
            "steps": [asdict(s) for s in self.steps],
        }
        return json.dumps(body, default=encode)
