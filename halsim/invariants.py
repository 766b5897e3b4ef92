"""Machine-checked correctness claims: the streaming invariants on a Plan and a Trace.

Each check raises :class:`InvariantError` (an ``AssertionError``) with a
message naming the invariant, the step(s) and the bytes concerned.

1. coverage — every byte of every transfer is delivered exactly once
   (range accounting over the plan's delivering steps), and flows through
   staging unchanged (each copy out of a slot reads the bytes the fill it
   depends on put there);
2. staging bound — pools within the policy's ``slots x chunk`` (per device);
   the trace's ``staging`` counter never above the plan's staging bytes;
3. slot reuse gated — any two accesses to the same staging bytes, one of them
   a fill, are ordered by the plan's dependencies; in the trace their spans
   do not overlap and run in that order;
4. dependencies — in the trace no step starts before every step it depends on ended;
5. device memory — the ``device/N`` counters never exceed what the request's
   buffers need;
6. clean — after failure, cancel or free every counter is back to zero
   (:func:`check_clean`); after success only the output remains (:func:`check_run`).

``check_plan`` is pure and cheap enough for plans of a few thousand steps; its
analysis is cached on the plan.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from halsim.plan import Op, Plan, Step
from halsim.request import Direction
from halsim.trace import IMPORTED, STAGING, Trace

if TYPE_CHECKING:
    from halsim.caps import DeviceCaps
    from halsim.engine import RunResult


class InvariantError(AssertionError):
    """A correctness claim of halsim does not hold."""


# Ops that put bytes into a staging slot, and ops that take bytes out of one.
SLOT_FILLS = frozenset({Op.READ, Op.COPY_BACK})
SLOT_DRAINS = frozenset({Op.COPY, Op.WRITE})
WINDOW_USERS = frozenset({Op.COPY_IMPORTED, Op.BIND})


def _fail(invariant: str, message: str) -> None:
    raise InvariantError(f"invariant {invariant}: {message}")


def _name(plan: Plan) -> str:
    return plan.request.source.name


def _desc(plan: Plan, step: Step) -> str:
    return step.describe(plan.request)


# ----------------------------------------------------------------------------------
# Interval helpers: depth functions over byte ranges, as sorted breakpoint lists.


def _depth(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """[(position, depth from here on)], merged; empty intervals ignored."""
    events: dict[int, int] = defaultdict(int)
    for lo, hi in intervals:
        if hi > lo:
            events[lo] += 1
            events[hi] -= 1
    out: list[tuple[int, int]] = []
    level = 0
    for pos in sorted(events):
        if not events[pos]:
            continue
        level += events[pos]
        if out and out[-1][1] == level:
            continue
        out.append((pos, level))
    return out


def _first_difference(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> tuple[int, int, int]:
    """(position, depth in a, depth in b) at the first position where they differ."""
    points = sorted({p for p, _ in a} | {p for p, _ in b})

    def at(depths, pos):
        level = 0
        for p, d in depths:
            if p > pos:
                break
            level = d
        return level

    for pos in points:
        da, db = at(a, pos), at(b, pos)
        if da != db:
            return pos, da, db
    return -1, 0, 0  # pragma: no cover - only called when they differ


# ----------------------------------------------------------------------------------
# Plan structure and the happens-before relation.


class _Analysis:
    """What check_trace needs from a checked plan: ancestors and conflicting pairs."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.order: list[int] = []  # a topological order
        self.ancestors: list[int] = []  # bitset of steps that happen before each step
        self.conflicts: list[tuple[int, int]] = []  # (earlier, later) pairs touching the same slot bytes

    def before(self, a: int, b: int) -> bool:
        """Step ``a`` must end before step ``b`` starts (transitively through deps)."""
        return bool(self.ancestors[b] >> a & 1)


