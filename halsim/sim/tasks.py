"""A step as a coroutine on simpy events, without a ``simpy.Process``.

A Process costs two extra events per step (its start and its end) — a
quarter of all events in a streaming upload. A Task runs its generator at
once, up to the first event it waits on, and resumes it from that event's
callbacks. Our steps never wait on failing events and never get interrupted,
which is all a Process would add.

:func:`fire` completes an event inline, for the network's completions and a
gate handing its place on.
"""

from __future__ import annotations

from typing import Generator

from simpy.events import Event


def fire(event: Event, value=None) -> None:
    """Trigger ``event`` and run its callbacks now, instead of through the event queue.

    For events that only resume tasks at the current instant: skipping the
    queue saves a heap push and pop per completion, the bulk of all events.
    """
    event._ok = True
    event._value = value
    callbacks, event.callbacks = event.callbacks, None
    for callback in callbacks:
        callback(event)


class Task:
    __slots__ = ("_gen",)

    def __init__(self, gen: Generator[Event, None, None]):
        self._gen = gen
        self._resume(None)

    def _resume(self, _event: Event | None) -> None:
        send = self._gen.send
        while True:
            try:
                event = send(None)
            except StopIteration:
                return
            if event.callbacks is not None:  # not processed yet: come back when it is
                event.callbacks.append(self._resume)
                return
