"""Turning a policy and a request into a Plan. Pure: no I/O, no device."""

from __future__ import annotations

import gc
from collections import defaultdict
from dataclasses import replace
from typing import Sequence

from halsim.caps import DeviceCaps
from halsim.errors import PolicyError
from halsim.plan import COPY_OPS, ImportWindow, Limits, Op, Plan, StagingPool, Step
from halsim.request import Direction, Transfer, UploadRequest, align_down, align_up, segments


def make_plan(policy, request: UploadRequest, caps: DeviceCaps | Sequence[DeviceCaps]) -> Plan:
    caps_by_device = _caps_by_device(request, caps)
    builder = {
        "staged": _plan_staged,
        "streaming": _plan_streaming,
        "import": _plan_import,
        "direct": _plan_direct,
        "hybrid": _plan_hybrid,
        "auto": _plan_auto,
    }[policy.kind]
    # Plans are tens of thousands of small immutable objects with no cycles:
    # the cyclic GC would only rescan them (it was 40% of planning time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        plan = builder(policy, request, caps_by_device)
    finally:
        if collecting:
            gc.enable()
    if plan.requested is not policy and plan.requested != policy:
        plan = Plan(plan.policy, policy, plan.request, plan.steps, plan.pools, plan.windows, plan.limits, plan.notes)
    return plan


def _caps_by_device(request: UploadRequest, caps) -> dict[int, DeviceCaps]:
    if isinstance(caps, DeviceCaps):
        return {d: caps for d in request.devices}
    caps = list(caps)
    missing = [d for d in request.devices if d >= len(caps)]
    if missing:
        raise PolicyError(f"{request.source.name}: request targets device {missing[0]} but caps were given for {len(caps)}")
    return {d: caps[d] for d in request.devices}


def _caps_list(caps: dict[int, DeviceCaps]) -> list[DeviceCaps]:
    any_caps = next(iter(caps.values()))
    return [caps.get(d, any_caps) for d in range(max(caps) + 1)]


def _by_device(request: UploadRequest) -> dict[int, list[Transfer]]:
    groups: dict[int, list[Transfer]] = defaultdict(list)
    for t in request.transfers:
        groups[request.buffers[t.buffer].device].append(t)
    return dict(sorted(groups.items()))


class _Steps:
    """Collects steps, numbering them in the order they are added."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    def add(self, op: Op, device: int, length: int, **fields) -> int:
        step_id = len(self.steps)
        self.steps.append(Step(step_id, op, device, length, **fields))
        return step_id


def _chunks(transfers: list[Transfer], chunk: int):
    """(file_offset, length, members overlapping it) for each chunk of each contiguous run."""
    for start, end, members in segments(transfers):
        first = 0  # members are contiguous and sorted: walk them with a cursor
        for offset in range(start, end, chunk):
            length = min(chunk, end - offset)
            while members[first].file_offset + members[first].length <= offset:
                first += 1
            parts, i = [], first
            while i < len(members) and members[i].file_offset < offset + length:
                parts.append(members[i])
                i += 1
            yield offset, length, parts


def _interleave(per_device: dict[int, list]) -> list[tuple[int, int, object]]:
    """Round-robin the devices' work items so every device progresses together."""
    queues = {d: list(items) for d, items in per_device.items()}
    order, index = [], 0
    longest = max((len(v) for v in queues.values()), default=0)
    for index in range(longest):
        for device, items in queues.items():
            if index < len(items):
                order.append((device, index, items[index]))
    return order


def _overlap(t: Transfer, offset: int, length: int) -> tuple[int, int]:
    lo = max(t.file_offset, offset)
    hi = min(t.file_offset + t.length, offset + length)
    return lo, hi - lo