def _check_structure(plan: Plan, analysis: _Analysis) -> None:
    request = plan.request
    steps = plan.steps
    devices = set(request.devices)
    for index, step in enumerate(steps):
        if step.id != index:
            _fail("structure", f"{_name(plan)}: step at position {index} has id {step.id}")
        if step.length < 0:
            _fail("structure", f"{_desc(plan, step)} has a negative length")
        if step.device not in devices:
            _fail("structure", f"{_desc(plan, step)} targets a device the request does not use")
        for dep in step.deps:
            if not 0 <= dep < len(steps) or dep == step.id:
                _fail("4 (dependencies)", f"{_desc(plan, step)} depends on step {dep}, which is not another step of the plan")
        if len(set(step.deps)) != len(step.deps):
            _fail("structure", f"{_desc(plan, step)} lists a dependency twice")
        if step.op in (Op.READ, Op.WRITE, Op.DIRECT, Op.IMPORT, Op.UNIMPORT, *WINDOW_USERS, Op.COPY, Op.COPY_BACK):
            if step.file_offset < 0:
                _fail("structure", f"{_desc(plan, step)} has no file offset")
            if step.op not in (Op.IMPORT, Op.UNIMPORT) and step.file_offset + step.length > request.source.length:
                _fail("1 (coverage)", f"{_desc(plan, step)} reaches past the end of {_name(plan)} ({request.source.length} bytes)")
        if step.op in (Op.COPY, Op.COPY_BACK, Op.COPY_IMPORTED, Op.BIND, Op.DIRECT):
            if not 0 <= step.buffer < len(request.buffers):
                _fail("structure", f"{_desc(plan, step)} names no buffer of the request")
            spec = request.buffers[step.buffer]
            if spec.device != step.device:
                _fail("structure", f"{_desc(plan, step)} touches buffer {spec.name!r}, which lives on device {spec.device}")
            if step.buffer_offset < 0 or step.buffer_offset + step.length > spec.size:
                _fail("1 (coverage)", f"{_desc(plan, step)} overflows buffer {spec.name!r} ({spec.size} bytes)")
        if step.op in SLOT_FILLS | SLOT_DRAINS:
            if step.slot < 0 or step.slot_offset < 0:
                _fail("structure", f"{_desc(plan, step)} names no staging slot")
        if step.op in WINDOW_USERS | {Op.IMPORT, Op.UNIMPORT}:
            if not 0 <= step.window < len(plan.windows):
                _fail("structure", f"{_desc(plan, step)} names no import window")
    # Topological order (Kahn) and ancestor bitsets; a cycle would stall the engine.
    waiting = [len(s.deps) for s in steps]
    dependents: list[list[int]] = [[] for _ in steps]
    for s in steps:
        for d in s.deps:
            dependents[d].append(s.id)
    ready = [s.id for s in steps if not s.deps]
    order: list[int] = []
    while ready:
        n = ready.pop()
        order.append(n)
        for m in dependents[n]:
            waiting[m] -= 1
            if not waiting[m]:
                ready.append(m)
    if len(order) != len(steps):
        stuck = next(s for s in steps if waiting[s.id])
        _fail("4 (dependencies)", f"{_name(plan)}: the steps' dependencies form a cycle through {_desc(plan, stuck)}")
    ancestors = [0] * len(steps)
    for n in order:
        bits = 0
        for d in steps[n].deps:
            bits |= ancestors[d] | (1 << d)
        ancestors[n] = bits
    analysis.order = order
    analysis.ancestors = ancestors


# ----------------------------------------------------------------------------------
# Invariant 1: coverage.


def _delivery_key(buffer: int, buffer_offset: int, file_offset: int) -> tuple[int, int]:
    return buffer, buffer_offset - file_offset


def _check_coverage(plan: Plan) -> None:
    request = plan.request
    upload = request.direction is Direction.UPLOAD
    want: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for t in request.transfers:
        want[_delivery_key(t.buffer, t.buffer_offset, t.file_offset)].append((t.file_offset, t.file_offset + t.length))
    delivering = {Op.COPY, Op.COPY_IMPORTED, Op.BIND, Op.DIRECT} if upload else {Op.COPY_BACK}
    wrong_way = {Op.COPY_BACK, Op.WRITE} if upload else {Op.COPY, Op.COPY_IMPORTED, Op.BIND, Op.DIRECT, Op.READ, Op.IMPORT}
    got: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for step in plan.steps:
        if step.op in wrong_way:
            _fail("1 (coverage)", f"{_desc(plan, step)} moves bytes the wrong way for a {request.direction.value}")
        if step.op in delivering:
            got[_delivery_key(step.buffer, step.buffer_offset, step.file_offset)].append(
                (step.file_offset, step.file_offset + step.length))
    for key in set(want) | set(got):
        expected, actual = _depth(want.get(key, ())), _depth(got.get(key, ()))
        if expected != actual:
            pos, d_got, d_want = _first_difference(actual, expected)
            buffer = request.buffers[key[0]]
            _fail("1 (coverage)",
                  f"{_name(plan)}: file byte {pos} reaches buffer {buffer.name!r} at offset {pos + key[1]} "
                  f"{d_got} time(s); the request asks for {d_want}")
    # The file side: each requested file byte is read (upload) or written (download)
    # exactly as often as transfers cover it, by staged paths.
    io_op = Op.READ if upload else Op.WRITE
    io = [(s.file_offset, s.file_offset + s.length) for s in plan.steps if s.op is io_op]
    if io:
        # The bytes that go through staging: what the copies into or out of slots carry
        # (a hybrid plan stages only its streamed share).
        through_slots = {Op.COPY, Op.COPY_BACK}
        staged = [(s.file_offset, s.file_offset + s.length) for s in plan.steps if s.op in through_slots]
        expected, actual = _depth(staged), _depth(io)
        if expected != actual:
            pos, d_got, d_want = _first_difference(actual, expected)
            _fail("1 (coverage)", f"{_name(plan)}: file byte {pos} is {io_op.value} {d_got} time(s); "
                                  f"the transfers through staging cover it {d_want} time(s)")


