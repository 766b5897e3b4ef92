"""The Pareto front of time against peak staging memory, and its plot.

A configuration is on the front when no other configuration is at least as
fast *and* needs at most as much staging while being strictly better at one
of the two. Everything off the front is beaten outright by something on it,
so the front is the whole menu a user has to choose from: to go faster, pay
this much more staging.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import pandas as pd

MiB = 1 << 20


def front_indices(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(cost, seconds)`` points, cheapest first.

    Both coordinates are minimised. Of identical points only the first given
    is kept, so the front never lists the same trade-off twice.
    """
    # Stable sort by cost then time: walking it, a point is on the front exactly
    # when it is faster than everything cheaper (or as cheap) before it.
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_front(frame: "pd.DataFrame", cost: str = "peak_staging_bytes", time: str = "seconds",
                 by: Sequence[str] = ("platform", "workload")) -> "pd.DataFrame":
    """The rows of ``frame`` on the front of each ``by`` group, cheapest first."""
    keep: list = []
    groups = frame.groupby(list(by), sort=False) if by else [((), frame)]
    for _, group in groups:
        points = list(zip(group[cost].tolist(), group[time].tolist()))
        keep.extend(group.index[i] for i in front_indices(points))
    return frame.loc[keep]


def plot_pareto(frame: "pd.DataFrame", path: str | Path, reference: "pd.DataFrame | None" = None,
                reference_label: str = "IREE default", title: str | None = None) -> Path:
    """A PNG per sweep: every configuration, the front as a staircase, and ``reference`` starred.

    One panel per (platform, workload). Staging is on a symmetric-log axis so
    zero-staging policies (import, direct) sit at the left edge, not off it.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    path = Path(path)
    groups = list(frame.groupby(["platform", "workload"], sort=False))
    columns = min(len(groups), 3) or 1
    rows = -(-len(groups) // columns) or 1
    fig, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.6 * rows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, ((platform, workload), group) in zip(axes.flat, groups):
        ax.scatter(group["peak_staging_bytes"] / MiB, group["seconds"], s=12, alpha=0.45,
                   color="tab:gray", label="configurations")
        front = pareto_front(group)
        ax.step(front["peak_staging_bytes"] / MiB, front["seconds"], where="post", color="tab:blue", lw=1.2)
        ax.scatter(front["peak_staging_bytes"] / MiB, front["seconds"], s=28, color="tab:blue", label="Pareto front")
        if reference is not None:
            ref = reference[(reference["platform"] == platform) & (reference["workload"] == workload)]
            if len(ref):
                ax.scatter(ref["peak_staging_bytes"] / MiB, ref["seconds"], marker="*", s=220, color="tab:red",
                           edgecolor="black", zorder=5, label=reference_label)
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("peak staging (MiB)")
        ax.set_ylabel("upload time (s, simulated)")
        ax.set_title(f"{workload} on {platform}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["front_indices", "pareto_front", "plot_pareto"]
