"""Stateful tests: the engine against a scripted device whose completions the rules
control (interleaved submits, completions, failures, cancels, interrupts), and a
session of uploads, downloads, faults and frees on the real CPU device."""

from __future__ import annotations

import threading

from hypothesis import assume, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from halsim.caps import DeviceCaps
from halsim.device import Device, Execution, Pending
from halsim.engine import CancelToken, Engine
from halsim.errors import DeviceError, HalsimError, PolicyError, UploadCancelled
from halsim.invariants import check_clean, check_plan, check_run, check_trace
from halsim.plan import COPY_OPS, IO_OPS, Op
from halsim.request import SourceInfo
from halsim.trace import IMPORTED, STAGING, Trace, device_counter

from .conftest import examples
from .strategies import MAX_CHUNKS, caps_strategy, granularity, layouts, modes, policies, requests

SETTLE_SECONDS = 20  # a generous bound on how long the engine may take to react; never asserted as speed


class Controller:
    """Hands the engine's waits to the test: the engine blocks until a rule answers."""

    def __init__(self):
        self.cond = threading.Condition()
        self.waiting: list[Pending] | None = None
        self.reply = None
        self.finished = False
        self.outcome: object = None

    def engine_wait(self, pending):
        with self.cond:
            self.waiting = list(pending)
            self.cond.notify_all()
            while self.reply is None:
                self.cond.wait()
            reply, self.reply = self.reply, None
        if reply == "interrupt":
            raise KeyboardInterrupt
        return reply

    def settle(self) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.waiting is not None or self.finished, SETTLE_SECONDS), \
                "the engine neither waited nor finished"

    def answer(self, reply) -> None:
        with self.cond:
            self.waiting = None
            self.reply = reply
            self.cond.notify_all()
        self.settle()


class ScriptedExecution(Execution):
    def allocate(self):
        model = self.device.model
        model.allocations[self.index] = model.allocations.get(self.index, 0) + 1
        for i, spec in enumerate(self.plan.request.buffers):
            if spec.device == self.index:
                self.trace.change(device_counter(self.index), 0.0, spec.size)
        pool = self.plan.pool(self.index)
        if pool:
            self.trace.change(STAGING, 0.0, pool.bytes)
        self._held = True

    def submit(self, step):
        self.device.model.on_submit(step)
        return Pending(step, None)

    def release(self, keep_buffers):
        model = self.device.model
        model.releases.append((self.index, keep_buffers))
        if getattr(self, "_held", False):
            self._held = False
            pool = self.plan.pool(self.index)
            if pool:
                self.trace.change(STAGING, 0.0, -pool.bytes)
            if not keep_buffers:
                for spec in self.plan.request.buffers:
                    if spec.device == self.index:
                        self.trace.change(device_counter(self.index), 0.0, -spec.size)

    def buffers(self):
        return {}


class ScriptedDevice(Device):
    def __init__(self, model, caps):
        self.name = "scripted"
        self.caps = caps
        self.model = model

    def open(self, plan, file, trace, index=0, faults=None):
        return ScriptedExecution(self, plan, file, trace, index, faults)

    def wait(self, pending, timeout=None):
        return self.model.ctl.engine_wait(pending)

    def now(self):
        return 0.0