def _check_binds(plan: Plan) -> None:
    """A bound buffer *is* the imported bytes: one transfer must cover all of it."""
    request = plan.request
    delivering_to: dict[int, int] = defaultdict(int)
    for step in plan.steps:
        if step.op in (Op.COPY, Op.COPY_IMPORTED, Op.BIND, Op.DIRECT):
            delivering_to[step.buffer] += 1
    for step in plan.steps:
        if step.op is not Op.BIND:
            continue
        spec = request.buffers[step.buffer]
        if step.buffer_offset != 0 or step.length != spec.size or delivering_to[step.buffer] != 1:
            _fail("1 (coverage)",
                  f"{_desc(plan, step)} makes buffer {spec.name!r} ({spec.size} bytes) the file's bytes "
                  f"[{step.file_offset}, {step.file_offset + step.length}), but the request fills it "
                  f"from {delivering_to[step.buffer]} step(s) at buffer offset {step.buffer_offset}")


# ----------------------------------------------------------------------------------
# Invariants 2 and 3: staging bound and slot reuse.


def _check_staging_bound(plan: Plan) -> None:
    request = plan.request
    seen = set()
    for pool in plan.pools:
        if pool.device in seen:
            _fail("2 (staging bound)", f"{_name(plan)}: two staging pools for device {pool.device}")
        seen.add(pool.device)
        if pool.slots < 1 or pool.slot_bytes < 0:
            _fail("2 (staging bound)", f"{_name(plan)}: staging pool {pool} is malformed")
    policy = plan.policy
    per_device_bytes: dict[int, int] = defaultdict(int)
    for t in request.transfers:
        per_device_bytes[request.buffers[t.buffer].device] += t.length
    if policy.kind == "hybrid":
        policy = policy.streamed  # only its streamed share stages
    for pool in plan.pools:
        if policy.kind == "streaming":
            if pool.slots > policy.slots or pool.slot_bytes > policy.chunk:
                _fail("2 (staging bound)",
                      f"{_name(plan)}: device {pool.device} stages {pool.slots} x {pool.slot_bytes} bytes; "
                      f"the policy allows {policy.slots} x {policy.chunk}")
        elif policy.kind == "staged":
            if pool.bytes > per_device_bytes[pool.device]:
                _fail("2 (staging bound)",
                      f"{_name(plan)}: device {pool.device} stages {pool.bytes} bytes for "
                      f"{per_device_bytes[pool.device]} bytes of tensors")
        else:
            _fail("2 (staging bound)", f"{_name(plan)}: a {policy.kind} plan has a staging pool ({pool})")
    if plan.requested.kind == "auto" and plan.staging_bytes > plan.requested.budget:
        _fail("2 (staging bound)",
              f"{_name(plan)}: auto chose {plan.policy.spec()}, which stages {plan.staging_bytes} bytes; "
              f"its budget is {plan.requested.budget}")
    for step in plan.steps:
        if step.op not in SLOT_FILLS | SLOT_DRAINS:
            continue
        pool = plan.pool(step.device)
        if pool is None or step.slot >= pool.slots or step.slot_offset + step.length > pool.slot_bytes:
            _fail("2 (staging bound)", f"{_desc(plan, step)} uses staging outside device {step.device}'s pool ({pool})")


