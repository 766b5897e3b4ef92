"""Given a real file, the simulator moves the real bytes: byte-exact against the file and the CPU device."""

import numpy as np
import pytest

from halsim.backends.cpu import CpuDevice
from halsim.device import Device
from halsim.engine import Engine
from halsim.errors import DeviceError, UploadFailed
from halsim.files import Access, FdFile, MappedFile, MemoryFile
from halsim.policies import parse_policy
from halsim.request import SourceInfo, request_from_tensors
from halsim.sim import Simulator


class T:
    def __init__(self, name, offset, nbytes):
        self.name, self.offset, self.nbytes, self.dtype, self.shape = name, offset, nbytes, "U8", (nbytes,)


SIZES = (100_000, 3, 0, 70_001, 4096, 257)


def tensors(start=13):
    out, offset = [], start
    for i, n in enumerate(SIZES):
        out.append(T(f"t{i}", offset, n))
        offset += n
    return out, offset + 11


@pytest.fixture
def data():
    _, length = tensors()
    return np.random.default_rng(7).integers(0, 256, length, dtype=np.uint8)


@pytest.fixture
def mapped(tmp_path, data):
    path = tmp_path / "model.bin"
    path.write_bytes(data.tobytes())
    with MappedFile(path) as file:
        yield file


def upload(device, file, spec, mode="overlapped"):
    request = request_from_tensors(SourceInfo.of(file), tensors()[0])
    plan = parse_policy(spec).plan(request, device.caps)
    return request, plan, Engine(mode).run(plan, file, [device])


def check(request, result, data):
    for t in request.transfers:
        got = result.buffers[t.buffer].to_bytes()[t.buffer_offset : t.buffer_offset + t.length]
        assert got == data[t.file_offset : t.file_offset + t.length].tobytes()


@pytest.mark.parametrize("mode", ["overlapped", "serial"])
@pytest.mark.parametrize("platform, spec", [
    ("h100-pcie5", "streaming:chunk=4096,slots=3,readers=2,queues=2"),
    ("h100-pcie5", "staged:chunk=50000"),
    ("h100-pcie5", "direct:chunk=8192,readers=3"),
    ("h100-pcie5", "import:piece=8192,queues=2"),
    ("dgpu-pcie4", "streaming:chunk=999,slots=1,readers=1"),
    ("igpu-unified", "import"),
    ("apple-m2-max", "import"),
])
def test_simulated_bytes_match_the_file_and_the_cpu_device(mapped, data, platform, spec, mode):
    request, plan, result = upload(Simulator(platform).device(0), mapped, spec, mode)
    check(request, result, data)
    cpu_request, _, cpu = upload(CpuDevice(), mapped, spec, mode)
    for i, buffer in result.buffers.items():
        assert buffer.to_bytes() == cpu.buffers[i].to_bytes()
    result.free()
    cpu.free()


def test_memory_file_falls_back_where_it_cannot_be_imported(data):
    file = MemoryFile(data[1:])  # an odd address: not importable at 4 KiB
    request, plan, result = upload(Simulator("igpu-unified").device(0), file, "import")
    assert plan.notes and plan.policy.kind == "streaming"
    check(request, result, data[1:])


def test_without_a_file_buffers_hold_no_bytes():
    sim = Simulator("h100-pcie5")
    request = request_from_tensors(SourceInfo("x", 10_000, 0), [T("a", 0, 10_000)])
    plan = parse_policy("streaming").plan(request, sim.device(0).caps)
    result = Engine().run(plan, None, [sim.device(0)])
    with pytest.raises(DeviceError, match="simulated without a file"):
        result.buffers[0].to_bytes()


class _Reuse(Device):
    """Gives a download's execution the buffers of an earlier upload."""

    def __init__(self, inner, buffers):
        self.inner, self.name, self.caps, self._buffers = inner, inner.name, inner.caps, buffers

    def now(self):
        return self.inner.now()

    def wait(self, pending, timeout=None):
        return self.inner.wait(pending, timeout)

    def open(self, plan, file, trace, index=0, faults=None):
        execution = self.inner.open(plan, file, trace, index, faults)
        execution.adopt_buffers(self._buffers)
        return execution


def test_download_writes_the_buffers_back(mapped, data, tmp_path):
    device = Simulator("dgpu-pcie4").device(0)
    request, _, up = upload(device, mapped, "streaming:chunk=4096,slots=2")
    down = request.reversed()
    target = FdFile(tmp_path / "out.bin", Access.READ_WRITE, length=len(data))
    plan = parse_policy("streaming:chunk=5000,slots=3,readers=2").plan(down, device.caps)
    Engine().run(plan, target, [_Reuse(device, up.buffers)])
    out = bytearray(len(data))
    target.read_into(0, out)
    for t in request.transfers:
        assert out[t.file_offset : t.file_offset + t.length] == data[t.file_offset : t.file_offset + t.length].tobytes()
    target.close()


def test_step_errors_stop_the_upload_and_clean_up(mapped):
    from halsim.faults import Fault, FaultInjector

    sim = Simulator("h100-pcie5")
    request = request_from_tensors(SourceInfo.of(mapped), tensors()[0])
    plan = parse_policy("streaming:chunk=4096,slots=2,readers=2").plan(request, sim.device(0).caps)
    for kind in ("read_error", "copy_error"):
        with pytest.raises((UploadFailed, DeviceError, Exception)) as err:
            Engine().run(plan, mapped, [sim.device(0)], faults=FaultInjector(Fault(kind, index=2)))
        assert "injected" in str(err.value)
        assert sim.machine.host_memory.used == 0 and sim.machine.device_memory[0].used == 0
        assert sim.machine.readers._next >= 1 and sim.machine.storage_queue.busy == 0
