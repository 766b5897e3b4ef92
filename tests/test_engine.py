"""The engine on the CPU device: both modes, errors and cancels clean up."""

import numpy as np
import pytest

from halsim.backends.cpu import CpuDevice
from halsim.engine import CancelToken, Engine
from halsim.errors import FileAccessError, UploadCancelled
from halsim.files import MemoryFile
from halsim.plan import Op
from halsim.policies import parse_policy
from halsim.request import SourceInfo, request_from_tensors
from halsim.trace import STAGING, Trace


class T:
    def __init__(self, name, offset, nbytes):
        self.name, self.offset, self.nbytes, self.dtype, self.shape = name, offset, nbytes, "U8", (nbytes,)


def setup(sizes=(1000, 3, 0, 5000, 77), start=13):
    data = np.random.default_rng(1).integers(0, 256, start + sum(sizes) + 11, dtype=np.uint8)
    tensors, offset = [], start
    for i, n in enumerate(sizes):
        tensors.append(T(f"t{i}", offset, n))
        offset += n
    file = MemoryFile(data, name="mem.bin")
    return data, file, request_from_tensors(SourceInfo.of(file), tensors)


@pytest.mark.parametrize("mode", ["serial", "overlapped"])
@pytest.mark.parametrize("spec", ["streaming:chunk=256,slots=3,readers=2,queues=2", "staged:chunk=100",
                                  "streaming:chunk=1,slots=1,readers=1", "direct:chunk=999", "import"])
def test_bytes_land_where_the_plan_says(mode, spec):
    data, file, request = setup()
    device = CpuDevice()
    plan = parse_policy(spec).plan(request, device.caps)
    result = Engine(mode).run(plan, file, [device])
    for t in request.transfers:
        got = result.buffers[t.buffer].to_bytes()[t.buffer_offset : t.buffer_offset + t.length]
        assert got == data[t.file_offset : t.file_offset + t.length].tobytes()
    assert result.trace.level(STAGING) == 0
    result.free()
    assert result.trace.level("device/0") == 0


def test_a_real_device_traces_allocating_its_buffers_before_any_step():
    _, file, request = setup()
    device = CpuDevice()
    plan = parse_policy("streaming:chunk=256,slots=3,readers=2").plan(request, device.caps)
    result = Engine().run(plan, file, [device])
    (alloc,) = [s for s in result.trace.spans if s.op == "alloc"]
    assert alloc.lane == "alloc/d0" and alloc.nbytes == sum(spec.size for spec in request.buffers)
    assert all(s.start >= alloc.end for s in result.trace.spans if s.step >= 0)
    result.free()


def test_serial_mode_keeps_one_step_in_flight():
    _, file, request = setup()
    device = CpuDevice()
    plan = parse_policy("streaming:chunk=256,slots=4,readers=4").plan(request, device.caps)
    trace = Trace()
    Engine("serial").run(plan, file, [device], trace=trace).free()
    spans = sorted(trace.spans, key=lambda s: s.start)
    for a, b in zip(spans, spans[1:]):
        assert b.start >= a.end


def test_dependencies_respected_in_trace():
    _, file, request = setup()
    device = CpuDevice()
    plan = parse_policy("streaming:chunk=128,slots=2,readers=2").plan(request, device.caps)
    result = Engine().run(plan, file, [device])
    by_step = {s.step: s for s in result.trace.spans if s.step >= 0}  # not the allocation (-1)
    assert len(by_step) == len(plan.steps)
    for step in plan.steps:
        for dep in step.deps:
            assert by_step[dep].end <= by_step[step.id].start
    result.free()


class FailingFile(MemoryFile):
    def __init__(self, data, fail_at):
        super().__init__(data, name="failing.bin")
        self.fail_at, self.reads = fail_at, 0

    def _read(self, offset, out):
        self.reads += 1
        if self.reads == self.fail_at:
            raise FileAccessError(self.name, f"injected read error at offset {offset}")
        super()._read(offset, out)


@pytest.mark.parametrize("fail_at", [1, 2, 5])
def test_read_error_stops_cleanly(fail_at):
    data, _, request = setup()
    file = FailingFile(data, fail_at)
    device = CpuDevice()
    plan = parse_policy("streaming:chunk=256,slots=2,readers=2").plan(request, device.caps)
    trace = Trace()
    with pytest.raises(FileAccessError, match="failing.bin: injected read error"):
        Engine().run(plan, file, [device], trace=trace)
    assert trace.level(STAGING) == 0
    assert trace.level("device/0") == 0


def test_cancel_stops_cleanly():
    data, file, request = setup(sizes=(50_000,))
    device = CpuDevice()
    plan = parse_policy("streaming:chunk=64,slots=2,readers=1").plan(request, device.caps)
    token = CancelToken()
    trace = Trace()
    seen = []

    def progress(done, total):
        seen.append(done)
        if len(seen) == 3:
            token.cancel()

    with pytest.raises(UploadCancelled, match="mem.bin"):
        Engine().run(plan, file, [device], trace=trace, cancel=token, progress=progress)
    assert trace.level(STAGING) == 0 and trace.level("device/0") == 0
    assert len(seen) < plan.count(Op.COPY)


def test_too_few_devices_is_an_error():
    _, file, request = setup()
    request = request.for_devices(lambda b: 1)
    plan = parse_policy("streaming").plan(request, [CpuDevice().caps] * 2)
    with pytest.raises(ValueError, match="device 1"):
        Engine().run(plan, file, [CpuDevice()])


def test_bad_mode():
    with pytest.raises(ValueError):
        Engine("fast")
