"""The Vulkan device, end to end on a real Vulkan driver (lavapipe in CI).

Skips only where no Vulkan loader or driver exists; where Mesa's lavapipe ICD
is installed (CI) or HALSIM_REQUIRE_VULKAN=1, being unavailable is a failure.
Every test checks that no Vulkan memory or buffer outlives it and that the
driver and layers reported nothing (run with
VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation to have the validation layer
check every call).
"""

from __future__ import annotations

import glob
import mmap
import os

import numpy as np
import pytest

import halsim
from halsim.engine import CancelToken
from halsim.errors import DeviceUnavailableError, HalsimError, ImportRefusedError, OutOfMemoryError, UploadCancelled
from halsim.files import MemoryFile, address_of
from halsim.formats import write_safetensors
from halsim.formats.index import ParamIndex, TensorInfo
from halsim.plan import Op

vulkan = pytest.importorskip("halsim.backends.vulkan")
from halsim.backends import vulkan_driver, vulkan_extent, vulkan_instance  # noqa: E402


def _must_run() -> bool:
    if os.environ.get("HALSIM_REQUIRE_VULKAN", "") not in ("", "0"):
        return True
    icd_dirs = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"]
    return any(glob.glob(os.path.join(d, "lvp_icd*.json")) for d in icd_dirs)


@pytest.fixture(scope="module")
def device():
    try:
        return vulkan.open_device(0)
    except DeviceUnavailableError as err:
        if _must_run():
            pytest.fail(f"a Vulkan driver is installed but the device is unavailable: {err}")
        pytest.skip(str(err))


def _leaks(dev, baseline=None) -> dict[str, int]:
    live = dev.live_objects()
    base = baseline or {}
    return {k: v - base.get(k, 0) for k, v in live.items() if v != base.get(k, 0)}


@pytest.fixture(autouse=True)
def clean(request, device):
    """Nothing allocated after a test, and no driver or validation messages during it."""
    before_messages = len(vulkan.messages())
    baseline = device.live_objects()
    yield
    new = vulkan.messages()[before_messages:]
    assert not new, "Vulkan reported:\n" + "\n".join(new)
    assert not _leaks(device, baseline), f"Vulkan objects left alive: {_leaks(device, baseline)}"
    assert device.live_objects()["memory"] == 0 and device.live_objects()["buffer"] == 0


@pytest.fixture
def model(tmp_path):
    rng = np.random.default_rng(11)
    tensors = {f"layer.{i}.weight": rng.standard_normal((i * 29 + 3, 13)).astype(np.float32) for i in range(10)}
    tensors["empty"] = np.zeros((0, 4), np.float32)
    tensors["bias"] = rng.integers(-9, 9, 7).astype(np.int16)  # 14 bytes: unaligned offsets follow
    tensors["big"] = rng.integers(0, 255, 300_001).astype(np.uint8)
    tensors["tail"] = rng.standard_normal(5).astype(np.float16)
    path = tmp_path / "model.safetensors"
    write_safetensors(path, tensors)
    return path, tensors


