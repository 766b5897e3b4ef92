"""``read="mmap"``: a ring's reads as copies out of the file's mapping instead of ``pread``."""

import os

import numpy as np
import pytest

import halsim
from halsim.engine import Engine
from halsim.errors import FileAccessError
from halsim.files import FdFile, MappedFile
from halsim.formats import write_safetensors
from halsim.plan import Op
from halsim.policies import StreamingPolicy, parse_policy
from halsim.sim import Simulator

from sim.sim_helpers import GB, MiB, make_request, toy_platform


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(11)
    tensors = {f"w{i}": rng.standard_normal((i * 97 + 5, 33)).astype(np.float32) for i in range(9)}
    tensors["odd"] = rng.integers(-9, 9, 4099).astype(np.int8)  # unaligned offsets after it
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tensors)
    return path, tensors


def test_pread_is_the_default_and_has_one_spelling():
    assert StreamingPolicy().read is None
    assert parse_policy("streaming:read=pread") == StreamingPolicy()
    mapped = parse_policy("streaming:chunk=1MiB,read=mmap")
    assert mapped.read == "mmap" and parse_policy(mapped.spec()) == mapped and "read=mmap" in mapped.spec()
    with pytest.raises(halsim.PolicyError, match="read"):
        parse_policy("streaming:read=splice")


@pytest.mark.parametrize("policy", ["streaming:chunk=1000,slots=3,readers=2,queues=2,read=mmap",
                                    "hybrid:share=0.3,streamed=streaming(chunk=777,slots=2,readers=2,read=mmap)"])
def test_uploads_read_from_the_mapping_give_the_same_tensors(model, policy, monkeypatch):
    path, tensors = model
    copies = []
    monkeypatch.setattr(MappedFile, "copy_into", _counting(MappedFile.copy_into, copies))
    with halsim.upload(path, "cpu", policy, verify=True) as done:
        got = done.tensors()
        for name, array in tensors.items():
            np.testing.assert_array_equal(got[name], array)
        reads = [s.file_offset for s in done.plan.steps if s.op is Op.READ]
    assert reads and sorted(copies) == sorted(reads)  # every READ went through the mapping


def _counting(method, calls):
    def wrapped(self, offset, out):
        calls.append(offset)
        return method(self, offset, out)
    return wrapped


def test_copy_into_matches_pread_and_checks_the_file(tmp_path):
    path = tmp_path / "data.bin"
    data = np.random.default_rng(3).integers(0, 255, 3 * 4096 + 123, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    f = MappedFile(path)
    try:
        for offset, n in [(0, 10), (4095, 4098), (7, len(data) - 7), (len(data), 0)]:
            out = bytearray(n)
            assert f.copy_into(offset, out) == n and bytes(out) == data[offset : offset + n]
        with pytest.raises(FileAccessError, match="outside the file"):
            f.copy_into(len(data) - 3, bytearray(4))
        os.truncate(path, 4096)  # shrank under us: an error, not a SIGBUS
        with pytest.raises(FileAccessError, match="truncated while mapped"):
            f.copy_into(8192, bytearray(16))
    finally:
        f.close()
    unmapped = FdFile(path)  # no mapping: it reads by pread
    try:
        out = bytearray(16)
        assert unmapped.copy_into(0, out) == 16 and bytes(out) == data[:16]
    finally:
        unmapped.close()


def test_the_simulator_reads_the_mapping_at_memcpy_speed():
    # One reader, 256 MiB: page cache 1 GB/s per thread, memcpy 4 GB/s per thread.
    platform = toy_platform(host__memcpy_per_thread="4GB/s")
    request = make_request([256 * MiB])
    times = {}
    for read in (None, "mmap"):
        sim = Simulator(platform)
        device = sim.device(0)
        policy = StreamingPolicy(chunk=16 * MiB, slots=2, readers=1, read=read)
        result = Engine().run(policy.plan(request, device.caps), None, [device])
        reads = [s for s in result.trace.spans if s.lane.startswith("read/")]
        times[read] = sum(s.end - s.start for s in reads)
    assert times[None] == pytest.approx(256 * MiB / GB, rel=1e-6)
    assert times["mmap"] == pytest.approx(256 * MiB / (4 * GB), rel=1e-6)