def _plan_streaming(policy, request: UploadRequest, caps: dict[int, DeviceCaps]) -> Plan:
    upload = request.direction is Direction.UPLOAD
    chunk_lists = {d: list(_chunks(ts, policy.chunk)) for d, ts in _by_device(request).items()}
    pools = []
    for device, chunks in chunk_lists.items():
        if chunks:
            pools.append(StagingPool(device, min(policy.slots, len(chunks)), max(c[1] for c in chunks)))
    slots = {p.device: p.slots for p in pools}
    queues = {d: min(getattr(policy, "queues", 1), caps[d].copy_queues) for d in chunk_lists}
    out = _Steps()
    # Steps that last used each (device, slot): the next fill waits for them.
    previous_use: dict[tuple[int, int], list[int]] = {}
    for device, k, (offset, length, parts) in _interleave(chunk_lists):
        slot = k % slots[device]
        queue = k % queues[device]
        gate = tuple(previous_use.get((device, slot), ()))
        if upload:
            read = out.add(Op.READ, device, length, file_offset=offset, slot=slot, deps=gate)
            uses = []
            for t in parts:
                lo, n = _overlap(t, offset, length)
                uses.append(out.add(
                    Op.COPY, device, n, file_offset=lo, buffer=t.buffer,
                    buffer_offset=t.buffer_offset + lo - t.file_offset,
                    slot=slot, slot_offset=lo - offset, queue=queue, deps=(read,),
                ))
            previous_use[(device, slot)] = uses
        else:
            copies = []
            for t in parts:
                lo, n = _overlap(t, offset, length)
                copies.append(out.add(
                    Op.COPY_BACK, device, n, file_offset=lo, buffer=t.buffer,
                    buffer_offset=t.buffer_offset + lo - t.file_offset,
                    slot=slot, slot_offset=lo - offset, queue=queue, deps=gate,
                ))
            write = out.add(Op.WRITE, device, length, file_offset=offset, slot=slot, deps=tuple(copies))
            previous_use[(device, slot)] = [write]
    limits = Limits(readers=policy.readers, queues=max(queues.values(), default=1))
    return Plan(policy, policy, request, tuple(out.steps), tuple(pools), (), limits)


def _plan_staged(policy, request: UploadRequest, caps: dict[int, DeviceCaps]) -> Plan:
    upload = request.direction is Direction.UPLOAD
    out = _Steps()
    pools = []
    for device, transfers in _by_device(request).items():
        runs = segments(transfers)
        total = sum(end - start for start, end, _ in runs)
        if not total:
            continue
        pools.append(StagingPool(device, 1, total))
        # Runs sit one after another in the single staging buffer.
        placed, at = [], 0
        for start, end, members in runs:
            placed.append((start, end, members, at))
            at += end - start
        io_steps, copy_steps = [], []
        if upload:
            for start, end, _, base in placed:
                for offset in range(start, end, policy.chunk):
                    length = min(policy.chunk, end - offset)
                    io_steps.append(out.add(Op.READ, device, length, file_offset=offset, slot=0, slot_offset=base + offset - start))
        everything_read = tuple(io_steps)
        for start, end, members, base in placed:
            for t in members:
                copy_steps.append(out.add(
                    Op.COPY if upload else Op.COPY_BACK, device, t.length, file_offset=t.file_offset,
                    buffer=t.buffer, buffer_offset=t.buffer_offset, slot=0,
                    slot_offset=base + t.file_offset - start, deps=everything_read,
                ))
        if not upload:
            everything_copied = tuple(copy_steps)
            for start, end, _, base in placed:
                for offset in range(start, end, policy.chunk):
                    length = min(policy.chunk, end - offset)
                    out.add(Op.WRITE, device, length, file_offset=offset, slot=0, slot_offset=base + offset - start, deps=everything_copied)
    return Plan(policy, policy, request, tuple(out.steps), tuple(pools), (), Limits(readers=policy.readers))


def _import_refusal(request: UploadRequest, caps: dict[int, DeviceCaps]) -> str | None:
    if request.direction is not Direction.UPLOAD:
        return "downloads do not import host memory"
    if request.source.host_alignment == 0:
        return f"{request.source.name} is not in host memory (no host view)"
    for device, cap in caps.items():
        if not cap.can_import_host:
            return f"device {device} cannot import host memory"
        if request.source.host_alignment % cap.import_alignment:
            return (
                f"{request.source.name}'s host memory is aligned to {request.source.host_alignment} bytes; "
                f"device {device} needs {cap.import_alignment}"
            )
    return None


def _with_fallback(policy, request, caps, why: str) -> Plan:
    plan = make_plan(policy.fallback, request, _caps_list(caps))
    note = f"{policy.kind} not possible: {why}; using fallback {policy.fallback.spec()}"
    return Plan(plan.policy, policy, plan.request, plan.steps, plan.pools, plan.windows, plan.limits, plan.notes + (note,))


def _bindable(request: UploadRequest, transfers: list[Transfer]) -> set[int]:
    """Buffers that one transfer fills entirely: a device may use the file's bytes as them."""
    filling: dict[int, list[Transfer]] = defaultdict(list)
    for t in transfers:
        if t.length:
            filling[t.buffer].append(t)
    return {b for b, ts in filling.items()
            if len(ts) == 1 and ts[0].buffer_offset == 0 and ts[0].length == request.buffers[b].size}


IMPORT_COPY_DEPTH = 4  # copies in flight per queue out of imported memory


