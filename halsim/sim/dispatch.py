"""The engine's dispatcher: one host thread, a fixed cost per plan step.

A real engine is one Python thread that submits every step to a worker and
handles every completion (thread hand-offs, the GIL), so a device can run at
most ``1 / host.step_overhead`` steps per second however fast its hardware is.
The simulator models that thread as one serial server shared by every GPU of a
:class:`~halsim.sim.Simulator`: each step, before it starts, holds it for
``step_overhead`` seconds, and steps queue for it in the order they were
submitted. Its busy time is recorded on the ``engine`` lane.

The service time is constant and the queue first-come first-served, so a
step's turn is known when it is submitted: booking it costs no event, and the
step waits on one timeout. With ``step_overhead = 0`` there is no dispatcher
at all (:meth:`Dispatcher.of` gives ``None``): no events, no spans.
"""

from __future__ import annotations

import simpy

from halsim.platform import Platform

ENGINE_LANE = "engine"
DISPATCH_OP = "dispatch"


class Dispatcher:
    __slots__ = ("env", "overhead", "free_at")

    def __init__(self, env: simpy.Environment, overhead: float):
        self.env = env
        self.overhead = overhead
        self.free_at = 0.0  # when the thread finishes the last step booked so far

    @classmethod
    def of(cls, platform: Platform, env: simpy.Environment) -> "Dispatcher | None":
        overhead = platform.host.step_overhead
        return cls(env, overhead) if overhead > 0 else None

    def book(self) -> tuple[float, float, float]:
        """The next turn, from now or after the turns booked before: ``(start, end, end - now)``.

        ``end`` is exactly when a timeout of ``end - now`` fires (simpy adds the delay to now).
        """
        now = self.env._now
        start = self.free_at if self.free_at > now else now
        delay = start + self.overhead - now
        self.free_at = end = now + delay
        return start, end, delay
