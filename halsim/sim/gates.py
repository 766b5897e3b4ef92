"""First-come first-served admission: a drive's queue depth, a copy engine, the
GPU driver's lock.

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

    Registering, unregistering and pinning hold it (:func:`holding`), one at a time,
    first come first served. A copy is only held back while being queued
    (:meth:`queue_past`): it waits until the lock is free, then runs on whatever
    takes the lock after it (the DMA engine needs no lock).
    """

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._gate = Gate(env, 1)
        self._free: Event | None = None  # while held: fires when the holder lets go

    def _take(self, _event: Event | None = None) -> None:
        self._free = Event(self.env)

    def _acquire(self) -> Event | None:
        waited = self._gate.acquire()
        if waited is None:
            self._take()
        else:
            waited.callbacks.append(self._take)  # held from the moment the gate passes it on
        return waited

    def _release(self) -> None:
        free, self._free = self._free, None
        if free is not None:
            fire(free)  # copies waiting to be queued go first, at this instant
        self._gate.release()

    def queue_past(self):
        """A copy being queued: wait while the lock is held (by anyone, in turn)."""
        while self._free is not None:
            yield self._free


class _Holding:
    def __init__(self, lock: "DriverLock | None"):
        self.lock = lock

    def __enter__(self) -> Event | None:
        return self.lock._acquire() if self.lock is not None else None

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock._release()


def holding(lock: "DriverLock | None") -> _Holding:
    """``with holding(lock) as waited:`` — yield ``waited`` (when not None) before the body;
    the lock is let go when the body ends, normally or not. No lock: nothing to hold."""
    return _Holding(lock)
