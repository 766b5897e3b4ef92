"""The engine's dispatcher: one host thread, a cost per plan step.

A real engine is one Python thread that submits every step to a worker and
handles every completion (thread hand-offs, the GIL), so a device can run at
most ``1 / host.step_overhead`` steps per second however fast its hardware is.
The simulator models that thread as one serial server shared by every GPU of a
:class:`~halsim.sim.Simulator`: each step, before it starts, holds it for its
cost, and steps queue for it in the order they were submitted. Its busy time is
recorded on the ``engine`` lane. The cost is the platform's
:meth:`~halsim.platform.HostMemory.step_cost` for the plan's threads at once:
every further thread contends for the interpreter's lock.

A step's cost is known when it is submitted and the queue is first-come
first-served, so its turn is known then too: booking it costs no event, and the
step waits on one timeout. When steps cost nothing there is no dispatcher at
all (:meth:`Dispatcher.of` gives ``None``): no events, no spans.
"""

from __future__ import annotations

import simpy

from halsim.platform import Platform

ENGINE_LANE = "engine"
DISPATCH_OP = "dispatch"


class Dispatcher:
    __slots__ = ("env", "free_at")

    def __init__(self, env: simpy.Environment):
        self.env = env
        self.free_at = 0.0  # when the thread finishes the last step booked so far

    @classmethod
    def of(cls, platform: Platform, env: simpy.Environment) -> "Dispatcher | None":
        return cls(env) if platform.host.dispatches else None

    def book(self, cost: float) -> tuple[float, float, float]:
        """The next turn of ``cost`` seconds, from now or after the turns booked before:
        ``(start, end, end - now)``.

        ``end`` is exactly when a timeout of ``end - now`` fires (simpy adds the delay to now).
        """
        now = self.env._now
        start = self.free_at if self.free_at > now else now
        delay = start + cost - now
        self.free_at = end = now + delay
        return start, end, delay
