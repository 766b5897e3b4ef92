"""The record of one run: spans per lane and memory counters over time.

Simulated and real devices write the same Trace, so the two can be laid side
by side (reports, plots, Perfetto).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import NamedTuple


class Span(NamedTuple):
    """One step (or one resource's share of it) on one lane. A NamedTuple: the
    simulator records tens of thousands, and a frozen dataclass costs 5x more."""

    lane: str  # e.g. "read/2", "copy/d0q1", "import/d0", "storage", "link/d0/h2d"
    op: str
    start: float  # seconds since the trace's origin
    end: float
    nbytes: int
    step: int = -1
    device: int = 0

    @property
    def seconds(self) -> float:
        return self.end - self.start


# Memory counter names. Device counters are per device: "device/0".
STAGING = "staging"
IMPORTED = "imported"


def device_counter(device: int) -> str:
    return f"device/{device}"


def alloc_lane(device: int) -> str:
    """The lane of a device's allocations: its buffers, its staging's pinning and freeing."""
    return f"alloc/d{device}"


@dataclass
class Trace:
    """Thread-safe: real devices record from worker threads."""

    origin: float = 0.0
    spans: list[Span] = field(default_factory=list)
    # counter name -> [(time, value)] with value the level after each change
    counters: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def span(self, lane: str, op: str, start: float, end: float, nbytes: int, step: int = -1, device: int = 0) -> None:
        self.spans.append(Span(lane, op, start - self.origin, end - self.origin, nbytes, step, device))

    def change(self, counter: str, when: float, delta: int) -> None:
        """Add ``delta`` to a memory counter at time ``when``."""
        with self._lock:
            series = self.counters.setdefault(counter, [])
            level = (series[-1][1] if series else 0) + delta
            series.append((when - self.origin, level))

    def level(self, counter: str) -> int:
        series = self.counters.get(counter)
        return series[-1][1] if series else 0

    def peak(self, counter: str) -> int:
        series = self.counters.get(counter)
        return max((v for _, v in series), default=0) if series else 0

    def peak_total(self, prefix: str) -> int:
        """Peak of the sum of every counter named ``prefix`` or ``prefix/...``."""
        events = []
        for name, series in self.counters.items():
            if name == prefix or name.startswith(prefix + "/"):
                previous = 0
                for t, v in series:
                    events.append((t, v - previous))
                    previous = v
        level = peak = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            level += delta
            peak = max(peak, level)
        return peak

    @property
    def lanes(self) -> list[str]:
        return sorted({s.lane for s in self.spans})

    @property
    def end(self) -> float:
        return max((s.end for s in self.spans), default=0.0)
