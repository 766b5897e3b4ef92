"""The flow-level bandwidth model: flows share resources fairly, in simpy time.

A *flow* moves a number of bytes through some resources (storage, host
memory, a link direction, a switch uplink). While flows run, each gets its
max-min fair rate (:mod:`halsim.sim.fairshare`); the rates are recomputed
whenever a flow starts or ends, and between those moments every rate is
constant, so a flow's progress is exact, with no time steps.

Speed matters (a 100 GiB upload is ~50k flows), so the network:

* gives flows a *class* (its resources, weights and cap). Rates depend only on
  the multiset of classes running, so each distinct mix is solved once and
  cached; a streaming pipeline cycles through a handful of mixes.
* batches the changes of one instant: a start or an end only marks the
  network dirty, and whoever steps the environment calls :meth:`settle`
  before simulated time moves on (:meth:`step` and :meth:`run` do), so flows
  started by whatever reacts to a completion join the same solve.
* keeps one timer, for the earliest completion; a timer made stale by a
  later solve is ignored when it fires.
"""

from __future__ import annotations

import math
from typing import Sequence

import simpy
from simpy.events import Event

from halsim.sim.fairshare import max_min_rates

# A flow this close to done (in seconds at its rate) counts as done; this
# also guarantees progress when float rounding leaves a few bytes behind.
_DONE_WITHIN = 1e-10


class Flow:
    """Bytes on their way through the network; ``done`` fires when they are through."""

    __slots__ = ("cls", "size", "remaining", "rate", "done", "started", "binding", "since", "bound")

    def __init__(self, cls: int, size: float, done: Event, now: float):
        self.cls = cls
        self.size = size
        self.remaining = float(size)
        self.rate = 0.0
        self.done = done
        self.started = now
        self.binding = ""  # what limits the flow now (a resource name or its class's cap label)
        self.since = now
        self.bound: dict[str, float] = {}  # seconds spent limited by each, filled as it runs

    def _rebind(self, label: str, now: float) -> None:
        if self.binding:
            self.bound[self.binding] = self.bound.get(self.binding, 0.0) + now - self.since
        self.binding = label
        self.since = now


class FlowNetwork:
    def __init__(self, env: simpy.Environment):
        self.env = env
        self.names: list[str] = []
        self.capacity: list[float] = []
        self._resource_index: dict[str, int] = {}
        self._class_index: dict[tuple, int] = {}
        self._class_uses: list[tuple[tuple[int, float], ...]] = []
        self._class_cap: list[float] = []
        self._class_label: list[str] = []
        self._solved: dict[tuple[int, ...], dict[int, tuple[float, str]]] = {}
        self.flows: list[Flow] = []
        self._last = env.now  # flows' progress is accounted up to here
        self.dirty = False  # flows started or ended since the last solve
        self._timer: Event | None = None
        self._timer_at = math.inf
        self.bytes_through: list[float] = []  # weighted bytes each resource carried

    # ---------------------------------------------------------------- building
    def resource(self, name: str, capacity: float) -> int:
        """Add a shared resource of ``capacity`` bytes per second (idempotent by name)."""
        if name in self._resource_index:
            return self._resource_index[name]
        if not capacity > 0:
            raise ValueError(f"resource {name!r} needs a positive capacity, not {capacity}")
        self._resource_index[name] = len(self.names)
        self.names.append(name)
        self.capacity.append(float(capacity))
        self.bytes_through.append(0.0)
        return self._resource_index[name]

    def flow_class(self, uses: Sequence[tuple[str, float]], cap: float = math.inf, label: str = "") -> int:
        """A kind of flow: ``(resource name, weight)`` pairs, and its own rate cap named ``label``."""
        pairs = tuple((self._resource_index[name], float(w)) for name, w in uses if w > 0)
        if not pairs and cap == math.inf:
            raise ValueError("a flow class needs a resource or a cap")
        key = (pairs, float(cap), label)
        if key not in self._class_index:
            self._class_index[key] = len(self._class_uses)
            self._class_uses.append(pairs)
            self._class_cap.append(float(cap))
            self._class_label.append(label or "own limit")
        return self._class_index[key]

    def solo_rate(self, cls: int) -> float:
        """The rate of a flow of class ``cls`` running alone."""
        return self._solve((cls,))[cls][0]

    # ---------------------------------------------------------------- running
    def start(self, cls: int, nbytes: float) -> Flow:
        """Start moving ``nbytes``; the returned flow's ``done`` event fires when they are through."""
        env = self.env
        done = Event(env)
        flow = Flow(cls, nbytes, done, env.now)
        if nbytes <= 0:
            done.succeed()
            return flow
        self._advance()
        self.flows.append(flow)
        self.dirty = True
        return flow

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last
        if dt > 0:
            for f in self.flows:
                f.remaining -= f.rate * dt
            self._last = now

    def step(self) -> None:
        """One simpy step, solving the rates first if time is about to move."""
        env = self.env
        queue = env._queue
        if self.dirty and (not queue or queue[0][0] > env._now):
            self.settle()
        env.step()

    def run(self, until: float | None = None) -> None:
        """Run the environment, keeping rates solved, until nothing is left or time ``until``."""
        env = self.env
        queue = env._queue
        stop = None
        if until is not None:
            stop = Event(env)
            stop._ok, stop._value = True, None
            env.schedule(stop, delay=max(until - env.now, 0.0))
        while stop is None or stop.callbacks is not None:
            if self.dirty and (not queue or queue[0][0] > env._now):
                self.settle()
            if not queue:
                break
            env.step()

    def _solve(self, key: tuple[int, ...]) -> dict[int, tuple[float, str]]:
        solved = self._solved.get(key)
        if solved is None:
            rates, bound = max_min_rates(
                self.capacity, [self._class_uses[c] for c in key], [self._class_cap[c] for c in key]
            )
            solved = {}
            for c, rate, b in zip(key, rates, bound):
                if c not in solved:
                    solved[c] = (rate, self.names[b] if b >= 0 else self._class_label[c])
            self._solved[key] = solved
        return solved

    def settle(self) -> None:
        """Solve the rates of the running flows and set the timer for the next completion."""
        self.dirty = False
        self._advance()
        flows = self.flows
        if not flows:
            self._timer, self._timer_at = None, math.inf
            return
        solved = self._solve(tuple(sorted(f.cls for f in flows)))
        now = self.env.now
        soonest = math.inf
        for f in flows:
            rate, label = solved[f.cls]
            f.rate = rate
            if label != f.binding:
                f._rebind(label, now)
            left = f.remaining / rate
            if left < soonest:
                soonest = left
        when = now + max(soonest, 0.0)
        if when != self._timer_at or self._timer is None:
            timer = Event(self.env)
            timer._ok = True
            timer._value = None
            timer.callbacks.append(self._tick)
            self.env.schedule(timer, delay=when - now)
            self._timer, self._timer_at = timer, when

    def _tick(self, event: Event) -> None:
        if event is not self._timer:
            return  # a later solve moved the next completion
        self._timer, self._timer_at = None, math.inf
        self._advance()
        now = self.env.now
        running = []
        uses = self._class_uses
        through = self.bytes_through
        for f in self.flows:
            if f.remaining <= f.rate * _DONE_WITHIN:
                f.remaining = 0.0
                f._rebind("", now)
                for r, w in uses[f.cls]:
                    through[r] += w * f.size
                f.done.succeed(f)
            else:
                running.append(f)
        self.flows = running
        self.dirty = True

    def label(self, cls: int) -> str:
        return self._class_label[cls]
