"""halsim.upload / Upload.download / tensors on the CPU device, end to end on real files."""

import os

import numpy as np
import pytest

import halsim
from halsim.formats import write_npy, write_safetensors
from halsim.trace import STAGING


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(7)
    tensors = {f"layer.{i}.weight": rng.standard_normal((i * 31 + 1, 17)).astype(np.float32) for i in range(12)}
    tensors["empty"] = np.zeros((0, 4), np.float32)
    tensors["bias"] = rng.integers(-5, 5, 13).astype(np.int16)  # odd size: unaligned offsets follow
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tensors)
    return path, tensors


POLICIES = ["staged", "streaming:chunk=1000,slots=3,readers=2,queues=2", "streaming:chunk=64MiB,slots=1,readers=1",
            "import", "direct", "auto", "import:fallback=staged", "hybrid:share=0.4,streamed=streaming(chunk=1000,slots=2)"]


@pytest.mark.parametrize("policy", POLICIES)
def test_upload_tensors_match(model, policy):
    path, tensors = model
    with halsim.upload(path, "cpu", policy, verify=True) as done:
        got = done.tensors()
        assert set(got) == set(tensors)
        for name, array in tensors.items():
            np.testing.assert_array_equal(got[name], array)
        report = done.report
        assert report.bytes == sum(a.nbytes for a in tensors.values())
        assert report.device == "cpu"


@pytest.mark.parametrize("policy", ["streaming:chunk=777,slots=2", "staged:chunk=500"])
def test_download_round_trip(model, policy, tmp_path):
    path, _ = model
    with halsim.upload(path, "cpu", "streaming") as done:
        report = done.download(tmp_path / "copy.safetensors", policy)
    assert (tmp_path / "copy.safetensors").read_bytes() == path.read_bytes()
    assert report.direction == "download"
    assert not os.path.exists(tmp_path / "copy.safetensors.partial")


def test_failed_download_leaves_no_file(model, tmp_path, monkeypatch):
    path, _ = model
    with halsim.upload(path, "cpu", "streaming") as done:
        from halsim.backends import cpu

        def broken(self, step, buffer, offset, target):
            raise RuntimeError("injected copy failure")

        monkeypatch.setattr(cpu.CpuExecution, "copy_out", broken)
        with pytest.raises(halsim.HalsimError, match="injected copy failure"):
            done.download(tmp_path / "out.safetensors")
    assert not os.path.exists(tmp_path / "out.safetensors")
    assert not os.path.exists(tmp_path / "out.safetensors.partial")


def test_upload_beyond_4gib_sparse(tmp_path):
    from halsim.formats import read_index

    path = tmp_path / "big.bin"
    offset = (4 << 30) + 4093  # past 4 GiB and unaligned
    payload = np.arange(5000, dtype=np.uint16).tobytes()
    with open(path, "wb") as f:
        f.truncate(offset + len(payload) + 100)
        f.seek(offset)
        f.write(payload)
    from halsim.formats.index import ParamIndex, TensorInfo

    index = ParamIndex(str(path), "raw", os.path.getsize(path), (TensorInfo("far", "U16", (5000,), offset, len(payload)),), {})
    for policy in ("streaming:chunk=3000,slots=2", "import", "direct"):
        with halsim.upload(path, "cpu", policy, index=index, verify=True) as done:
            assert done.tensors()["far"].tobytes() == payload


def test_npy_upload(tmp_path):
    array = np.arange(1000, dtype=np.float64).reshape(10, 100)
    write_npy(tmp_path / "a.npy", array)
    with halsim.upload(tmp_path / "a.npy", "cpu", "streaming:chunk=1000", verify=True) as done:
        (tensor,) = done.tensors().values()
        np.testing.assert_array_equal(tensor, array)


def test_malformed_file_raises_format_error_and_allocates_nothing(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes((10**6).to_bytes(8, "little") + b"{}")
    with pytest.raises(halsim.FormatError, match="bad.safetensors"):
        halsim.upload(path, "cpu")


def test_staging_released_and_report_fields(model):
    path, _ = model
    with halsim.upload(path, "cpu", "streaming:chunk=4096,slots=2") as done:
        assert done.result.trace.level(STAGING) == 0
        assert done.report.peak_staging_bytes <= 8192
        assert done.report.copies > 0
        data = done.report.to_dict()
        for key in ("seconds", "bytes", "gb_per_s", "peak_staging_bytes", "peak_device_bytes", "copies",
                    "imported_bytes", "policy", "device"):
            assert key in data


@pytest.mark.parametrize("policy", ["streaming:chunk=1000,slots=2", "import", "direct", "staged"])
def test_upload_into_existing_buffers(model, tmp_path, policy):
    path, tensors = model
    rng = np.random.default_rng(11)
    changed = {name: (rng.standard_normal(a.shape).astype(a.dtype) if a.dtype.kind == "f" else a + 1)
               for name, a in tensors.items()}
    other = tmp_path / "changed.safetensors"
    write_safetensors(other, changed)
    with halsim.upload(path, "cpu", "streaming") as first:
        before = {name: id(buffer) for name, buffer in first.buffers().items()}
        again = halsim.upload(other, policy=policy, into=first, verify=True)
        assert {name: id(buffer) for name, buffer in again.buffers().items()} == before
        assert again.report.peak_device_bytes == 0  # nothing new allocated
        again.free()  # the buffers belong to `first`: still there
        for name, array in changed.items():
            np.testing.assert_array_equal(first.tensors()[name], array)


def test_upload_into_a_different_layout_is_refused(model, tmp_path):
    path, tensors = model
    write_safetensors(tmp_path / "small.safetensors", {"x": np.zeros(3, np.float32)})
    with halsim.upload(path, "cpu") as first:
        with pytest.raises(halsim.PolicyError, match="small.safetensors: its tensors do not match"):
            halsim.upload(tmp_path / "small.safetensors", into=first)