class EngineMachine(RuleBasedStateMachine):
    """The engine's scheduling and cleanup under any order of completions."""

    @initialize(policy=policies, caps=caps_strategy, mode=modes, data=st.data())
    def start(self, policy, caps, mode, data):
        layout = data.draw(layouts(granularity(policy) * min(MAX_CHUNKS, 12), max_tensors=4))
        source = SourceInfo("scripted.bin", layout.length, data.draw(st.sampled_from([0, 4096])))
        request = data.draw(requests(source, layout))
        try:
            plan = policy.plan(request, [caps] * (max(request.devices) + 1))
        except PolicyError:
            assume(False)
        assume(len(plan.steps) <= 80)
        check_plan(plan)
        self.plan, self.mode = plan, mode
        self.ctl = Controller()
        self.in_flight: dict[int, Pending] = {}
        self.completed: set[int] = set()
        self.submitted: set[int] = set()
        self.violations: list[str] = []
        self.stop_seen = False  # a failure, cancel or interrupt reached the engine
        self.first_stop: str | None = None
        self.allocations: dict[int, int] = {}
        self.releases: list[tuple[int, bool]] = []
        self.lock = threading.Lock()
        self.token = CancelToken()
        self.cancel_pending = False
        self.trace = Trace()
        device = ScriptedDevice(self, caps)
        devices = [device] * (max(request.devices) + 1)

        def body():
            try:
                self.ctl.outcome = Engine(mode).run(plan, None, devices, trace=self.trace, cancel=self.token)
            except BaseException as err:  # noqa: BLE001 - recorded and checked
                self.ctl.outcome = err
            with self.ctl.cond:
                self.ctl.finished = True
                self.ctl.cond.notify_all()

        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        self.ctl.settle()

    # --- what the engine does, checked as it happens ---------------------------------
    def on_submit(self, step):
        with self.lock:
            plan = self.plan
            if step.id in self.submitted:
                self.violations.append(f"step {step.id} submitted twice")
            missing = [d for d in step.deps if d not in self.completed]
            if missing:
                self.violations.append(f"step {step.id} submitted before its deps {missing} completed")
            if self.stop_seen:
                self.violations.append(f"step {step.id} submitted after the run was stopping")
            self.submitted.add(step.id)
            self.in_flight[step.id] = None
            steps = [plan.steps[i] for i in self.in_flight]
            if self.mode == "serial" and len(steps) > 1:
                self.violations.append(f"serial engine has {len(steps)} steps in flight")
            io = sum(1 for s in steps if s.op in IO_OPS)
            if io > plan.limits.readers:
                self.violations.append(f"{io} I/O steps in flight; readers={plan.limits.readers}")
            same_queue = sum(1 for s in steps if s.op in COPY_OPS and (s.device, s.queue) == (step.device, step.queue))
            if step.op in COPY_OPS and same_queue > plan.limits.copies_per_queue:
                self.violations.append(f"{same_queue} copies in flight on one queue")

    # --- rules ---------------------------------------------------------------------------
    def _running(self):
        return not self.ctl.finished and self.ctl.waiting

    @precondition(lambda self: not self.ctl.finished and self.ctl.waiting)
    @rule(data=st.data())
    def complete(self, data):
        """Some of the steps the engine waits on finish; some may fail."""
        waiting = self.ctl.waiting
        chosen = data.draw(st.lists(st.sampled_from(range(len(waiting))), min_size=1, max_size=len(waiting),
                                    unique=True))
        reply = []
        for i in chosen:
            p = waiting[i]
            fail = data.draw(st.integers(0, 9)) == 0
            with self.lock:
                del self.in_flight[p.step.id]
                if fail:
                    p.error = DeviceError("scripted failure", device="scripted", step=p.step.describe())
                    self.stop_seen = True
                    self.first_stop = self.first_stop or "failure"
                else:
                    self.completed.add(p.step.id)
            reply.append(p)
        if self.cancel_pending:
            with self.lock:
                self.stop_seen = True
                self.first_stop = self.first_stop or "cancel"
        self.ctl.answer(reply)

    @precondition(lambda self: not self.ctl.finished and self.ctl.waiting)
    @rule()
    def cancel(self):
        self.token.cancel()
        self.cancel_pending = True

    @precondition(lambda self: not self.ctl.finished and self.ctl.waiting)
    @rule()
    def interrupt(self):
        """Ctrl-C while the engine waits."""
        with self.lock:
            self.stop_seen = True
            self.first_stop = self.first_stop or "interrupt"
        self.ctl.answer("interrupt")

    @rule()
    def idle(self):
        """Nothing happens (the run may be over)."""

    # --- invariants -------------------------------------------------------------------------
    @invariant()
    def nothing_went_wrong_so_far(self):
        assert not self.violations, self.violations

    @invariant()
    def outcome_when_finished(self):
        if not self.ctl.finished:
            return
        outcome = self.ctl.outcome
        event(f"engine run ended: {type(outcome).__name__}")
        assert not self.in_flight, f"the engine returned with steps {sorted(self.in_flight)} still in flight"
        all_done = len(self.completed) == len(self.plan.steps)
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, HalsimError), repr(outcome)
            assert self.first_stop is not None, f"the run failed with nothing injected: {outcome!r}"
            if self.first_stop == "failure":
                assert "scripted failure" in str(outcome) or isinstance(outcome, UploadCancelled), outcome
            else:
                assert isinstance(outcome, UploadCancelled) or "scripted failure" in str(outcome), outcome
            assert all(not keep for _, keep in self.releases), "a failed run kept its buffers"
            assert {i for i, _ in self.releases} >= set(self.allocations), "an execution was not released"
            check_clean(self.trace, "a failed run")
            check_trace(self.plan, self.trace, complete=False)
        else:
            assert all_done, f"the run succeeded with {len(self.plan.steps) - len(self.completed)} steps not done"
            assert self.first_stop in (None, "cancel"), f"the run succeeded after a {self.first_stop}"
            assert all(keep for _, keep in self.releases)
            assert self.trace.level(STAGING) == 0

    def teardown(self):
        ctl = getattr(self, "ctl", None)
        if ctl is None:
            return
        self.token.cancel()
        while not ctl.finished:
            with ctl.cond:
                waiting = ctl.waiting
            if waiting:
                for p in waiting:
                    self.in_flight.pop(p.step.id, None)
                ctl.answer(list(waiting))
            else:
                ctl.settle()
        self.thread.join(SETTLE_SECONDS)


