"""First-come first-served admission: a drive's queue depth, a copy engine.

Lighter than ``simpy.Resource``: ``acquire`` returns ``None`` when a place is
free at once (no event to wait on), else an event that fires when one is.
"""

from __future__ import annotations

from collections import deque

import simpy
from simpy.events import Event

from halsim.sim.tasks import fire


class Gate:
    def __init__(self, env: simpy.Environment, places: int):
        self.env = env
        self.places = places
        self._free = places
        self._waiting: deque[Event] = deque()

    def acquire(self) -> Event | None:
        if self._free:
            self._free -= 1
            return None
        event = Event(self.env)
        self._waiting.append(event)
        return event

    def release(self) -> None:
        if self._waiting:
            fire(self._waiting.popleft())  # the place passes straight to the next in line, now
        else:
            self._free += 1

    @property
    def busy(self) -> int:
        return self.places - self._free


class Ids:
    """Lowest free small integer: which reader thread runs a step (``read/<k>``)."""

    def __init__(self) -> None:
        self._free: list[int] = []
        self._next = 0

    def take(self) -> int:
        if self._free:
            self._free.sort()
            return self._free.pop(0)
        self._next += 1
        return self._next - 1

    def give(self, k: int) -> None:
        self._free.append(k)


class DriverLock:
    """The GPU driver's lock, as the CUDA backend meets it (``host.register_stalls_copies``).

    Registering, unregistering and pinning hold it, one at a time, first come first
    served. A copy is only held back while queueing: it waits until the lock is free,
    then runs whatever takes the lock after it (the DMA engine needs no lock).
    """

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._gate = Gate(env, 1)
        self._free: Event | None = None  # fires when the holder lets go

    def acquire(self) -> Event | None:
        waited = self._gate.acquire()
        if waited is None:
            self._free = Event(self.env)
        return waited

    def acquired(self) -> None:
        """Call once a waited-for :meth:`acquire` fired: the lock is now this caller's."""
        self._free = Event(self.env)

    def release(self) -> None:
        free, self._free = self._free, None
        if free is not None:
            fire(free)
        self._gate.release()

    def until_free(self) -> Event | None:
        """None when the lock is free now; else an event that fires when its holder lets go
        (a copy checks again: another holder may be next in line)."""
        return self._free