def _plan_import(policy, request: UploadRequest, caps: dict[int, DeviceCaps]) -> Plan:
    why = _import_refusal(request, caps)
    if why:
        return _with_fallback(policy, request, caps, why)
    out = _Steps()
    windows: list[ImportWindow] = []
    per_device = _by_device(request)
    queues = {d: min(policy.queues, caps[d].copy_queues) for d in per_device}
    for device, transfers in per_device.items():
        cap = caps[device]
        align = cap.import_alignment
        runs = segments(transfers)
        piece = max(align_down(policy.piece, align), align)
        k = 0  # copies so far on this device, dealt round-robin to its queues
        if cap.import_in_place:
            # The device uses the host bytes where they are: one window per run. A buffer that one
            # transfer fills entirely is bound to them; any other is copied out of the window.
            whole = _bindable(request, transfers)
            for start, end, members in runs:
                w_start = align_down(start, align)
                window = ImportWindow(len(windows), device, w_start, align_up(end, align) - w_start, in_place=True)
                windows.append(window)
                imp = out.add(Op.IMPORT, device, window.length, file_offset=w_start, window=window.id)
                for t in members:
                    if t.buffer in whole:
                        out.add(Op.BIND, device, t.length, file_offset=t.file_offset, buffer=t.buffer,
                                buffer_offset=t.buffer_offset, window=window.id, deps=(imp,))
                    else:
                        out.add(Op.COPY_IMPORTED, device, t.length, file_offset=t.file_offset, buffer=t.buffer,
                                buffer_offset=t.buffer_offset, window=window.id, queue=k % queues[device],
                                deps=(imp,))
                        k += 1
            continue
        # Dedicated: import piece by piece; at most 2 x importers pieces held, so
        # importing the next pieces overlaps the copies out of this one.
        held: list[int] = []  # unimport step of each window, in order
        hold = 2 * policy.importers
        at_end = policy.release == "at_end"
        pieces: list[ImportWindow] = []  # this device's windows, released after its last copy (at_end)
        all_copies: list[int] = []
        for start, end, members in runs:
            w_start = align_down(start, align)
            while w_start < end:
                w_end = min(w_start + piece, align_up(end, align))
                window = ImportWindow(len(windows), device, w_start, w_end - w_start)
                windows.append(window)
                gate = (held[-hold],) if len(held) >= hold and not at_end else ()
                imp = out.add(Op.IMPORT, device, window.length, file_offset=w_start, window=window.id, deps=gate)
                copies = []
                lo_bound, hi_bound = max(w_start, start), min(w_end, end)
                for t in members:
                    lo, n = _overlap(t, lo_bound, hi_bound - lo_bound)
                    if n <= 0:
                        continue
                    copies.append(out.add(
                        Op.COPY_IMPORTED, device, n, file_offset=lo, buffer=t.buffer,
                        buffer_offset=t.buffer_offset + lo - t.file_offset, window=window.id,
                        queue=k % queues[device], deps=(imp,),
                    ))
                    k += 1
                if at_end:
                    pieces.append(window)
                    all_copies.extend(copies or (imp,))
                else:
                    held.append(out.add(Op.UNIMPORT, device, window.length, file_offset=w_start,
                                        window=window.id, deps=tuple(copies) or (imp,)))
                w_start = w_end
        if pieces:
            # The last piece's release waits for every copy; the others follow it.
            last = pieces[-1]
            anchor = out.add(Op.UNIMPORT, device, last.length, file_offset=last.file_offset, window=last.id,
                             deps=tuple(all_copies))
            for window in pieces[:-1]:
                out.add(Op.UNIMPORT, device, window.length, file_offset=window.file_offset, window=window.id,
                        deps=(anchor,))
    # Copies out of imported memory hold no slot: queue several per queue, so the ones
    # already queued run on while the next piece is imported (CUDA's registration
    # holds back copies queued during it, not copies queued before).
    limits = Limits(readers=1, queues=max(queues.values(), default=1), imports=policy.importers,
                    copies_per_queue=IMPORT_COPY_DEPTH)
    return Plan(policy, policy, request, tuple(out.steps), (), tuple(windows), limits)


def _plan_direct(policy, request: UploadRequest, caps: dict[int, DeviceCaps]) -> Plan:
    if request.direction is not Direction.UPLOAD:
        return _with_fallback(policy, request, caps, "downloads do not use direct storage")
    lacking = [d for d, c in caps.items() if not c.direct_storage]
    if lacking:
        return _with_fallback(policy, request, caps, f"device {lacking[0]} has no direct storage path")
    out = _Steps()
    per_device = {d: [(t, off) for t in ts for off in range(t.file_offset, t.file_offset + t.length, policy.chunk)]
                  for d, ts in _by_device(request).items()}
    for device, _, (t, offset) in _interleave(per_device):
        length = min(policy.chunk, t.file_offset + t.length - offset)
        out.add(Op.DIRECT, device, length, file_offset=offset, buffer=t.buffer,
                buffer_offset=t.buffer_offset + offset - t.file_offset)
    return Plan(policy, policy, request, tuple(out.steps), (), (), Limits(readers=policy.readers))


