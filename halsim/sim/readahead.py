"""The kernel's readahead on a cold file, as one execution's reads see it.

After a buffered read of a cold file ends at byte ``e``, the kernel's asynchronous
readahead keeps the drive reading the next window (the block device's
``read_ahead_kb``) into the page cache while the reader is away: waiting for its
slot's copy, handing a step over. A window's first bytes come after the drive's
latency, as a read's do. The read that starts inside the window finds what arrived
meanwhile in the page cache, and the drive goes on with the rest for the read
itself. A one-slot streaming ring pauses after every request; without this the
simulator left the drive idle through each pause (on the lent H200 VM, 8 MiB of
readahead hid 4 ms pauses after 64 MiB requests: ``benchmarks/cold_pauses.py``).
Pauses shorter than the latency hide nothing, which is what one reader's serial
256 KiB requests show there: each pays the drive's latency.

Every byte crosses the drive once. A window nobody reads (an upload of part of a
file) costs drive time, as on a real machine, until the execution ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from halsim.sim.flows import Flow, FlowNetwork
from halsim.trace import Trace

READ_AHEAD_OP = "readahead"  # its spans, on the storage lane


@dataclass
class _Window:
    start: int
    end: int  # where it will end; once stopped, where what arrived ends
    flow: Flow
    recorded: bool = False  # its span is in the trace


class ReadAhead:
    def __init__(self, net: FlowNetwork, route: int, window: int, latency: float, file_length: int, trace: Trace,
                 index: int):
        self._net, self._route, self._window, self._length = net, route, window, file_length
        self._latency = latency
        self._trace, self._index = trace, index
        self._windows: dict[int, _Window] = {}  # by start; a few at most
        self._claimed: set[int] = set()  # offsets a read has started at: nothing to read ahead there

    def take(self, offset: int, nbytes: int) -> int:
        """A read of ``nbytes`` at ``offset`` starts: how many of its first bytes are in the page cache.
        The window it starts in stops (the drive goes on for the read); what arrived past the read stays."""
        self._claimed.add(offset)
        window = self._covering(offset)
        if window is None:
            return 0
        self._stop(window)
        del self._windows[window.start]
        end = offset + nbytes
        if end < window.end:
            self._windows[end] = _Window(end, window.end, window.flow, recorded=True)
        return max(min(window.end, end) - offset, 0)

    def after(self, end: int) -> None:
        """A read ended at ``end``: the drive reads on past it (past what is read ahead there already)."""
        window = self._covering(end)
        start = window.end if window is not None else end
        if not self._window or start >= self._length or start in self._claimed or self._covering(start):
            return
        flow = self._net.start(self._route, min(self._window, self._length - start), self._latency)
        self._windows[start] = _Window(start, start + int(flow.size), flow)

    def close(self) -> None:
        """The execution ends: windows still arriving stop (nothing of this run goes on into the next)."""
        for window in self._windows.values():
            self._stop(window)
        self._windows.clear()
        self._claimed.clear()

    def _covering(self, offset: int) -> _Window | None:
        return next((w for w in self._windows.values() if w.start <= offset < w.end), None)

    def _stop(self, window: _Window) -> None:
        flow = window.flow
        moved = int(self._net.stop(flow))  # nothing to stop once it is through
        window.end = min(window.end, window.start + moved)
        if not window.recorded and moved:  # flow.since: when it finished or was stopped
            self._trace.span("storage", READ_AHEAD_OP, flow.started, flow.since, moved, -1, self._index)
        window.recorded = True
