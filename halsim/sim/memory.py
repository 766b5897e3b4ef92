"""Memory capacity in the simulated machine: allocations fail as on hardware.

Host memory holds pinned staging, and — on integrated GPUs — device buffers
too, since their "device memory" is a share of host DRAM. Going over either
limit raises :class:`~halsim.errors.OutOfMemoryError`, the error real devices
raise, before anything is taken.
"""

from __future__ import annotations

from halsim.errors import OutOfMemoryError
from halsim.units import format_size


class MemoryPool:
    def __init__(self, name: str, capacity: int, parent: "MemoryPool | None" = None):
        self.name = name
        self.capacity = capacity
        self.parent = parent  # a pool carved out of another (integrated GPU memory from host memory)
        self.used = 0

    @property
    def free(self) -> int:
        own = self.capacity - self.used
        return min(own, self.parent.free) if self.parent is not None else own

    def take(self, nbytes: int, what: str, device: str = "") -> None:
        """Reserve ``nbytes`` for ``what``, or raise OutOfMemoryError and take nothing."""
        if nbytes > self.free:
            short = self if self.capacity - self.used < nbytes else self.parent
            raise OutOfMemoryError(
                f"cannot allocate {format_size(nbytes)} for {what}: {short.name} has "
                f"{format_size(max(short.capacity - short.used, 0))} free of {format_size(short.capacity)}",
                device=device,
            )
        self.used += nbytes
        if self.parent is not None:
            self.parent.used += nbytes

    def give(self, nbytes: int) -> None:
        self.used -= nbytes
        if self.parent is not None:
            self.parent.used -= nbytes
