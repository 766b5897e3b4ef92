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
from halsim.sim.tasks import fire

# A flow this close to done (in seconds at its rate) counts as done; this
# also guarantees progress when float rounding leaves a few bytes behind.
_DONE_WITHIN = 1e-10


class Flow:
    """Bytes on their way through the network; ``done`` fires when they are through."""

    __slots__ = ("cls", "size", "remaining", "rate", "done", "started", "binding", "since", "bound")

    def __init__(self, cls: int, size: float, done: Event, started: float):
        self.cls = cls
        self.size = size
        self.remaining = float(size)
        self.rate = 0.0
        self.done = done
        self.started = started
        self.binding = ""  # what limits the flow now (a resource name or its class's cap label)
        self.since = started
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
        self._class_contended: list[float] = []
        # Per-thread slowdown of contended classes: k of them run at cap / (1 + contention * (k - 1)),
        # each further one counted at its weight (a read whose writes stay in the CPU's cache, less).
        self.contention = 0.0
        self._solved: dict[tuple[int, ...], dict[int, tuple[float, str]]] = {}
        self.flows: list[Flow] = []  # moving bytes
        self.waiting: list[Flow] = []  # started with a delay that has not passed yet
        self._last = env.now  # flows' progress is accounted up to here
        self.dirty = False  # flows started or ended since the last solve
        self._timer: Event | None = None
        self._timer_at = math.inf
        self._class_bytes: list[float] = []  # bytes moved by finished flows of each class

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
        return self._resource_index[name]

    def flow_class(self, uses: Sequence[tuple[str, float]], cap: float = math.inf, label: str = "",
                   contended: float = 0.0) -> int:
        """A kind of flow: ``(resource name, weight)`` pairs, and its own rate cap named ``label``.

        ``contended``: above 0 for a CPU thread's copy, whose cap shrinks with the number of
        such flows running at once (:attr:`contention`); the weight (up to 1) it counts at
        in the others' slowdown.
        """
        pairs = tuple((self._resource_index[name], float(w)) for name, w in uses if w > 0)
        if not pairs and cap == math.inf:
            raise ValueError("a flow class needs a resource or a cap")
        key = (pairs, float(cap), label, float(contended))
        if key not in self._class_index:
            self._class_index[key] = len(self._class_uses)
            self._class_uses.append(pairs)
            self._class_cap.append(float(cap))
            self._class_label.append(label or "own limit")
            self._class_contended.append(float(contended))
            self._class_bytes.append(0.0)
        return self._class_index[key]

    @property
    def bytes_through(self) -> list[float]:
        """Weighted bytes each resource has carried (a memcpy's bytes count twice on host memory)."""
        through = [0.0] * len(self.names)
        for cls, moved in enumerate(self._class_bytes):
            for r, w in self._class_uses[cls]:
                through[r] += w * moved
        return through

    def solo_rate(self, cls: int) -> float:
        """The rate of a flow of class ``cls`` running alone."""
        return self._solve((cls,))[cls][0]

    # ---------------------------------------------------------------- running
    def start(self, cls: int, nbytes: float, delay: float = 0.0) -> Flow:
        """Move ``nbytes`` after ``delay`` seconds (a fixed per-transfer cost that uses no bandwidth).

        The returned flow's ``done`` event fires when the bytes are through;
        ``flow.started`` is when they began to move.
        """
        env = self.env
        now = env._now
        done = Event(env)
        flow = Flow(cls, nbytes, done, now + delay)
        if delay > 0:
            # Waiting flows join at their start time; the timer wakes the network then.
            self.waiting.append(flow)
            if flow.started < self._timer_at:
                self._arm(flow.started)
            return flow
        if nbytes <= 0:
            done.succeed(flow)
            return flow
        self._advance()
        self.flows.append(flow)
        self.dirty = True
        return flow

    def stop(self, flow: Flow) -> float:
        """End ``flow`` now, wherever it has got to (its ``done`` fires); the bytes it moved."""
        if flow.done.callbacks is not None:  # not through yet
            if flow in self.waiting:
                self.waiting.remove(flow)
            else:
                self._advance()
                self.flows.remove(flow)
                flow._rebind("", self.env._now)
                self._class_bytes[flow.cls] += flow.size - flow.remaining
                self.dirty = True
            fire(flow.done, flow)
        return flow.size - max(flow.remaining, 0.0)

    def _advance(self) -> None:
        now = self.env._now
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
            caps = [self._class_cap[c] for c in key]
            weights = [self._class_contended[c] for c in key]
            contended = [i for i, w in enumerate(weights) if w]
            if self.contention and len(contended) > 1:
                crowd = sum(weights)
                for i in contended:  # slowed by the others, each at its weight
                    caps[i] /= 1.0 + self.contention * (crowd - weights[i])
            rates, bound = max_min_rates(self.capacity, [self._class_uses[c] for c in key], caps)
            solved = {}
            for c, rate, b in zip(key, rates, bound):
                if c not in solved:
                    solved[c] = (rate, self.names[b] if b >= 0 else self._class_label[c])
            self._solved[key] = solved
        return solved

    def _arm(self, when: float) -> None:
        """Wake the network at ``when`` (replacing the current timer, which goes stale)."""
        env = self.env
        timer = Event(env)
        timer._ok = True
        timer._value = None
        timer.callbacks.append(self._tick)
        env.schedule(timer, delay=max(when - env._now, 0.0))
        self._timer, self._timer_at = timer, when

    def settle(self) -> None:
        """Solve the rates of the running flows and set the timer for the next event."""
        self.dirty = False
        now = self.env._now
        flows = self.flows
        dt = now - self._last
        if dt > 0:
            for f in flows:
                f.remaining -= f.rate * dt
            self._last = now
        when = math.inf
        if flows:
            key = [f.cls for f in flows]
            key.sort()
            key = tuple(key)
            solved = self._solved.get(key) or self._solve(key)
            soonest = math.inf
            for f in flows:
                rate, label = solved[f.cls]
                f.rate = rate
                if label is not f.binding:  # labels are interned strings: identity is enough
                    f._rebind(label, now)
                left = f.remaining / rate
                if left < soonest:
                    soonest = left
            when = now + (soonest if soonest > 0 else 0.0)
        for f in self.waiting:
            if f.started < when:
                when = f.started
        if when != self._timer_at:
            if when == math.inf:
                self._timer = None
                self._timer_at = math.inf
            else:
                self._arm(when)

    def _tick(self, event: Event) -> None:
        if event is not self._timer:
            return  # a later solve moved the next event
        self._timer, self._timer_at = None, math.inf
        self._advance()
        now = self.env._now
        running, finished = [], []
        carried = self._class_bytes
        for f in self.flows:
            if f.remaining <= f.rate * _DONE_WITHIN:
                f.remaining = 0.0
                f._rebind("", now)
                carried[f.cls] += f.size
                finished.append(f)
            else:
                running.append(f)
        if self.waiting:
            still = []
            for f in self.waiting:
                if f.started > now:
                    still.append(f)
                elif f.remaining > 0:
                    f.since = now
                    running.append(f)
                else:
                    finished.append(f)
            self.waiting = still
        self.flows = running
        self.dirty = True
        # Resume the waiters last: they may start new flows right away.
        for f in finished:
            fire(f.done, f)

    def label(self, cls: int) -> str:
        return self._class_label[cls]
