"""Max-min fair rates for flows sharing resources (weighted progressive filling).

Every flow crosses some resources, each with a capacity in bytes per second,
and uses ``weight`` bytes of a resource per byte it moves (a memcpy reads and
writes host memory: weight 2). A flow may also have a cap of its own (one
thread's copy rate). Max-min fairness: raise every flow's rate together until
a resource is full or a flow reaches its cap; freeze those flows; repeat with
the rest. The result is the unique allocation in which no flow can go faster
without slowing a flow that is no faster than it.

Pure functions, no simpy: :mod:`halsim.sim.flows` calls them when flows start
and end.
"""

from __future__ import annotations

import math
from typing import Sequence

# Relative slack when deciding that a resource is full or a cap reached.
_EPS = 1e-12


def max_min_rates(
    capacities: Sequence[float],
    uses: Sequence[Sequence[tuple[int, float]]],
    caps: Sequence[float],
) -> tuple[list[float], list[int]]:
    """Rates of each flow, and what bound each one.

    ``uses[f]`` lists ``(resource, weight)`` pairs of flow ``f``; ``caps[f]`` is
    its own limit (``math.inf`` for none). The second list holds, for each flow,
    the index of the resource that froze it, or ``-1`` when its own cap did.
    """
    n = len(uses)
    rates = [0.0] * n
    bound = [-1] * n
    free = [float(c) for c in capacities]  # capacity left by frozen flows
    active = list(range(n))
    while active:
        # Weight of the active flows on each resource they touch.
        weight: dict[int, float] = {}
        for f in active:
            for r, w in uses[f]:
                weight[r] = weight.get(r, 0.0) + w
        level = min(caps[f] for f in active)
        for r, w in weight.items():
            level = min(level, free[r] / w)
        if level == math.inf:
            raise ValueError("a flow uses no resource with finite capacity and has no cap")
        level = max(level, 0.0)
        slack = level * _EPS
        full = {r for r, w in weight.items() if free[r] / w <= level + slack}
        still, frozen = [], []
        for f in active:
            through = next((r for r, _ in uses[f] if r in full), -1)
            if through >= 0 or caps[f] <= level + slack:
                rates[f] = level
                bound[f] = through  # a full shared resource explains more than the flow's own cap
                frozen.append(f)
            else:
                still.append(f)
        for f in frozen:
            for r, w in uses[f]:
                free[r] -= w * level
        active = still
    return rates, bound