def _delta(step: Step) -> int:
    """The file offset of slot byte 0 as this step sees it."""
    return step.file_offset - step.slot_offset


def _check_slots(plan: Plan, analysis: _Analysis) -> None:
    by_slot: dict[tuple[int, int], list[Step]] = defaultdict(list)
    for step in plan.steps:
        if step.op in SLOT_FILLS | SLOT_DRAINS and step.length:
            by_slot[(step.device, step.slot)].append(step)
    position = {n: i for i, n in enumerate(analysis.order)}
    conflicts = []
    for (device, slot), users in by_slot.items():
        users.sort(key=lambda s: s.slot_offset)
        # Sweep: every pair of accesses to overlapping slot bytes, at least one a fill.
        for i, a in enumerate(users):
            a_end = a.slot_offset + a.length
            for b in users[i + 1:]:
                if b.slot_offset >= a_end:
                    break
                if a.op not in SLOT_FILLS and b.op not in SLOT_FILLS:
                    continue  # two drains may share bytes
                if analysis.before(a.id, b.id):
                    conflicts.append((a.id, b.id))
                elif analysis.before(b.id, a.id):
                    conflicts.append((b.id, a.id))
                else:
                    fill, other = (a, b) if a.op in SLOT_FILLS else (b, a)
                    what = "refilled" if other.op in SLOT_FILLS else "refilled before the copy out of it completed"
                    _fail("3 (slot reuse)",
                          f"{_name(plan)}: device {device} slot {slot} bytes "
                          f"[{max(a.slot_offset, b.slot_offset)}, {min(a_end, b.slot_offset + b.length)}) may be "
                          f"{what}: {_desc(plan, fill)} is not ordered with {_desc(plan, other)}")
        # Data flow: each drain reads, byte for byte, what the latest fill before it put there.
        fills = [s for s in users if s.op in SLOT_FILLS]
        for drain in (s for s in users if s.op in SLOT_DRAINS):
            lo, hi = drain.slot_offset, drain.slot_offset + drain.length
            sources = sorted((f for f in fills if analysis.before(f.id, drain.id)
                              and f.slot_offset < hi and f.slot_offset + f.length > lo),
                             key=lambda f: position[f.id])
            owner: list[tuple[int, int, Step]] = []  # painted pieces, later fills over earlier
            for f in sources:
                f_lo, f_hi = max(lo, f.slot_offset), min(hi, f.slot_offset + f.length)
                owner = [piece for p in owner for piece in _cut(p, f_lo, f_hi)]
                owner.append((f_lo, f_hi, f))
            owner.sort(key=lambda p: p[0])
            at = lo
            for p_lo, p_hi, f in owner:
                if p_lo > at:
                    break
                if _delta(f) != _delta(drain):
                    _fail("1 (coverage)",
                          f"{_desc(plan, drain)} takes slot bytes [{p_lo}, {p_hi}) that {_desc(plan, f)} "
                          f"filled from file offset {p_lo + _delta(f)}, not {p_lo + _delta(drain)}")
                at = max(at, p_hi)
            if at < hi:
                _fail("1 (coverage)",
                      f"{_desc(plan, drain)} takes slot bytes [{at}, {hi}) that no step it depends on filled")
    analysis.conflicts = conflicts


def _cut(piece: tuple[int, int, Step], lo: int, hi: int) -> list[tuple[int, int, Step]]:
    p_lo, p_hi, f = piece
    out = []
    if p_lo < lo:
        out.append((p_lo, min(p_hi, lo), f))
    if p_hi > hi:
        out.append((max(p_lo, hi), p_hi, f))
    return out


# ----------------------------------------------------------------------------------
# Import windows (imported host memory is part of invariant 2's "host memory held").