TestEngineMachine = EngineMachine.TestCase
TestEngineMachine.settings = settings(max_examples=examples(150), stateful_step_count=25, deadline=None)


# --- a session on the real CPU device ---------------------------------------------------

import os
import shutil
import tempfile

from hypothesis.stateful import Bundle, consumes, multiple

from halsim.faults import KINDS, Fault, FaultInjector
from halsim.files import open_file
from halsim.request import Direction, UploadRequest

from .counting import CountingCpuDevice
from .runs import check_against_layout
from .strategies import RUN_CAP, expected_bytes, write_file

faults = st.one_of(st.none(), st.builds(Fault, kind=st.sampled_from(KINDS), index=st.integers(0, 6)))


class CpuSessionMachine(RuleBasedStateMachine):
    """Uploads, downloads, faults and frees in any order: the CPU device's live
    buffers, staging and imports always equal what the live uploads own."""

    uploads = Bundle("uploads")

    @initialize(data=st.data(), caps=caps_strategy, kind=st.sampled_from(["mapped", "fd"]))
    def start(self, data, caps, kind):
        self.dir = tempfile.mkdtemp(prefix="halsim-session-")
        self.layout = data.draw(layouts(RUN_CAP // 4))
        self.path = os.path.join(self.dir, "source.bin")
        write_file(self.path, self.layout)
        self.file = open_file(self.path, "r", kind=kind)
        self.device = CountingCpuDevice(caps)
        self.live: list = []
        self.outputs = 0

    def _plan(self, policy, request):
        try:
            plan = policy.plan(request, [self.device.caps] * (max(request.devices) + 1))
        except PolicyError:
            return None
        return plan if len(plan.steps) <= 300 else None

    @rule(target=uploads, policy=policies, mode=modes, fault=faults, data=st.data())
    def upload(self, policy, mode, fault, data):
        request = data.draw(requests(SourceInfo.of(self.file), self.layout, max_devices=2))
        plan = self._plan(policy, request)
        if plan is None:
            return multiple()
        injector = FaultInjector(*([fault] if fault and fault.kind not in ("short_read",) else []))
        trace = Trace()
        devices = [self.device] * (max(request.devices) + 1)
        try:
            result = Engine(mode).run(plan, self.file, devices, trace=trace, cancel=injector.cancel, faults=injector)
        except HalsimError:
            assert injector.fired
            check_clean(trace, "a failed upload")
            return multiple()
        check_run(result)
        check_against_layout(result, self.layout)
        self.live.append(result)
        return result

    @rule(result=consumes(uploads))
    def free(self, result):
        result.free()
        check_clean(result.trace, "free")
        self.live.remove(result)

    @rule(result=uploads, policy=policies, mode=modes, fault=faults)
    def download(self, result, policy, mode, fault):
        request = result.plan.request
        out = os.path.join(self.dir, f"out{self.outputs}.bin")
        self.outputs += 1
        back = UploadRequest(SourceInfo(out, self.layout.length, 0), request.buffers, request.transfers,
                             Direction.DOWNLOAD)
        plan = self._plan(policy, back)
        if plan is None:
            return
        injector = FaultInjector(*([fault] if fault else []))
        devices = [self.device] * (max(request.devices) + 1)
        trace = Trace()
        with open_file(out, "rw", kind="fd", length=self.layout.length) as target:
            try:
                adopt = {d: e.buffers() for d, e in result.executions.items()}
                done = Engine(mode).run(plan, target, devices, trace=trace, cancel=injector.cancel,
                                        faults=injector, adopt=adopt)
            except HalsimError:
                assert injector.fired
                check_clean(trace, "a failed download")
            else:
                check_run(done, adopted=True)
                for t in request.transfers:
                    got = bytearray(t.length)
                    target.read_into(t.file_offset, got)
                    assert bytes(got) == expected_bytes(self.layout, t.file_offset, t.length)
        os.unlink(out)

    @invariant()
    def live_memory_is_what_live_uploads_own(self):
        if not hasattr(self, "device"):
            return
        buffers = imports = 0
        for result in self.live:
            plan = result.plan
            bound = {s.buffer for s in plan.steps if s.op is Op.BIND}
            buffers += sum(b.size for i, b in enumerate(plan.request.buffers) if i not in bound)
            imports += sum(w.length for w in plan.windows if w.in_place)
        assert self.device.live["buffers"][1] == buffers, (self.device.live, buffers)
        assert self.device.live["staging"] == [0, 0], self.device.live
        assert self.device.live["imports"][1] == imports, (self.device.live, imports)

    def teardown(self):
        if not hasattr(self, "device"):
            return
        for result in self.live:
            result.free()
        self.file.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert self.device.nothing_live(), self.device.live


TestCpuSession = CpuSessionMachine.TestCase
TestCpuSession.settings = settings(max_examples=examples(60), stateful_step_count=12, deadline=None)
