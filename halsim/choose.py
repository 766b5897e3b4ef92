"""Choosing a concrete policy for ``auto``.

Without a platform, the choice follows the device's caps: use host memory in
place where the device shares it, else stream through a ring that fits the
staging budget. With a platform, :func:`choose` simulates a grid of candidates
on it for the request at hand and takes the predicted-fastest one whose peak
staging fits the budget; the sweep is cached per (request, platform, budget).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from halsim.caps import DeviceCaps
from halsim.errors import PolicyError
from halsim.policies import (
    IREE_STREAMING, AutoPolicy, DirectPolicy, ImportPolicy, Policy, StagedPolicy, StreamingPolicy, parse_policy,
)
from halsim.request import UploadRequest
from halsim.units import format_size, parse_size

if TYPE_CHECKING:
    from halsim.platform import Platform

MiB = 1 << 20
DEFAULT_BUDGET = AutoPolicy.model_fields["budget"].default
LADDER_START = 8 * MiB  # the smallest budget whose default ring still has 8 slots of 1 MiB


def default_readers(host_threads: int | None) -> int:
    """Reader threads for a host of ``host_threads`` CPUs: three in four of them, the
    rest left to the copy queues and the engine (on the lent 16-vCPU H100 VM, 12
    readers ran 9-17% faster than 8 and 16 no faster than 12); 8 when unknown."""
    return 8 if host_threads is None else max(2, 3 * host_threads // 4)


def streaming_within(budget: int, total_bytes: int, host_threads: int | None = None) -> StreamingPolicy:
    """The default overlapped ring, shrunk to fit ``budget`` staging bytes.

    16 slots of 16 MiB, readers by the host's CPUs, 2 copy queues (capped by the
    device's): on the H100 16 x 16 MiB ran 17–23% faster than 8 slots and 4
    readers in the same 256 MiB (docs/benchmarks/cuda.md)."""
    slots, chunk = 16, 16 * MiB
    while slots * chunk > budget and chunk > MiB:
        chunk //= 2
    while slots * chunk > budget and slots > 2:
        slots //= 2
    slots = max(1, min(slots, budget))  # a budget of fewer bytes than slots: fewer slots, never over it
    chunk = max(1, min(chunk, budget // slots))
    return StreamingPolicy(chunk=chunk, slots=slots, readers=min(default_readers(host_threads), slots), queues=2)


def choose_by_caps(request: UploadRequest, caps: dict[int, DeviceCaps], budget: int) -> Policy:
    # The budget is the whole run's: every device stages through a ring of its own.
    share = budget // max(1, len(caps))
    if share < 1:
        raise PolicyError(f"auto: a staging budget of {budget} byte(s) cannot give each of {len(caps)} devices a ring")
    all_caps = list(caps.values())
    known = [c.host_threads for c in all_caps if c.host_threads]
    fallback = streaming_within(share, request.total_bytes, min(known) if known else None)
    in_host_memory = request.source.host_alignment > 0
    if in_host_memory and all(c.import_in_place for c in all_caps):
        return ImportPolicy(fallback=fallback)
    return fallback


# ---------------------------------------------------------------- by simulation


def candidates(request: UploadRequest, budget: int, host_threads: int | None = None) -> list[Policy]:
    """What auto simulates: rings that fit ``budget``, import, direct, and staged if it fits.

    The set only grows with the budget (for budgets of 8 MiB and more), so a
    bigger budget never chooses a slower policy: besides a fixed grid of rings,
    it holds the default ring shrunk to each power-of-two budget from 8 MiB up
    to ``budget``. Rings with more readers than slots are left out: a read
    needs a free slot, so they run exactly as readers == slots. The grid starts
    at 4 MiB chunks because smaller ones cost a simulation many steps; sweep
    them with ``halsim sweep`` when they matter.
    """
    fits = streaming_within(budget, request.total_bytes, host_threads)
    rings = [StreamingPolicy(chunk=chunk * MiB, slots=slots, readers=readers, queues=1)
             for chunk in (4, 16, 64) for slots in (1, 2, 4, 8) for readers in (1, 2, 4)
             if readers <= slots and chunk * MiB * slots <= budget]
    rung, ladder = LADDER_START, []
    while rung <= budget:
        ladder.append(streaming_within(rung, request.total_bytes, host_threads))
        rung *= 2
    out = [*rings, *(ladder or [fits]), ImportPolicy(fallback=fits), DirectPolicy(fallback=fits)]
    if request.total_bytes <= budget:
        out.append(StagedPolicy())
    return list(dict.fromkeys(out))  # drop repeats, keep order


def request_digest(request: UploadRequest) -> str:
    """What a simulation of ``request`` depends on — its layout, not its file's name."""
    source = request.source
    body = repr((source.length, source.host_alignment, source.page_cached, request.direction.value,
                 tuple((b.size, b.device) for b in request.buffers), request.transfers))
    return hashlib.sha256(body.encode()).hexdigest()


def _platform_digest(platform: "Platform") -> str:
    # By content: a recalibrated platform under the same name is a different platform.
    return hashlib.sha256(platform.model_dump_json().encode()).hexdigest()


