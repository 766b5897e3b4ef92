"""Faults on every device, at every step position: a clear error (or a declared
fallback), and invariant 6 — nothing left allocated — every time."""

from __future__ import annotations

import os

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import halsim
from halsim.engine import Engine
from halsim.errors import (
    HalsimError,
)
from halsim.faults import EXPECTED_ERRORS, ALLOC_FAULTS, Fault, FaultInjector, STEP_FAULTS
from halsim.files import open_file
from halsim.formats import write_safetensors
from halsim.invariants import check_clean, check_plan, check_run, check_trace
from halsim.plan import Op
from halsim.policies import parse_policy
from halsim.request import SourceInfo, request_from_tensors
from halsim.trace import Trace

from . import devices as devs
from .conftest import examples
from .counting import CountingCpuDevice
from .runs import check_against_layout, source_file
from .strategies import write_file
from .strategies import MAX_CHUNKS, MAX_STEPS, RUN_CAP, Layout, Tensor, file_kinds, granularity, layouts, modes, policies, requests

EXPECTED = EXPECTED_ERRORS

# A small model: unaligned offsets, an empty tensor, tensors straddling chunks and pieces.
LAYOUT = Layout(30_000, 13, 13 + 7000 + 13 + 9000 + 1,
                (Tensor("a", 13, 7000), Tensor("empty", 7013, 0), Tensor("b", 7013, 13), Tensor("c", 7026, 9000),
                 Tensor("d", 16026, 1)))
FAULT_POLICIES = ["streaming:chunk=1000,slots=2,readers=2,queues=2", "staged:chunk=3000",
                  "import:piece=8KiB", "direct:chunk=5000", "streaming:chunk=64MiB,slots=1,readers=1"]


def events(plan, fault_kind: str, op: Op | None = None) -> int:
    """How many times ``fault_kind`` can fire in a run of ``plan``."""
    if fault_kind in ALLOC_FAULTS:
        if fault_kind == "staging_oom":
            return sum(1 for p in plan.pools if p.bytes)
        bound = {s.buffer for s in plan.steps if s.op is Op.BIND}
        return sum(1 for i, _ in enumerate(plan.request.buffers) if i not in bound)
    ops = {op} if op is not None else STEP_FAULTS[fault_kind]
    return sum(1 for s in plan.steps if s.op in ops)


def check_outcome(fault: Fault, plan, run, file_name: str, device_name: str, mode: str, total: int):
    """Run ``run()`` (which returns (result, trace) or raises with the trace at hand)."""
    trace = Trace()
    injector = FaultInjector(fault)
    try:
        result = run(trace, injector)
    except HalsimError as err:
        assert injector.fired, f"{fault} never fired, yet the run failed: {err!r}"
        assert isinstance(err, EXPECTED[fault.kind]), f"{fault} gave {type(err).__name__}: {err}"
        message = str(err)
        assert file_name in message or device_name in message, f"the error names neither file nor device: {message}"
        check_clean(trace, f"{fault.kind} at position {fault.index}")
        check_trace(plan, trace, complete=False)
        return None
    # It ran to the end: the fault did not fire — or a cancel came with nothing left to stop.
    if injector.fired:
        assert fault.kind == "cancel", f"{fault} fired but the run succeeded"
        if mode == "serial":
            assert fault.index == total - 1, "a serial run went on after a cancel"
    check_run(result)
    return result


@pytest.mark.parametrize("policy", FAULT_POLICIES)
@pytest.mark.parametrize("kind", sorted(set(EXPECTED) - {"write_error"}))
def test_upload_fault_at_every_position(device_spec, scratch, policy, kind):
    path = scratch.path()
    write_file(path, LAYOUT)
    with open_file(path, "r") as probe:
        request = request_from_tensors(SourceInfo.of(probe), LAYOUT.tensors)
    caps = devs.make(device_spec).caps
    plan = check_plan(parse_policy(policy).plan(request, caps), caps)
    total = events(plan, kind)
    for mode in ("serial", "overlapped"):
        for index in range(total + 1):  # one past the end: the fault never fires
            write_file(path, LAYOUT)  # afresh: a short read truncates it
            device = devs.make(device_spec)
            with open_file(path, "r") as file:

                def run(trace, injector):
                    return Engine(mode).run(plan, file, [device], trace=trace, cancel=injector.cancel,
                                            faults=injector)

                result = check_outcome(Fault(kind, index), plan, run, file.name, device.name, mode,
                                       events(plan, "cancel"))
                if index == total:
                    assert result is not None, f"{kind} with nothing to hit still failed"
                if result is not None:
                    check_against_layout(result, LAYOUT)
                    result.free()
                    check_clean(result.trace, "free")
    os.unlink(path)