def _check_windows(plan: Plan, analysis: _Analysis, caps: "dict[int, DeviceCaps] | None") -> None:
    imports: dict[int, list[Step]] = defaultdict(list)
    unimports: dict[int, list[Step]] = defaultdict(list)
    users: dict[int, list[Step]] = defaultdict(list)
    for step in plan.steps:
        if step.op is Op.IMPORT:
            imports[step.window].append(step)
        elif step.op is Op.UNIMPORT:
            unimports[step.window].append(step)
        elif step.op in WINDOW_USERS:
            users[step.window].append(step)
    for index, window in enumerate(plan.windows):
        if window.id != index:
            _fail("structure", f"{_name(plan)}: window at position {index} has id {window.id}")
        if len(imports[window.id]) != 1:
            _fail("6 (clean)", f"{_name(plan)}: window {window.id} is imported {len(imports[window.id])} times")
        imp = imports[window.id][0]
        if (imp.device, imp.file_offset, imp.length) != (window.device, window.file_offset, window.length):
            _fail("structure", f"{_desc(plan, imp)} does not import window {window}")
        undo = unimports[window.id]
        if window.in_place:
            if undo:
                _fail("6 (clean)", f"{_desc(plan, undo[0])} releases in-place window {window.id} while buffers use it")
        else:
            if len(undo) != 1:
                _fail("6 (clean)", f"{_name(plan)}: window {window.id} is released {len(undo)} times")
            if not analysis.before(imp.id, undo[0].id):
                _fail("3 (slot reuse)", f"{_desc(plan, undo[0])} may run before {_desc(plan, imp)}")
        for user in users[window.id]:
            if user.device != window.device:
                _fail("structure", f"{_desc(plan, user)} uses window {window.id} of device {window.device}")
            if user.op is Op.BIND and not window.in_place:
                _fail("structure", f"{_desc(plan, user)} binds a buffer to a window that is not in place")
            if not analysis.before(imp.id, user.id):
                _fail("3 (slot reuse)", f"{_desc(plan, user)} may run before {_desc(plan, imp)}")
            if user.file_offset < window.file_offset or user.file_offset + user.length > window.file_offset + window.length:
                _fail("1 (coverage)", f"{_desc(plan, user)} reaches outside window {window}")
            if undo and not analysis.before(user.id, undo[0].id):
                _fail("3 (slot reuse)", f"{_desc(plan, undo[0])} may release window {window.id} before {_desc(plan, user)}")
        if caps is not None:
            cap = caps[window.device]
            if not cap.can_import_host:
                _fail("structure", f"{_name(plan)}: window {window.id} on device {window.device}, which cannot import")
            if window.in_place and not cap.import_in_place:
                _fail("structure", f"{_name(plan)}: window {window.id} is in place on a device without unified memory")
            align = cap.import_alignment
            if window.file_offset % align or window.length % align:
                _fail("structure", f"{_name(plan)}: window {window} is not aligned to device {window.device}'s {align} bytes")
    # Pieces on dedicated devices: at most ``hold`` held, so importing piece k waits for piece k-hold's release.
    hold = _held_pieces(plan)
    per_device: dict[int, list] = defaultdict(list)
    for window in plan.windows:
        if not window.in_place:
            per_device[window.device].append(window)
    for device, windows in per_device.items():
        for older, newer in zip(windows, windows[hold:]):
            if not analysis.before(unimports[older.id][0].id, imports[newer.id][0].id):
                _fail("2 (staging bound)",
                      f"{_name(plan)}: device {device} may hold windows {older.id} to {newer.id} at once; "
                      f"the policy holds at most {hold}")


def _held_pieces(plan: Plan) -> int:
    """How many import pieces a dedicated device may hold at once: two per importer,
    or all of them where the policy releases at the end."""
    policy = plan.policy.imported if plan.policy.kind == "hybrid" else plan.policy
    if getattr(policy, "release", "rolling") == "at_end":
        return max(len(plan.windows), 1)
    return 2 * getattr(policy, "importers", 1)


def _window_bound(plan: Plan) -> int:
    """Most imported bytes the plan can hold at once."""
    total = 0
    per_device: dict[int, list[int]] = defaultdict(list)
    for window in plan.windows:
        if window.in_place:
            total += window.length
        else:
            per_device[window.device].append(window.length)
    hold = _held_pieces(plan)
    for lengths in per_device.values():
        total += sum(sorted(lengths)[-hold:])
    return total


def _check_caps(plan: Plan, caps: "dict[int, DeviceCaps]") -> None:
    for step in plan.steps:
        cap = caps[step.device]
        if step.op is Op.DIRECT and not cap.direct_storage:
            _fail("structure", f"{_desc(plan, step)} on a device without direct storage")
        if step.op in (Op.COPY, Op.COPY_BACK, Op.COPY_IMPORTED) and not 0 <= step.queue < cap.copy_queues:
            _fail("structure", f"{_desc(plan, step)} uses copy queue {step.queue}; the device has {cap.copy_queues}")