@dataclass(frozen=True)
class Choice:
    """What auto chose, and the prediction it chose by."""

    policy: Policy
    platform: str
    budget: int
    seconds: float  # predicted
    gb_per_s: float
    peak_staging_bytes: int
    bound: str  # what bounded the predicted run, e.g. "host memory 94%"
    considered: int  # candidates simulated
    eligible: int  # of them within the budget and possible on the device
    iree_seconds: float | None = None  # IREE's default on the same platform, when it was a candidate

    def why(self) -> str:
        text = (f"predicted {self.seconds:.3f} s ({self.gb_per_s:.1f} GB/s) with "
                f"{format_size(self.peak_staging_bytes)} peak staging on {self.platform}, the fastest of "
                f"{self.eligible} candidates within {format_size(self.budget)} ({self.considered} simulated)")
        if self.bound:
            text += f", bounded by {self.bound}"
        if self.iree_seconds is not None:
            text += f"; IREE's default would take {self.iree_seconds:.3f} s"
        return text


_CACHE: "OrderedDict[tuple, list[tuple[Policy, dict]]]" = OrderedDict()
_CACHE_SIZE = 64
_LOCK = threading.Lock()


def _simulated(request: UploadRequest, platform: "Platform", budget: int) -> list[tuple[Policy, dict]]:
    """(candidate, measured row) for every candidate; cached per (request, platform, budget)."""
    from halsim.sweep import Target, simulate_row

    key = (request_digest(request), _platform_digest(platform), budget)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    target = Target(platform.name, request.source.name, platform, request, gpus=max(request.devices) + 1)
    rows = [(policy, simulate_row(target, policy)) for policy in candidates(request, budget, platform.host.cpus)]
    with _LOCK:
        _CACHE[key] = rows
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return rows


def _possible(policy: Policy, request: UploadRequest, caps: Sequence[DeviceCaps]) -> bool:
    """Whether ``policy`` runs as itself on ``caps`` rather than falling back."""
    if policy.kind not in ("import", "direct"):
        return True
    from halsim.planning import make_plan

    return make_plan(policy, request, list(caps)).policy == policy


def choose_by_simulation(request: UploadRequest, platform: "str | os.PathLike | Platform",
                         budget: int | str = DEFAULT_BUDGET, *,
                         caps: Sequence[DeviceCaps] | None = None) -> Choice:
    """The predicted-fastest candidate on ``platform`` within ``budget`` staging bytes.

    ``caps`` are the devices the policy will run on (default: the platform's
    GPUs); candidates they cannot run as such (import, direct) are passed over,
    so the prediction is of the policy that will really run. Ties go to less
    staging, then to candidate order.
    """
    from halsim.platform import load_platform

    platform = load_platform(platform)
    budget = parse_size(budget)
    if budget < 1:
        raise PolicyError("auto: the staging budget must be at least 1 byte")
    caps = list(caps) if caps is not None else [platform.caps(i) for i in range(max(request.devices) + 1)]
    rows = _simulated(request, platform, budget)
    eligible = [(policy, row) for policy, row in rows
                if not row["error"] and row["peak_staging_bytes"] <= budget and _possible(policy, request, caps)]
    if not eligible:
        problems = sorted({row["error"] for _, row in rows if row["error"]})
        detail = f" ({problems[0]})" if problems else ""
        raise PolicyError(f"auto: no candidate fits {format_size(budget)} of staging on {platform.name}{detail}")
    order = {policy: i for i, (policy, _) in enumerate(rows)}
    policy, row = min(eligible, key=lambda pr: (pr[1]["seconds"], pr[1]["peak_staging_bytes"], order[pr[0]]))
    iree = next((r["seconds"] for p, r in rows if p == IREE_STREAMING and not r["error"]), None)
    bound = f"{row['bound']} {row['bound_share']:.0%}" if row["bound"] else ""
    return Choice(policy, platform.name, budget, row["seconds"], row["gb_per_s"], row["peak_staging_bytes"],
                  bound, len(rows), len(eligible), iree)


def choose(request: UploadRequest, platform: "str | os.PathLike | Platform",
           budget: int | str = DEFAULT_BUDGET, objective: str = "time") -> Policy:
    """The policy ``auto`` would run for ``request`` on ``platform``: the
    predicted-fastest candidate whose peak staging fits ``budget``."""
    if objective != "time":
        raise PolicyError(f"auto: objective must be 'time', not {objective!r}")
    return choose_by_simulation(request, platform, budget).policy


def auto_on_platform(policy: "str | Policy", platform: str) -> AutoPolicy:
    """``policy`` (which must be auto) choosing by simulation on ``platform``."""
    policy = parse_policy(policy)
    if not isinstance(policy, AutoPolicy):
        raise PolicyError(f"--platform chooses a policy for --policy auto; {policy.spec()} needs no choosing")
    return policy.model_copy(update={"platform": str(platform)})


def choose_for_file(path: "str | os.PathLike", policy: AutoPolicy, caps: Sequence[DeviceCaps],
                    shard: str = "whole") -> Choice:
    """The choice ``halsim.upload(path, ...)`` will make under ``policy``, before it runs.

    It builds the request exactly as the upload will (same file kind, so the
    same host alignment), so the upload's own planning finds it cached.
    """
    from halsim.files import open_file
    from halsim.formats import read_index
    from halsim.request import SourceInfo, request_from_tensors

    if policy.platform is None:
        raise PolicyError("auto chooses by simulation only when given a platform")
    index = read_index(path)
    with open_file(path, "r") as file:
        request = request_from_tensors(SourceInfo.of(file), index.tensors, devices=len(caps), shard=shard)
    return choose_by_simulation(request, policy.platform, policy.budget, caps=caps)