def _check(done, tensors):
    assert done.verify() == sum(a.nbytes for a in tensors.values())
    got = done.tensors()
    assert set(got) == set(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(_array(got[name], array), array)
        assert done.buffers()[name].to_bytes() == array.tobytes()


def _array(tensor, like):
    """A tensor() result as numpy: a view where the host sees the memory, else read back."""
    if isinstance(tensor, vulkan.VulkanBuffer):  # device memory the host cannot map as one piece
        return np.frombuffer(tensor.to_bytes(), like.dtype).reshape(like.shape)
    return tensor


# ----- caps -------------------------------------------------------------------------------

def test_caps_and_registry(device):
    caps = device.caps
    assert device.name == "vulkan:0"
    assert caps.copy_queues == device.info.queue_count >= 1
    assert caps.max_allocation == device.info.max_allocation
    assert caps.memory_bytes > 0
    if device.info.device_type == 4:  # lavapipe: a CPU device with host-pointer import
        assert caps.kind == "cpu" and caps.unified_memory
        assert caps.can_import_host and caps.import_alignment == 4096
    names = [name for name, _ in vulkan.enumerate_devices()]
    assert names[0] == "vulkan:0"
    status = {b.name: b for b in halsim.registry.backends()} if hasattr(halsim, "registry") else None
    from halsim.registry import backends, get_device

    status = {b.name: b for b in backends()}
    assert status["vulkan"].available, status["vulkan"].reason
    assert get_device("vulkan:0") is device  # one shared device per index
    with pytest.raises(DeviceUnavailableError, match="vulkan:99"):
        get_device("vulkan:99")


def test_unavailable_without_loader(monkeypatch):
    """No libvulkan.so.1: the binding's OSError becomes 'vulkan: unavailable (...)'."""
    import builtins

    real_import = builtins.__import__

    def no_loader(name, *args, **kwargs):
        if name == "vulkan":
            raise OSError("libvulkan.so.1: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(vulkan_instance, "_vk", None)
    monkeypatch.setattr(builtins, "__import__", no_loader)
    with pytest.raises(DeviceUnavailableError, match=r"vulkan: unavailable \(no Vulkan loader"):
        vulkan_instance.binding()


# ----- uploads and downloads ---------------------------------------------------------------

POLICIES = [
    "staged",
    "staged:chunk=4000,readers=3",
    "streaming:chunk=1000,slots=3,readers=2,queues=2",
    "streaming:chunk=64KiB,slots=2,readers=1",
    "streaming:chunk=64MiB,slots=1,readers=1",
    "import",
    "import:piece=8KiB",
    "import:fallback=staged",
    "direct",
    "auto",
]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", ["overlapped", "serial"])
def test_upload_every_policy_byte_exact(device, model, policy, mode):
    path, tensors = model
    with halsim.upload(path, device, policy, mode=mode, verify=True) as done:
        _check(done, tensors)
        assert done.report.device == "vulkan:0"
        assert done.report.bytes == sum(a.nbytes for a in tensors.values())


@pytest.mark.parametrize("policy", ["streaming:chunk=777,slots=2", "staged:chunk=500", "streaming"])
@pytest.mark.parametrize("upload_policy", ["streaming:chunk=4KiB,slots=2", "import"])
def test_download_round_trip(device, model, tmp_path, policy, upload_policy):
    path, _ = model
    with halsim.upload(path, device, upload_policy) as done:
        report = done.download(tmp_path / "copy.safetensors", policy)
    assert (tmp_path / "copy.safetensors").read_bytes() == path.read_bytes()
    assert report.direction == "download"
    assert not os.path.exists(tmp_path / "copy.safetensors.partial")


def test_zero_length_tensors(device, tmp_path):
    path = tmp_path / "empty.safetensors"
    tensors = {"a": np.zeros((0,), np.float32), "b": np.zeros((3, 0), np.int8), "c": np.arange(3, dtype=np.uint8)}
    write_safetensors(path, tensors)
    for policy in ["streaming", "staged", "import", "import:piece=4KiB"]:
        with halsim.upload(path, device, policy, verify=True) as done:
            _check(done, tensors)
            assert done.buffers()["a"].handles == []  # no Vulkan object for an empty tensor
    only_empty = tmp_path / "only-empty.safetensors"
    write_safetensors(only_empty, {"a": np.zeros((0,), np.float32)})
    for policy in ["streaming", "staged", "import"]:
        with halsim.upload(only_empty, device, policy, verify=True) as done:
            assert done.buffers()["a"].to_bytes() == b""
            assert done.tensors()["a"].shape == (0,)


def test_unaligned_offsets_and_chunks(device, tmp_path):
    """Tensors at odd file offsets, chunks that split them at odd places, odd slot offsets."""
    rng = np.random.default_rng(3)
    tensors = {f"t{i}": rng.integers(0, 255, 1 + i * 997).astype(np.uint8) for i in range(9)}
    path = tmp_path / "odd.safetensors"
    write_safetensors(path, tensors)
    index = halsim.formats.read_index(path)
    assert any(t.offset % 2 for t in index.tensors)
    for policy in ["streaming:chunk=333,slots=3,readers=3", "staged:chunk=777", "import", "import:piece=4KiB"]:
        with halsim.upload(path, device, policy, verify=True) as done:
            _check(done, tensors)


# ----- import ----------------------------------------------------------------------------

def test_import_in_place_makes_no_copies(device, model):
    if not device.caps.import_in_place:
        pytest.skip(f"{device.info.name} does not use host memory in place")
    path, tensors = model
    with halsim.upload(path, device, "import", verify=True) as done:
        plan = done.plan
        assert plan.policy.kind == "import"
        assert plan.count(Op.COPY, Op.COPY_IMPORTED, Op.READ) == 0
        assert plan.count(Op.BIND) == sum(1 for a in tensors.values() if a.nbytes)
        assert done.report.copies == 0
        assert done.report.peak_staging_bytes == 0
        # The tensors are the file's mapped pages, not copies of them.
        mapping = done.file.host_view()
        lo, hi = address_of(mapping), address_of(mapping) + len(mapping)
        for name, array in done.tensors().items():
            if array.nbytes:
                assert lo <= array.ctypes.data < hi, name
        _check(done, tensors)


def _as_dedicated(dev):
    """The same driver, planned for as a discrete GPU: imports are copied from."""
    dev.caps = dev.caps.model_copy(update={"kind": "dedicated", "unified_memory": False})
    return dev


def test_dedicated_import_copies_from_imported_memory(model):
    path, tensors = model
    dev = _as_dedicated(vulkan.VulkanDevice(0))
    if not dev.caps.can_import_host:
        dev.close()
        pytest.skip(f"the device cannot import mapped files: {dev.import_problem}")
    try:
        for policy in ["import", "import:piece=8KiB"]:
            with halsim.upload(path, dev, policy, verify=True) as done:
                assert done.plan.policy.kind == "import"
                assert done.plan.count(Op.COPY_IMPORTED) > 0 and done.plan.count(Op.BIND) == 0
                _check(done, tensors)
        assert not _leaks(dev, {"command_pool": 1, "fence": 1})
    finally:
        dev.close()


def test_unaligned_import_falls_back(device, model):
    """Host memory not aligned to minImportedHostPointerAlignment is never imported."""
    path, tensors = model
    data = path.read_bytes()
    backing = np.zeros(len(data) + 2 * mmap.PAGESIZE, np.uint8)
    start = (-address_of(memoryview(backing))) % mmap.PAGESIZE + 8  # 8 bytes past a page
    backing[start : start + len(data)] = np.frombuffer(data, np.uint8)
    source = MemoryFile(memoryview(backing)[start : start + len(data)], name="unaligned.safetensors")
    index = halsim.formats.read_index(path)
    with halsim.upload(source, device, "import", index=index, verify=True) as done:
        assert done.plan.policy.kind == "streaming"
        # A driver that refuses file imports (the probe) falls back before alignment matters.
        why = "aligned" if device.caps.can_import_host else "cannot import"
        assert any(why in note for note in done.plan.notes), done.plan.notes
        _check(done, tensors)
    # The device checks alignment itself: drivers accept an unaligned pointer silently.
    view = memoryview(backing)[start : start + 2 * mmap.PAGESIZE]
    with pytest.raises(ImportRefusedError, match="minImportedHostPointerAlignment"):
        device.logical.import_host(view, mmap.PAGESIZE, "an unaligned range")
    aligned = memoryview(backing)[start - 8 : start - 8 + 2 * mmap.PAGESIZE]
    with pytest.raises(ImportRefusedError, match="multiples"):
        device.logical.import_host(aligned, mmap.PAGESIZE + 100, "an odd length")


def test_aligned_host_memory_imports(device, model):
    """A MemoryFile over page-aligned anonymous memory imports like a mapped file."""
    path, tensors = model
    data = path.read_bytes()
    backing = mmap.mmap(-1, len(data))
    backing[:] = data
    source = MemoryFile(memoryview(backing), name="anonymous.safetensors")
    index = halsim.formats.read_index(path)
    with halsim.upload(source, device, "import", index=index, verify=True) as done:
        assert done.plan.policy.kind == ("import" if device.caps.can_import_host else "streaming")
        _check(done, tensors)
    source.close()
    backing.close()  # raises BufferError if the device still held a view of the memory


def test_anonymous_memory_imports_without_probe(model):
    """Drivers that refuse mapped files may still import anonymous memory (trust it: probe=False)."""
    path, tensors = model
    dev = _as_dedicated(vulkan.VulkanDevice(0, probe=False))
    if not dev.caps.can_import_host:
        dev.close()
        pytest.skip("no VK_EXT_external_memory_host")
    data = path.read_bytes()
    backing = mmap.mmap(-1, len(data))
    backing[:] = data
    source = MemoryFile(memoryview(backing), name="anonymous.safetensors")
    try:
        with halsim.upload(source, dev, "import:piece=64KiB", index=halsim.formats.read_index(path),
                           verify=True) as done:
            assert done.plan.count(Op.COPY_IMPORTED) > 0
            _check(done, tensors)
        assert not _leaks(dev, {"command_pool": 1, "fence": 1})
    finally:
        dev.close()
        source.close()
        backing.close()


def test_refused_file_import_probe_falls_back(model, monkeypatch):
    """A driver that refuses mapped files (Mesa issue 9251) plans the declared fallback."""
    path, tensors = model
    monkeypatch.setattr(vulkan, "_run_probe",
                        lambda index: "the driver refuses to import a mapped probe file (simulated)")
    monkeypatch.setattr(vulkan, "_probe_results", {})
    dev = vulkan.VulkanDevice(0)
    try:
        assert not dev.caps.can_import_host
        assert "simulated" in dev.import_problem
        with halsim.upload(path, dev, "import:fallback=staged", verify=True) as done:
            assert done.plan.policy.kind == "staged"
            assert any("cannot import" in note for note in done.plan.notes)
            _check(done, tensors)
    finally:
        dev.close()


def test_probe_passes_on_lavapipe(device):
    if device.info.device_type != 4:
        pytest.skip("lavapipe only")
    assert device.logical.probe_file_import() is None
    assert vulkan._run_probe(device.index) is None  # the same probe, in a child process


def test_import_refused_at_run_time_falls_back(device, model, monkeypatch):
    """A refusal the probe did not predict: everything is freed and the fallback runs."""
    path, tensors = model
    if not device.caps.can_import_host:
        pytest.skip(f"the device cannot import mapped files: {device.import_problem}")
    refused = []

    def refuse(self, view, length, what):
        refused.append(what)
        raise ImportRefusedError(f"cannot import {what} (injected)", device=self.name)

    monkeypatch.setattr(vulkan_driver.LogicalDevice, "import_host", refuse)
    try:
        done = halsim.upload(path, device, "import:fallback=staged", verify=True)
    except ImportRefusedError as err:
        # A halsim.upload without run-time fallback: the refusal itself, nothing left allocated
        # (the autouse fixture checks that).
        assert refused and "injected" in str(err)
        return
    with done:
        assert refused
        assert done.plan.policy.kind == "staged"
        assert any("injected" in note for note in done.plan.notes)
        _check(done, tensors)


# ----- large buffers, large files ------------------------------------------------------------

def test_buffers_split_over_allocations(model, tmp_path):
    """Buffers, staging slots and imports bigger than one allocation become several."""
    path, tensors = model
    dev = vulkan.VulkanDevice(0, max_piece=4096)
    try:
        assert dev.logical.max_piece == 4096
        policies = ["streaming:chunk=4KiB,slots=2", "streaming:chunk=10000,slots=3",  # slots > one piece
                    "staged", "import", "import:piece=8KiB"]
        for policy in policies:
            with halsim.upload(path, dev, policy, verify=True) as done:
                big = done.buffers()["big"]
                if done.plan.policy.kind != "import" or not dev.caps.import_in_place:
                    assert len(big.handles) == -(-big.size // 4096)
                _check(done, tensors)
                done.download(tmp_path / "copy.safetensors", "streaming:chunk=5000,slots=2")
                assert (tmp_path / "copy.safetensors").read_bytes() == path.read_bytes()
        _as_dedicated(dev)
        with halsim.upload(path, dev, "import:piece=12KiB", verify=True) as done:
            assert done.plan.count(Op.COPY_IMPORTED) > 0 or not dev.caps.can_import_host
            _check(done, tensors)
        assert not _leaks(dev, {"command_pool": 1, "fence": 1})
    finally:
        dev.close()


def test_copy_regions_cross_pieces():
    a, b = object(), object()
    src = vulkan_extent.Extent([vulkan_extent.Piece(a, 10, 5), vulkan_extent.Piece(b, 0, 5)])
    c, d = object(), object()
    dst = vulkan_extent.Extent([vulkan_extent.Piece(c, 0, 3), vulkan_extent.Piece(d, 100, 20)])
    groups = vulkan_extent.copy_regions(src, 1, dst, 0, 8)
    assert groups == [(a, c, [(11, 0, 3)]), (a, d, [(14, 100, 1)]), (b, d, [(0, 101, 4)])]
    assert sum(n for _, _, r in groups for _, _, n in r) == 8
    with pytest.raises(HalsimError):
        list(src.locate(5, 6))


def test_offsets_beyond_4gib(device, tmp_path):
    """Tensors past 4 GiB in a sparse file: only they are uploaded, so buffers stay small."""
    path = tmp_path / "huge.bin"
    base = (4 << 30) + 12345  # unaligned, past 2**32
    rng = np.random.default_rng(5)
    parts = [rng.integers(0, 255, n).astype(np.uint8) for n in (5000, 1, 70_000, 3)]
    tensors, offset = [], base
    with open(path, "wb") as f:
        for i, array in enumerate(parts):
            f.seek(offset)
            f.write(array.tobytes())
            tensors.append(TensorInfo(f"far.{i}", "U8", (array.size,), offset, array.size))
            offset += array.size + 3 * i  # gaps between some of them
        f.truncate(offset + 100)
    index = ParamIndex(str(path), "raw", offset + 100, tuple(tensors))
    for policy in ["streaming:chunk=16KiB,slots=2", "staged", "import", "import:piece=16KiB"]:
        with halsim.upload(path, device, policy, index=index, verify=True) as done:
            got = done.tensors()
            for info, array in zip(tensors, parts):
                assert done.buffers()[info.name].to_bytes() == array.tobytes()
                np.testing.assert_array_equal(_array(got[info.name], array), array)


# ----- failures and cancels ------------------------------------------------------------------

def test_cancel_leaves_nothing_allocated(device, model):
    path, _ = model
    for policy in ["streaming:chunk=1000,slots=2,readers=1", "import:piece=4KiB", "staged:chunk=1000"]:
        token = CancelToken()
        with pytest.raises(UploadCancelled):
            halsim.upload(path, device, policy, cancel=token, progress=lambda done, total: token.cancel())
        assert device.live_objects()["memory"] == 0


def test_copy_error_leaves_nothing_allocated(device, model, monkeypatch):
    path, _ = model
    calls = {"n": 0}
    real = vulkan.VulkanExecution.copy_in

    def flaky(self, step, source, buffer, offset):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("injected copy failure")
        return real(self, step, source, buffer, offset)

    monkeypatch.setattr(vulkan.VulkanExecution, "copy_in", flaky)
    with pytest.raises(HalsimError, match="injected copy failure"):
        halsim.upload(path, device, "streaming:chunk=2000,slots=2")


def test_allocation_error_leaves_nothing_allocated(device, model, monkeypatch):
    path, _ = model
    calls = {"n": 0}
    real = vulkan_driver.LogicalDevice.allocate_device

    def failing(self, size, what):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OutOfMemoryError(f"cannot allocate {size} bytes for {what} (injected)", device=self.name)
        return real(self, size, what)

    monkeypatch.setattr(vulkan_driver.LogicalDevice, "allocate_device", failing)
    with pytest.raises(OutOfMemoryError, match="injected"):
        halsim.upload(path, device, "streaming")


def test_staging_error_leaves_nothing_allocated(device, model, monkeypatch):
    path, _ = model

    def failing(self, size, what):
        raise OutOfMemoryError(f"cannot allocate {size} bytes for {what} (injected)", device=self.name)

    monkeypatch.setattr(vulkan_driver.LogicalDevice, "allocate_host", failing)
    with pytest.raises(OutOfMemoryError, match="staging"):
        halsim.upload(path, device, "streaming")


def test_failed_download_leaves_no_file(device, model, tmp_path, monkeypatch):
    path, _ = model
    with halsim.upload(path, device, "streaming") as done:
        def broken(self, step, buffer, offset, target):
            raise RuntimeError("injected copy failure")

        monkeypatch.setattr(vulkan.VulkanExecution, "copy_out", broken)
        with pytest.raises(HalsimError, match="injected copy failure"):
            done.download(tmp_path / "copy.safetensors")
    assert not os.path.exists(tmp_path / "copy.safetensors")
    assert not os.path.exists(tmp_path / "copy.safetensors.partial")


# ----- validation layer ----------------------------------------------------------------------

def _validation_enabled() -> bool:
    return "VK_LAYER_KHRONOS_validation" in os.environ.get("VK_INSTANCE_LAYERS", "")


@pytest.mark.skipif(not _validation_enabled(), reason="set VK_INSTANCE_LAYERS=VK_LAYER_KHRONOS_validation")
def test_validation_messages_are_captured(device):
    """The messenger really hears the layer: a zero-size VkBuffer is invalid usage."""
    instance = vulkan_instance.Instance.get()
    before = len(instance.messages)
    buffer = device.logical.create_buffer(0)
    device.logical.destroy_buffer(buffer)
    with instance._messages_lock:
        heard = instance.messages[before:]
        del instance.messages[before:]
    assert any("size" in m for m in heard), heard


def test_close_and_reopen(model):
    """close() releases the VkDevice; the same device object reopens on its next use,
    and a device with buffers still alive on it is not torn down under them."""
    path, tensors = model
    dev = vulkan.VulkanDevice(0)
    try:
        done = halsim.upload(path, dev, "streaming")
        first = dev.logical
        dev.close()  # buffers alive: nothing happens
        assert first.handle is not None
        done.free()
        dev.close()
        assert first.handle is None
        with halsim.upload(path, dev, "streaming", verify=True) as again:
            assert dev.logical is not first and dev.logical.handle is not None
            _check(again, tensors)
    finally:
        dev.close()