def _caps_dict(plan: Plan, caps) -> "dict[int, DeviceCaps] | None":
    if caps is None:
        return None
    from halsim.caps import DeviceCaps

    if isinstance(caps, DeviceCaps):
        return {d: caps for d in plan.request.devices}
    caps = list(caps)
    return {d: caps[d] for d in plan.request.devices}


def check_plan(plan: Plan, caps: "DeviceCaps | Sequence[DeviceCaps] | None" = None) -> Plan:
    """Check invariants 1-3 (and the plan's structure) on ``plan``; returns it.

    With ``caps`` (the devices' capabilities the plan was made for) it also
    checks that the plan only uses what the devices have.
    """
    analysis = _Analysis(plan)
    _check_structure(plan, analysis)
    _check_coverage(plan)
    _check_binds(plan)
    _check_staging_bound(plan)
    _check_slots(plan, analysis)
    caps_by_device = _caps_dict(plan, caps)
    _check_windows(plan, analysis, caps_by_device)
    if caps_by_device is not None:
        _check_caps(plan, caps_by_device)
    if plan.limits.readers < 1 or plan.limits.queues < 1 or plan.limits.copies_per_queue < 1 or plan.limits.imports < 1:
        _fail("structure", f"{_name(plan)}: limits {plan.limits} would stall the engine")
    plan._cache["invariants"] = analysis
    return plan


def _analysis(plan: Plan) -> _Analysis:
    analysis = plan._cache.get("invariants")
    if analysis is None:
        check_plan(plan)
        analysis = plan._cache["invariants"]
    return analysis


# ----------------------------------------------------------------------------------
# The trace: invariants 2-6 as they happened.


def _step_times(plan: Plan, trace: Trace) -> dict[int, tuple[float, float]]:
    times: dict[int, tuple[float, float]] = {}
    for span in trace.spans:
        if span.step < 0:
            continue
        if span.step >= len(plan.steps):
            _fail("structure", f"{_name(plan)}: the trace has a span for step {span.step}, which the plan lacks")
        if span.end < span.start:
            _fail("structure", f"{_name(plan)}: span {span} ends before it starts")
        if span.step in times:
            start, end = times[span.step]
            times[span.step] = (min(start, span.start), max(end, span.end))
        else:
            times[span.step] = (span.start, span.end)
    return times


def _check_counter_series(plan: Plan, trace: Trace, name: str, bound: int, invariant: str, what: str) -> None:
    for when, level in trace.counters.get(name, ()):
        if level < 0:
            _fail("6 (clean)", f"{_name(plan)}: counter {name!r} went negative ({level}) at t={when:.6g}s: "
                               "something was freed twice")
        if level > bound:
            _fail(invariant, f"{_name(plan)}: {name} reached {level} bytes at t={when:.6g}s; {what} {bound}")


def check_trace(plan: Plan, trace: Trace, *, complete: bool = True) -> None:
    """Check the recorded run against the plan (invariants 2-5).

    ``complete``: the run succeeded, so every step must have run. A failed or
    cancelled run is checked for what did run.
    """
    analysis = _analysis(plan)
    times = _step_times(plan, trace)
    steps = plan.steps
    if complete:
        missing = [s for s in steps if s.id not in times]
        if missing:
            _fail("1 (coverage)", f"{_name(plan)}: the run succeeded but {_desc(plan, missing[0])} "
                                  f"(and {len(missing) - 1} more) never ran")
    # 4: no step starts before the steps it depends on ended.
    for n, (start, _) in times.items():
        for dep in steps[n].deps:
            if dep not in times:
                _fail("4 (dependencies)", f"{_desc(plan, steps[n])} ran but {_desc(plan, steps[dep])}, "
                                          "which it depends on, did not complete")
            if times[dep][1] > start:
                _fail("4 (dependencies)",
                      f"{_desc(plan, steps[n])} started at t={start:.9g}s, before {_desc(plan, steps[dep])} "
                      f"ended at t={times[dep][1]:.9g}s")
    # 3: accesses to the same slot bytes never overlap in time, and run in plan order.
    for first, second in analysis.conflicts:
        if first in times and second in times and times[first][1] > times[second][0]:
            _fail("3 (slot reuse)",
                  f"{_desc(plan, steps[second])} started at t={times[second][0]:.9g}s, before "
                  f"{_desc(plan, steps[first])} (same staging bytes) ended at t={times[first][1]:.9g}s")
        if second in times and first not in times:
            _fail("3 (slot reuse)", f"{_desc(plan, steps[second])} ran without {_desc(plan, steps[first])}")
    # 2 and 5: memory counters within bounds at every instant.
    _check_counter_series(plan, trace, STAGING, plan.staging_bytes, "2 (staging bound)",
                          "the plan's staging pools hold")
    _check_counter_series(plan, trace, IMPORTED, _window_bound(plan), "2 (staging bound)",
                          "the plan's import windows allow")
    needs = plan.device_bytes
    for name in trace.counters:
        if name.startswith("device/"):
            device = int(name.split("/", 1)[1])
            _check_counter_series(plan, trace, name, needs.get(device, 0), "5 (device memory)",
                                  "the request's buffers need")
        elif name not in (STAGING, IMPORTED):
            _check_counter_series(plan, trace, name, 1 << 62, "6 (clean)", "")