@settings(max_examples=examples(100))
@given(policy=policies, data=st.data(), kind=st.sampled_from(sorted(EXPECTED)), mode=modes, kind_of_file=file_kinds,
       position=st.floats(0, 1))
def test_any_fault_anywhere_leaves_nothing(device_spec, scratch, policy, data, kind, mode, kind_of_file, position):
    """Generated requests and policies, one fault at a generated position, on uploads and downloads."""
    layout = data.draw(layouts(min(RUN_CAP, granularity(policy) * MAX_CHUNKS)))
    with source_file(scratch, layout, kind_of_file) as file:
        device = devs.make(device_spec)
        request = data.draw(requests(SourceInfo.of(file), layout, max_devices=1))
        try:
            plan = policy.plan(request, device.caps)
        except halsim.PolicyError:
            assume(False)
        assume(len(plan.steps) <= MAX_STEPS)
        check_plan(plan, device.caps)
        if kind == "write_error":
            return  # downloads: see test_download_faults
        total = events(plan, kind)
        index = int(position * total)
        result = check_outcome(Fault(kind, index), plan,
                               lambda trace, inj: Engine(mode).run(plan, file, [device], trace=trace,
                                                                   cancel=inj.cancel, faults=inj),
                               file.name, device.name, mode, events(plan, "cancel"))
        if result is not None:
            check_against_layout(result, layout)
            result.free()
            check_clean(result.trace, "free")


# --- through the public API: halsim.upload and Upload.download --------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import numpy as np

    rng = np.random.default_rng(3)
    tensors = {f"w{i}": rng.standard_normal((i * 13 + 1, 7)).astype(np.float32) for i in range(6)}
    tensors["empty"] = np.zeros((0,), np.float32)
    tensors["odd"] = rng.integers(0, 100, 11).astype(np.int8)
    path = tmp_path_factory.mktemp("faults") / "model.safetensors"
    write_safetensors(path, tensors)
    return path


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


API_FAULTS = [Fault("read_error", 2), Fault("short_read", 1), Fault("copy_error", 3), Fault("cancel", 4),
              Fault("device_oom", 2), Fault("staging_oom", 0), Fault("import_refused", 0)]


@pytest.mark.parametrize("policy", ["streaming:chunk=300,slots=2,readers=2", "import", "staged", "direct:chunk=400"])
@pytest.mark.parametrize("fault", API_FAULTS, ids=lambda f: f"{f.kind}@{f.index}")
def test_api_upload_fault(model, tmp_path, policy, fault):
    """halsim.upload on a file copy: a clear error naming the file or device, the file closed,
    nothing allocated; or the policy's declared fallback (a refused import)."""
    import shutil

    path = tmp_path / "m.safetensors"
    shutil.copy(model, path)
    device = CountingCpuDevice()
    injector = FaultInjector(fault)
    before = _open_fds()
    try:
        done = halsim.upload(path, device, policy, faults=injector, cancel=injector.cancel, verify=True)
    except HalsimError as err:
        assert isinstance(err, EXPECTED[fault.kind]), repr(err)
        assert str(path) in str(err) or device.name in str(err), str(err)
        assert device.nothing_live(), device.live
        assert _open_fds() == before, "the upload left a file open"
        return
    # Success: the fault had nothing to hit, came too late (cancel), or the policy fell back.
    with done:
        if injector.fired and fault.kind == "import_refused":
            assert any("fallback" in n or "refused" in n for n in done.plan.notes), done.plan.notes
        check_run(done.result)
    assert device.nothing_live(), device.live
    assert _open_fds() == before


DOWNLOAD_FAULTS = [Fault("write_error", 0), Fault("write_error", 3), Fault("copy_error", 1), Fault("cancel", 2),
                   Fault("staging_oom", 0)]


@pytest.mark.parametrize("policy", ["streaming:chunk=300,slots=2,readers=2", "staged:chunk=500"])
@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("fault", DOWNLOAD_FAULTS, ids=lambda f: f"{f.kind}@{f.index}")
def test_download_fault_leaves_no_half_written_file(model, tmp_path, policy, existing, fault):
    """Invariant 8: a failed download reports the error and leaves the destination as it was."""
    device = CountingCpuDevice()
    target = tmp_path / "out.safetensors"
    if existing:
        target.write_bytes(b"previous contents")
    with halsim.upload(model, device, "streaming") as done:
        injector = FaultInjector(fault)
        try:
            done.download(target, policy, faults=injector, cancel=injector.cancel)
        except HalsimError as err:
            assert isinstance(err, EXPECTED[fault.kind]), repr(err)
            if existing:
                assert target.read_bytes() == b"previous contents"
            else:
                assert not target.exists(), "a failed download left a file"
            assert not os.path.exists(str(target) + ".partial")
            assert device.nothing_live("staging", "imports"), device.live
        else:
            assert target.read_bytes() == model.read_bytes()
    assert device.nothing_live(), device.live
