"""PNG pictures of a run: the timeline of every lane above, memory over time below.

The IREE change (#14665) was shown as memory-over-time graphs — a 1 GiB model
with 1 GiB of staging before, ~64 MiB after; :func:`plot_memory` draws those
side by side for several runs. Uses matplotlib's Agg backend: no display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from halsim.trace import Trace

_OP_COLOURS = {
    "read": "#4C72B0", "write": "#4C72B0", "copy": "#DD8452", "copy_back": "#DD8452",
    "copy_imported": "#C44E52", "import": "#55A868", "unimport": "#8C8C8C", "bind": "#55A868",
    "direct": "#8172B3", "pin": "#937860",
}
_COUNTER_COLOURS = {"staging": "#DD8452", "imported": "#55A868"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _lane_order(lane: str) -> tuple:
    group = ["alloc", "storage", "read", "write", "memcpy", "direct", "import", "copy", "link", "switch"]
    head, _, rest = lane.partition("/")
    return (group.index(head) if head in group else len(group), head, rest)


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 1:
        return 1.0, "s"
    if seconds >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def _size_unit(nbytes: float) -> tuple[float, str]:
    for scale, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if nbytes >= scale:
            return float(scale), unit
    return 1.0, "B"


def _memory_series(trace: Trace) -> dict[str, tuple[list[float], list[int]]]:
    series = {}
    end = trace.end
    for name in sorted(trace.counters):
        points = trace.counters[name]
        if not points or max(v for _, v in points) <= 0:
            continue
        xs, ys = [0.0], [0]
        for t, v in points:
            xs.append(t)
            ys.append(v)
        xs.append(max(end, xs[-1]))
        ys.append(ys[-1])
        series[name] = (xs, ys)
    return series


def _draw_memory(ax, trace: Trace, tscale: float, tunit: str, peak: float | None = None) -> None:
    series = _memory_series(trace)
    top = peak or max((max(ys) for _, ys in series.values()), default=1)
    mscale, munit = _size_unit(top)
    for name, (xs, ys) in series.items():
        device = name.startswith("device")
        # Device memory dashed and on top: it often equals staging (staged) and would hide behind it.
        ax.step([x * tscale for x in xs], [y / mscale for y in ys], where="post", label=name,
                color=_COUNTER_COLOURS.get(name), linestyle="--" if device else "-",
                linewidth=1.2 if device else 2.0, zorder=3 if device else 2)
    ax.set_ylabel(f"memory ({munit})")
    ax.set_xlabel(f"time ({tunit})")
    ax.set_ylim(0, top / mscale * 1.1 if top else 1)
    if series:
        ax.legend(loc="center right", fontsize=7, frameon=False)
    ax.grid(alpha=0.3)


def plot_trace(trace: Trace, path: "str | Path", title: str | None = None, *, max_lanes: int = 24) -> Path:
    """Timeline above (one row per lane, one bar per span), memory counters below."""
    plt = _pyplot()
    path = Path(path)
    lanes = sorted({s.lane for s in trace.spans}, key=_lane_order)[:max_lanes]
    row = {lane: i for i, lane in enumerate(lanes)}
    end = trace.end  # computed over all spans: once
    tscale, tunit = _time_unit(end or 1.0)
    sliver = end * 1e-3
    height = 1.2 + 0.22 * max(len(lanes), 3)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, height + 2.0), sharex=True,
                                      gridspec_kw={"height_ratios": [height, 2.0]})
    by_op: dict[tuple[int, str], list[tuple[float, float]]] = {}
    for s in trace.spans:
        if s.lane in row:
            # A zero-length span (bind) still gets a sliver so it shows.
            width = max(s.seconds, sliver) * tscale
            by_op.setdefault((row[s.lane], s.op), []).append((s.start * tscale, width))
    for (y, op), bars in by_op.items():
        top.broken_barh(bars, (y - 0.4, 0.8), facecolors=_OP_COLOURS.get(op, "#999999"), linewidth=0)
    top.set_yticks(range(len(lanes)), lanes, fontsize=7)
    top.set_ylim(len(lanes) - 0.5, -0.5)
    top.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=_OP_COLOURS.get(op, "#999999"))
               for op in sorted({op for _, op in by_op})]
    if handles:
        top.legend(handles, sorted({op for _, op in by_op}), loc="lower right", bbox_to_anchor=(1.0, 1.0),
                   fontsize=7, frameon=False, ncol=min(len(handles), 5))
    if title:
        top.set_title(title, fontsize=9, loc="left")
    _draw_memory(bottom, trace, tscale, tunit)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_memory(traces: Mapping[str, Trace], path: "str | Path", title: str | None = None) -> Path:
    """Memory over time of several runs side by side, on one memory scale."""
    plt = _pyplot()
    path = Path(path)
    n = max(len(traces), 1)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 2.8), squeeze=False)
    peak = max((v for t in traces.values() for pts in t.counters.values() for _, v in pts), default=1)
    for ax, (label, trace) in zip(axes[0], traces.items()):
        tscale, tunit = _time_unit(trace.end or 1.0)
        _draw_memory(ax, trace, tscale, tunit, peak=peak)
        ax.set_title(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