def check_clean(trace: Trace, what: str = "the run", file: Any = None) -> None:
    """Invariant 6: after a failure, a cancel or a free, nothing stays allocated or open."""
    left = {name: series[-1][1] for name, series in trace.counters.items() if series and series[-1][1]}
    if left:
        _fail("6 (clean)", f"after {what}: still allocated " +
              ", ".join(f"{name}={level} bytes" for name, level in sorted(left.items())))
    for name, series in trace.counters.items():
        if any(level < 0 for _, level in series):
            _fail("6 (clean)", f"after {what}: counter {name!r} went negative: something was freed twice")
    if file is not None and not getattr(file, "closed", True):
        _fail("6 (clean)", f"after {what}: {file.name} is still open")


def check_run(result: "RunResult", *, adopted: bool = False) -> None:
    """A successful run: the plan and its trace hold, and only the output stays allocated.

    ``adopted``: the run used buffers of an earlier run (a download), so it
    allocated no device memory of its own.
    """
    plan, trace = result.plan, result.trace
    check_plan(plan)
    check_trace(plan, trace, complete=True)
    if trace.level(STAGING):
        _fail("6 (clean)", f"{_name(plan)}: {trace.level(STAGING)} bytes of staging still allocated after the run")
    in_place = sum(w.length for w in plan.windows if w.in_place)
    if trace.level(IMPORTED) != in_place:
        _fail("6 (clean)", f"{_name(plan)}: {trace.level(IMPORTED)} bytes still imported after the run; "
                           f"only the {in_place} bytes buffers live in should be")
    bound = {s.buffer for s in plan.steps if s.op is Op.BIND}
    for device, need in plan.device_bytes.items():
        kept = 0 if adopted else sum(b.size for i, b in enumerate(plan.request.buffers)
                                     if b.device == device and i not in bound)
        level = trace.level(f"device/{device}")
        if level != kept:
            _fail("5 (device memory)", f"{_name(plan)}: device {device} holds {level} bytes after the run; "
                                       f"its buffers are {kept}")
    if plan.request.direction is Direction.UPLOAD:
        missing = [b.name for i, b in enumerate(plan.request.buffers) if i not in result.buffers]
        if missing:
            _fail("1 (coverage)", f"{_name(plan)}: the run returned no buffer for {missing[0]!r}")


def check_contents(result: "RunResult", data: Any) -> int:
    """Invariant 1 by content: every transfer's bytes in its buffer equal ``data``'s (bytes-like). Returns bytes checked."""
    request = result.plan.request
    view = memoryview(data).cast("B")
    cache: dict[int, bytes] = {}
    checked = 0
    for t in request.transfers:
        if not t.length:
            continue
        if t.buffer not in cache:
            cache[t.buffer] = result.buffers[t.buffer].to_bytes()
        got = cache[t.buffer][t.buffer_offset : t.buffer_offset + t.length]
        want = bytes(view[t.file_offset : t.file_offset + t.length])
        if got != want:
            bad = next(i for i in range(t.length) if got[i] != want[i])
            _fail("1 (coverage)",
                  f"{_name(result.plan)}: buffer {request.buffers[t.buffer].name!r} byte {t.buffer_offset + bad} "
                  f"is {got[bad]}, file byte {t.file_offset + bad} is {want[bad]}")
        checked += t.length
    return checked


__all__ = ["InvariantError", "check_plan", "check_trace", "check_run", "check_clean", "check_contents"]