def _split_at_share(transfers, share: float) -> tuple[list[Transfer], list[Transfer]]:
    """The first ``share`` of the bytes (in file order) and the rest; a transfer across the cut is split."""
    ordered = sorted(transfers, key=lambda t: (t.file_offset, t.buffer))
    cut = int(sum(t.length for t in ordered) * share)
    first, rest, seen = [], [], 0
    for t in ordered:
        if seen + t.length <= cut:
            first.append(t)
        elif seen >= cut:
            rest.append(t)
        else:
            n = cut - seen
            first.append(Transfer(t.file_offset, t.buffer, t.buffer_offset, n))
            rest.append(Transfer(t.file_offset + n, t.buffer, t.buffer_offset + n, t.length - n))
        seen += t.length
    return first, rest


def _plan_hybrid(policy, request: UploadRequest, caps: dict[int, DeviceCaps]) -> Plan:
    why = _import_refusal(request, caps)
    if why:
        plan = make_plan(policy.streamed, request, _caps_list(caps))
        note = f"hybrid: import not possible ({why}); streaming everything with {policy.streamed.spec()}"
        return Plan(plan.policy, policy, request, plan.steps, plan.pools, plan.windows, plan.limits,
                    plan.notes + (note,))
    imported, streamed = _split_at_share(request.transfers, policy.share)
    part_a = _plan_import(policy.imported, UploadRequest(request.source, request.buffers, tuple(imported),
                                                         request.direction), caps)
    part_b = _plan_streaming(policy.streamed, UploadRequest(request.source, request.buffers, tuple(streamed),
                                                            request.direction), caps)
    # Imported copies keep queues [0, qa); streamed copies take the next ones (cycling
    # within what the devices have), so neither part waits behind the other's copies.
    qa, qb = part_a.limits.queues, part_b.limits.queues
    # Per device: devices of one request may have different numbers of copy queues.
    queues_of = {d: max(1, min(qa + qb, c.copy_queues)) for d, c in caps.items()}
    queues = max(queues_of.values())
    base = len(part_a.steps)
    steps = list(part_a.steps)
    for s in part_b.steps:
        steps.append(replace(s, id=s.id + base, deps=tuple(d + base for d in s.deps),
                             queue=(s.queue + qa) % queues_of[s.device] if s.op in COPY_OPS else s.queue))
    if policy.imported.release == "at_end":
        steps = _release_after_streaming(steps, base)
    limits = Limits(readers=part_b.limits.readers, queues=queues, imports=part_a.limits.imports,
                    copies_per_queue=max(part_a.limits.copies_per_queue, part_b.limits.copies_per_queue))
    return Plan(policy, policy, request, tuple(steps), part_b.pools, part_a.windows, limits,
                part_a.notes + part_b.notes)


def _release_after_streaming(steps: list[Step], streamed_from: int) -> list[Step]:
    """Moves the imported part's releases after the streamed part, and makes each
    device's first release (the one the others follow) wait for the streamed copies
    to that device too: no release while any copy is in flight. Nothing waits for a
    release that is released at the end, so the steps renumber with deps still pointing back."""
    releases = [s for s in steps[:streamed_from] if s.op is Op.UNIMPORT]
    order = [s for s in steps if not (s.op is Op.UNIMPORT and s.id < streamed_from)] + releases
    new_id = {s.id: i for i, s in enumerate(order)}
    streamed: dict[int, list[int]] = defaultdict(list)
    for s in steps[streamed_from:]:
        if s.op in COPY_OPS:
            streamed[s.device].append(new_id[s.id])
    out, anchored = [], set()
    for s in order:
        deps = tuple(new_id[d] for d in s.deps)
        if s.op is Op.UNIMPORT and s.id < streamed_from and s.device not in anchored:
            anchored.add(s.device)
            deps += tuple(streamed[s.device])
        out.append(replace(s, id=new_id[s.id], deps=deps))
    return out


def _plan_auto(policy, request: UploadRequest, caps: dict[int, DeviceCaps]) -> Plan:
    from halsim.choose import choose_by_caps, choose_by_simulation

    if policy.platform is not None:
        choice = choose_by_simulation(request, policy.platform, policy.budget, caps=_caps_list(caps))
        chosen, note = choice.policy, f"auto chose {choice.policy.spec()}: {choice.why()}"
    else:
        chosen = choose_by_caps(request, caps, budget=policy.budget)
        note = f"auto chose {chosen.spec()}"
    plan = make_plan(chosen, request, _caps_list(caps))
    return Plan(plan.policy, policy, plan.request, plan.steps, plan.pools, plan.windows, plan.limits, plan.notes + (note,))
