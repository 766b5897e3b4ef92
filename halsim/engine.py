"""The engine: the only scheduler.

It walks a Plan on one or more devices, submitting each step once its
dependencies are done and its limit (readers, copy queues, imports) has room,
and waits on the devices for completions. ``mode="serial"`` keeps one step in
flight — IREE's inline loop; ``"overlapped"`` lets reads, copies and imports
run together. Devices never schedule on their own.

On an error or a cancel the engine stops submitting, drains what is in flight,
releases staging, imports and buffers, and raises — nothing stays allocated.
"""

from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Sequence

from halsim.device import Device, DeviceBuffer, Execution, Pending
from halsim.errors import HalsimError, UploadCancelled, UploadFailed
from halsim.files import HalFile
from halsim.plan import COPY_OPS, DELIVERING_OPS, IO_OPS, Plan, Step
from halsim.trace import Trace

Mode = Literal["overlapped", "serial"]
ProgressFn = Callable[[int, int], None]  # (bytes delivered so far, total bytes)


class CancelToken:
    """Set from any thread to stop a run; the engine cleans up and raises UploadCancelled."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass
class RunResult:
    plan: Plan
    trace: Trace
    executions: dict[int, Execution]
    buffers: dict[int, DeviceBuffer]  # by index into plan.request.buffers
    seconds: float
    device_names: list[str] = field(default_factory=list)

    def free(self) -> None:
        """Free the device buffers (the upload's output)."""
        for execution in self.executions.values():
            execution.free_buffers()
        self.buffers.clear()  # freed: keep no handles to them (an in-place buffer pins the file's mapping)


def lane_key(step: Step) -> tuple:
    """The engine's lane of a step: the readers, one copy queue of a device, or its host lane."""
    if step.op in IO_OPS:
        return ("io",)
    if step.op in COPY_OPS:
        return ("copy", step.device, step.queue)
    return ("host", step.device)


def lane_limit(plan: Plan, key: tuple) -> int:
    """How many steps of lane ``key`` the engine lets run at once (overlapped mode)."""
    if key[0] == "io":
        return plan.limits.readers
    if key[0] == "copy":
        return plan.limits.copies_per_queue
    return plan.limits.imports


def _release_all(executions: Mapping[int, Execution], keep_buffers: bool,
                 after: BaseException | None = None) -> BaseException | None:
    """Release every execution, even when one fails (else the other devices keep
    their memory); return the first failure. With ``after`` (the error the run
    raises), a failure to clean up is added to it as a note instead of hiding it."""
    first = None
    for execution in executions.values():
        try:
            execution.release(keep_buffers=keep_buffers)
        except BaseException as err:
            if first is None:
                first = err
    if first is not None and after is not None and first is not after:
        after.add_note(f"cleaning up also failed: {first}")
    return first


class Engine:
    def __init__(self, mode: Mode = "overlapped"):
        if mode not in ("overlapped", "serial"):
            raise ValueError(f"mode must be 'overlapped' or 'serial', not {mode!r}")
        self.mode = mode

    def run(
        self,
        plan: Plan,
        file: HalFile | None,
        devices: Sequence[Device],
        *,
        trace: Trace | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelToken | None = None,
        faults=None,
        adopt: "Mapping[int, Mapping[int, DeviceBuffer]] | None" = None,
        staging_first: bool = False,
    ) -> RunResult:
        """Run ``plan``: ``devices[i]`` is device ``i`` of the request.

        ``adopt[i]`` gives device ``i`` buffers that already exist (by index into
        the request's buffers): a download reads them, an upload ``into`` an
        earlier one fills them. Adopted buffers are never freed by this run.
        ``staging_first``: wait until each device's staging is usable before the
        first step, where a device pins it in the background (calibration).
        """
        request = plan.request
        needed = request.devices
        if not devices:
            raise ValueError("no devices given")
        if max(needed) >= len(devices):
            raise ValueError(f"the plan targets device {max(needed)} but only {len(devices)} device(s) were given")
        clock = devices[0]
        trace = trace if trace is not None else Trace()
        trace.origin = clock.now()
        trace.meta.update(policy=plan.policy.spec(), requested=plan.requested.spec(),
                          devices=[devices[d].name for d in needed], mode=self.mode)
        executions: dict[int, Execution] = {}
        try:
            for d in needed:
                executions[d] = devices[d].open(plan, file, trace, d, faults)
                if adopt is not None:
                    executions[d].adopt_buffers(dict(adopt.get(d, {})))
                executions[d].allocate()
                if staging_first:
                    executions[d].staging_ready()
        except BaseException as err:
            _release_all(executions, keep_buffers=False, after=err)
            raise
        try:
            self._walk(plan, executions, clock, progress, cancel)
        except BaseException as err:
            _release_all(executions, keep_buffers=False, after=err)
            raise
        failed = _release_all(executions, keep_buffers=True)
        if failed is not None:
            # A device could not release its staging or imports: the run is not
            # usable, so every device's buffers go too, not only that device's.
            _release_all(executions, keep_buffers=False, after=failed)
            raise failed
        buffers: dict[int, DeviceBuffer] = {}
        for execution in executions.values():
            buffers.update(execution.buffers())
        seconds = clock.now() - trace.origin
        return RunResult(plan, trace, executions, buffers, seconds, [devices[d].name for d in needed])

    def _walk(self, plan: Plan, executions: dict[int, Execution], clock: Device,
              progress: ProgressFn | None, cancel: CancelToken | None) -> None:
        steps = plan.steps
        waiting = [len(s.deps) for s in steps]
        # dependents[d]: step ids, or ~g for barrier group g. Steps sharing one long
        # deps tuple (staged: "after every read") count down once, as a group —
        # else 400 copies x 25,600 reads is 10M edges.
        dependents: list[list[int]] = [[] for _ in steps]
        group_index: dict[int, int] = {}
        group_waiting: list[int] = []
        group_members: list[list[int]] = []
        for s in steps:
            if len(s.deps) > 8:
                g = group_index.get(id(s.deps))
                if g is None:
                    g = group_index[id(s.deps)] = len(group_members)
                    group_members.append([])
                    group_waiting.append(len(s.deps))
                    for d in s.deps:
                        dependents[d].append(~g)
                group_members[g].append(s.id)
            else:
                for d in s.deps:
                    dependents[d].append(s.id)
        ready: dict[tuple, list[int]] = {}
        for s in steps:
            if not s.deps:
                heapq.heappush(ready.setdefault(lane_key(s), []), s.id)
        in_lane: dict[tuple, int] = {}
        in_flight: dict[int, Pending] = {}
        serial = self.mode == "serial"
        done = delivered = 0
        total = plan.request.total_bytes
        failure: BaseException | None = None
        failed_step: Step | None = None

        while done < len(steps):
            if failure is None and cancel is not None and cancel.cancelled:
                failure = UploadCancelled(f"{plan.request.source.name}: upload cancelled")
            if failure is None:
                try:
                    self._submit_ready(plan, steps, ready, in_lane, in_flight, executions, serial)
                except BaseException as err:  # a submit itself failed
                    failure = err
            if not in_flight:
                if failure is not None:
                    break
                raise HalsimError(
                    f"{plan.request.source.name}: plan is stuck with {len(steps) - done} steps left "
                    "(a dependency cycle in the plan)"
                )
            try:
                finished = clock.wait(list(in_flight.values()))
            except KeyboardInterrupt:
                failure = failure or UploadCancelled(f"{plan.request.source.name}: upload interrupted")
                continue
            for p in finished:
                step = p.step
                del in_flight[step.id]
                key = lane_key(step)
                in_lane[key] -= 1
                if p.error is not None:
                    if failure is None:
                        failure, failed_step = p.error, step
                    continue
                done += 1
                if step.op in DELIVERING_OPS:
                    delivered += step.length
                for n in dependents[step.id]:
                    if n >= 0:
                        waiting[n] -= 1
                        if waiting[n] == 0:
                            heapq.heappush(ready.setdefault(lane_key(steps[n]), []), n)
                        continue
                    group_waiting[~n] -= 1
                    if group_waiting[~n] == 0:
                        for m in group_members[~n]:
                            heapq.heappush(ready.setdefault(lane_key(steps[m]), []), m)
            if progress is not None and finished:
                progress(delivered, total)
            if failure is not None and not in_flight:
                break

        if failure is not None:
            if isinstance(failure, UploadCancelled):
                raise failure
            where = failed_step.describe(plan.request) if failed_step else "submit"
            if isinstance(failure, HalsimError):
                raise failure
            raise UploadFailed(f"{plan.request.source.name}: {where} failed: {failure}") from failure

    def _submit_ready(self, plan, steps, ready, in_lane, in_flight, executions, serial) -> None:
        if serial:
            if in_flight:
                return
            candidates = [(heap[0], key) for key, heap in ready.items() if heap]
            if not candidates:
                return
            _, key = min(candidates)
            step = steps[heapq.heappop(ready[key])]
            in_lane[key] = in_lane.get(key, 0) + 1
            in_flight[step.id] = executions[step.device].submit(step)
            return
        for key, heap in ready.items():
            limit = lane_limit(plan, key)
            while heap and in_lane.get(key, 0) < limit:
                step = steps[heapq.heappop(heap)]
                in_lane[key] = in_lane.get(key, 0) + 1
                in_flight[step.id] = executions[step.device].submit(step)
