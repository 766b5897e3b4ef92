"""Choosing a concrete policy for ``auto``.

Without a platform, the choice follows the device's caps: use host memory in
place where the device shares it, else stream through a ring that fits the
staging budget. (Choosing by simulation builds on this.)
"""

from __future__ import annotations

from halsim.caps import DeviceCaps
from halsim.errors import PolicyError
from halsim.policies import ImportPolicy, Policy, StreamingPolicy
from halsim.request import UploadRequest

MiB = 1 << 20


def streaming_within(budget: int, total_bytes: int) -> StreamingPolicy:
    """The default overlapped ring, shrunk to fit ``budget`` staging bytes."""
    slots, chunk = 8, 16 * MiB
    while slots * chunk > budget and chunk > MiB:
        chunk //= 2
    while slots * chunk > budget and slots > 2:
        slots //= 2
    slots = max(1, min(slots, budget))  # a budget of fewer bytes than slots: fewer slots, never over it
    chunk = max(1, min(chunk, budget // slots))
    return StreamingPolicy(chunk=chunk, slots=slots, readers=min(4, slots), queues=1)


def choose_by_caps(request: UploadRequest, caps: dict[int, DeviceCaps], budget: int) -> Policy:
    # The budget is the whole run's: every device stages through a ring of its own.
    share = budget // max(1, len(caps))
    if share < 1:
        raise PolicyError(f"auto: a staging budget of {budget} byte(s) cannot give each of {len(caps)} devices a ring")
    fallback = streaming_within(share, request.total_bytes)
    all_caps = list(caps.values())
    in_host_memory = request.source.host_alignment > 0
    if in_host_memory and all(c.import_in_place for c in all_caps):
        return ImportPolicy(fallback=fallback)
    return fallback
