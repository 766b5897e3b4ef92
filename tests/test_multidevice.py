"""Sharded uploads end to end: one request over several devices, one Engine driving them all.

On the simulator (dgx-h100: eight H100s, pairs behind PCIe switches): every
byte reaches each device exactly once, each device stages within the policy's
bound, and the shared parts of the machine (switch uplinks, host memory,
reader threads) slow the GPUs in the direction the model implies. Times here
are simulated seconds, compared with each other, never with a clock.

On several CPU devices at once, for real: every policy kind is byte-exact in
both shardings, row slices reassemble each tensor, a download of a sharded
upload reproduces the file, and a failure on one device mid-run leaves nothing
allocated on any device.
"""

from __future__ import annotations

import os
import shutil
from collections import defaultdict

import numpy as np
import pytest

import halsim
from halsim.engine import Engine
from halsim.errors import (
    DeviceError, HalsimError, OutOfMemoryError,
)
from halsim.faults import EXPECTED_ERRORS, ALLOC_FAULTS, STEP_FAULTS, Fault, FaultInjector
from halsim.files import open_file
from halsim.formats import read_index, write_safetensors
from halsim.invariants import check_clean, check_plan, check_run, check_trace
from halsim.plan import DELIVERING_OPS, Op
from halsim.platform import load_platform
from halsim.policies import parse_policy
from halsim.request import SourceInfo, request_from_tensors
from halsim.sim import Simulator
from halsim.trace import STAGING, Trace
from halsim.workloads import load_workload

from conformance.counting import CountingCpuDevice

MiB = 1 << 20

# ----------------------------------------------------------------------------- helpers


def delivered_once(plan) -> dict[int, int]:
    """Bytes delivered to each device, after checking, from the plan alone, that every
    buffer byte arrives exactly once, from its own file byte, by a step on its own device."""
    request = plan.request
    pieces: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for step in plan.steps:
        if step.op in DELIVERING_OPS:
            owner = request.buffers[step.buffer].device
            assert step.device == owner, f"{step.describe(request)}: its buffer lives on device {owner}"
            pieces[step.buffer].append((step.buffer_offset, step.length, step.file_offset))
    per_device: dict[int, int] = defaultdict(int)
    for t in request.transfers:  # request_from_tensors: one transfer fills each buffer
        spec = request.buffers[t.buffer]
        at = 0
        for offset, length, file_offset in sorted(pieces.pop(t.buffer, [])):
            assert offset == at, f"buffer {spec.name!r}: a gap or an overlap at byte {at}"
            assert file_offset - offset == t.file_offset - t.buffer_offset, f"buffer {spec.name!r}: bytes from the wrong place"
            at += length
        assert at == t.length == spec.size, f"buffer {spec.name!r}: {at} of {spec.size} bytes delivered"
        per_device[spec.device] += at
    assert not pieces, f"bytes delivered to buffers no transfer fills: {sorted(pieces)}"
    return dict(per_device)


def most_at_once(spans) -> int:
    """The most of ``spans`` running at one instant (one ending as another starts do not overlap)."""
    events = sorted([(s.end, -1) for s in spans] + [(s.start, 1) for s in spans])
    level = peak = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    return peak


def sim_run(platform, gpus, policy: str, workload: str = "iree-1gib", shard: str = "rows"):
    """An upload of ``workload`` over the GPUs ``gpus`` of one simulated machine."""
    sim = Simulator(platform)
    targets = [sim.device(g) for g in gpus]
    request = load_workload(workload).request(devices=len(targets), shard=shard)
    plan = check_plan(parse_policy(policy).plan(request, [d.caps for d in targets]), [d.caps for d in targets])
    return sim, Engine().run(plan, None, targets)


def with_host(platform, **fields):
    return platform.model_copy(update={"host": platform.host.model_copy(update=fields)})


def machine_is_empty(sim: Simulator) -> bool:
    machine = sim.machine
    return machine.host_memory.used == 0 and all(pool.used == 0 for pool in machine.device_memory)


# ----------------------------------------------------------------------------- the simulator

SIM_POLICIES = ["streaming:chunk=16MiB,slots=4,readers=4,queues=2", "staged", "import:piece=64MiB,importers=2",
                "direct:chunk=16MiB,readers=4", "auto"]


@pytest.mark.parametrize("policy", SIM_POLICIES)
@pytest.mark.parametrize("shard", ["whole", "rows"])
@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_sim_every_byte_once_per_device(gpus, shard, policy):
    sim, result = sim_run("dgx-h100", range(gpus), policy, workload="gpt2", shard=shard)
    request = result.plan.request
    assert request.devices == tuple(range(gpus))
    want = defaultdict(int)
    for b in request.buffers:
        want[b.device] += b.size
    assert delivered_once(result.plan) == dict(want)
    check_run(result)  # the trace too: dependencies, slot reuse, memory bounds, only the output left
    # Every GPU did its own share, on its own lanes.
    assert {s.device for s in result.trace.spans if s.step >= 0} == set(range(gpus))
    for d in range(gpus):
        assert result.trace.level(f"device/{d}") == want[d]
    result.free()
    assert machine_is_empty(sim)


@pytest.mark.parametrize("shard", ["whole", "rows"])
@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_sim_real_bytes_through_the_api(tmp_path, gpus, shard):
    """``sim:`` devices named in ``devices=`` share one machine and move the file's real bytes."""
    rng = np.random.default_rng(gpus)
    tensors = {f"w{i}": rng.standard_normal((i * 5 + 1, 33)).astype(np.float32) for i in range(12)}
    path = tmp_path / "m.safetensors"
    write_safetensors(path, tensors)
    names = [f"sim:dgx-h100:{g}" for g in range(gpus)]
    for policy in ("streaming:chunk=4KiB,slots=3,readers=3,queues=2", "import:piece=8KiB", "direct:chunk=3000"):
        with halsim.upload(path, devices=names, shard=shard, policy=policy, verify=True) as done:
            assert len({e.device.simulator for e in done.result.executions.values()}) == 1
            assert delivered_once(done.plan) == {
                d: sum(b.size for b in done.plan.request.buffers if b.device == d) for d in range(gpus)}
            check_run(done.result)


@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_sim_staging_per_device_within_the_policy_bound(gpus):
    slots, chunk, readers = 3, 4 * MiB, 5
    policy = f"streaming:chunk={chunk},slots={slots},readers={readers},queues=2"
    sim, result = sim_run("dgx-h100", range(gpus), policy)
    plan, trace = result.plan, result.trace
    assert sorted(p.device for p in plan.pools) == list(range(gpus)), "one staging pool per device"
    for pool in plan.pools:
        assert pool.slots <= slots and pool.slot_bytes <= chunk
    # The pools are host memory of one machine: the staging counter is their sum, never more.
    assert trace.peak(STAGING) == plan.staging_bytes <= gpus * slots * chunk
    reads = [s for s in trace.spans if s.lane.startswith("read/")]
    for d in range(gpus):
        mine = [s for s in reads if s.device == d]
        assert mine and most_at_once(mine) <= plan.pool(d).slots, f"device {d} filled more slots than it has"
    # The reader limit is global: all GPUs together never read on more threads than the policy's readers.
    assert most_at_once(reads) <= readers
    assert most_at_once(reads) > max(most_at_once([s for s in reads if s.device == d]) for d in range(gpus)), \
        "reads of different GPUs overlap"
    check_run(result)
    result.free()
    assert machine_is_empty(sim)


def test_sim_staged_pool_per_device_holds_only_its_share():
    sim, result = sim_run("dgx-h100", range(4), "staged", workload="gpt2", shard="whole")
    for pool in result.plan.pools:
        assert pool.slots == 1
        assert pool.bytes == sum(b.size for b in result.plan.request.buffers if b.device == pool.device)
    assert result.trace.peak(STAGING) == result.plan.staging_bytes
    result.free()
    assert machine_is_empty(sim)


@pytest.mark.parametrize("policy", ["import", "streaming:chunk=16MiB,slots=16,readers=16,queues=2"])
def test_sim_two_gpus_behind_one_switch_take_longer(policy):
    """GPUs 0 and 1 share switch 0's uplink; GPUs 0 and 2 each have their own."""
    _, same = sim_run("dgx-h100", (0, 1), policy)
    _, apart = sim_run("dgx-h100", (0, 2), policy)
    assert same.plan.request.total_bytes == apart.plan.request.total_bytes
    assert same.seconds > apart.seconds

    def bounds(result) -> set[str]:
        return {k for step in result.trace.meta["sim_bound"].values() for k in step}

    assert "switch/pcie-switch-0/h2d" in bounds(same)
    assert not any(k.startswith("switch/") for k in bounds(apart))


def test_sim_four_gpus_on_two_switches_take_longer_than_on_four():
    policy = "streaming:chunk=16MiB,slots=16,readers=16,queues=2"
    _, packed = sim_run("dgx-h100", (0, 1, 2, 3), policy)
    _, spread = sim_run("dgx-h100", (0, 2, 4, 6), policy)
    assert packed.seconds > spread.seconds


def test_sim_host_memory_bandwidth_is_shared_by_the_gpus():
    """Copies of GPUs on separate switches still share host DRAM: on a host whose DRAM
    binds, more GPUs gain less, and all of them together never beat the DRAM."""
    ample = load_platform("dgx-h100")
    tight = with_host(ample, total_bandwidth=30e9)
    policy = "import"  # DMA from registered memory: 1 byte of DRAM traffic per byte, no reader threads

    def seconds(platform, gpus):
        return sim_run(platform, gpus, policy)[1].seconds

    a1, a2, a4 = (seconds(ample, g) for g in [(0,), (0, 2), (0, 2, 4, 6)])
    t1, t2, t4 = (seconds(tight, g) for g in [(0,), (0, 2), (0, 2, 4, 6)])
    assert a4 < a2 < a1 and t4 <= t2 < t1
    assert t1 >= a1 and t2 > a2 and t4 > a4
    assert a2 / a4 > t2 / t4, "a second pair of GPUs gains less where host memory binds"
    total = load_workload("iree-1gib").total_bytes
    assert total / t4 <= tight.host.total_bandwidth


def test_sim_readers_are_shared_so_streaming_gains_little_from_more_gpus():
    """The reader limit is the run's, not a GPU's: reads bound a page-cached streaming
    upload, so spreading it over more GPUs cannot beat readers x one thread's rate."""
    platform = load_platform("dgx-h100")
    readers = 4
    policy = f"streaming:chunk=16MiB,slots=8,readers={readers},queues=2"
    for gpus in [(0,), (0, 2), (0, 2, 4, 6)]:
        _, result = sim_run(platform, gpus, policy)
        reading = [s for s in result.trace.spans if s.lane.startswith("read/")]
        busy = max(s.end for s in reading) - min(s.start for s in reading)
        assert result.plan.request.total_bytes / busy <= readers * platform.storage.page_cache_bandwidth * 1.0001


def test_sim_staging_of_all_gpus_comes_out_of_one_host_memory():
    """One ring fits the host, two do not: the second GPU's staging fails, and the first
    GPU's buffers and staging are given back too."""
    ring = 16 * 16 * MiB
    platform = with_host(load_platform("dgx-h100"), capacity=ring + ring // 2)
    policy = "streaming:chunk=16MiB,slots=16,readers=8"
    sim, one = sim_run(platform, (0,), policy)
    check_run(one)
    one.free()
    assert machine_is_empty(sim)

    sim = Simulator(platform)
    targets = [sim.device(0), sim.device(2)]
    request = load_workload("iree-1gib").request(devices=2)
    plan = parse_policy(policy).plan(request, [d.caps for d in targets])
    trace = Trace()
    with pytest.raises(OutOfMemoryError, match="host memory"):
        Engine().run(plan, None, targets, trace=trace)
    check_clean(trace, "a failed staging allocation on the second GPU")
    assert machine_is_empty(sim)


@pytest.mark.parametrize("kind", ["copy_error", "read_error", "device_oom", "staging_oom", "cancel"])
def test_sim_fault_on_one_gpu_leaves_the_machine_empty(kind):
    sim = Simulator("dgx-h100")
    targets = sim.devices[:4]
    request = load_workload("gpt2").request(devices=4, shard="rows")
    plan = parse_policy("streaming:chunk=16MiB,slots=4,readers=4,queues=2").plan(request, [d.caps for d in targets])
    injector = OnDevice(3, Fault(kind, index=0 if kind == "staging_oom" else 1))  # one staging pool per GPU
    trace = Trace()
    with pytest.raises(EXPECTED[kind]):
        Engine().run(plan, None, targets, trace=trace, faults=injector, cancel=injector.cancel)
    assert injector.fired and all("device 3" in f.what or "sim:dgx-h100:3" in f.what for f in injector.fired)
    check_clean(trace, f"{kind} on GPU 3")
    check_trace(plan, trace, complete=False)
    assert machine_is_empty(sim)


# ----------------------------------------------------------------------------- several CPU devices, for real


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(11)
    tensors = {f"layer.{i}.weight": rng.standard_normal((i * 7 + 5, 13)).astype(np.float32) for i in range(9)}
    tensors["embed"] = rng.standard_normal((257, 24)).astype(np.float16)  # the biggest: dealt first
    tensors["bias"] = rng.integers(-100, 100, 37).astype(np.int8)  # odd size: unaligned offsets after it
    tensors["one_row"] = rng.standard_normal((1, 9)).astype(np.float32)  # fewer rows than devices
    tensors["empty"] = np.zeros((0, 3), np.float32)
    tensors["scalar"] = np.array(2.5, np.float64)
    path = tmp_path_factory.mktemp("multidevice") / "model.safetensors"
    write_safetensors(path, tensors)
    return path, tensors


# One of each policy kind, and knobs that make a small file take many steps.
CPU_POLICIES = ["staged", "staged:chunk=700", "streaming:chunk=500,slots=2,readers=3,queues=2",
                "streaming:chunk=64MiB,slots=1,readers=1", "import", "import:piece=4KiB,importers=2,queues=2",
                "direct:chunk=600,readers=2", "auto"]


def rows_of(array: np.ndarray, devices: int, d: int) -> np.ndarray:
    """What ``shard="rows"`` gives device ``d``: its slice of the first dimension."""
    if array.ndim == 0:
        return array if d == devices - 1 else array.reshape(-1)[:0]
    n = array.shape[0]
    return array[n * d // devices : n * (d + 1) // devices]


@pytest.mark.parametrize("policy", CPU_POLICIES)
@pytest.mark.parametrize("shard", ["whole", "rows"])
@pytest.mark.parametrize("n", [2, 3])
def test_cpu_devices_byte_exact(model, policy, shard, n):
    path, tensors = model
    for mode in ("overlapped", "serial"):
        with halsim.upload(path, devices=["cpu"] * n, shard=shard, policy=policy, mode=mode, verify=True) as done:
            buffers = done.buffers()
            assert done.result.device_names == ["cpu"] * len(done.plan.request.devices)
            check_run(done.result)
            delivered_once(done.plan)
            if shard == "whole":
                assert set(buffers) == set(tensors)
                for name, array in tensors.items():
                    assert buffers[name].to_bytes() == array.tobytes(), name
                # Each tensor on one device; dealt biggest first, so loads differ by at most one tensor.
                loads = [sum(b.size for b in done.plan.request.buffers if b.device == d) for d in range(n)]
                assert min(loads) > 0 and max(loads) - min(loads) <= max(a.nbytes for a in tensors.values())
            else:
                assert set(buffers) == {f"{name}@{d}" for name in tensors for d in range(n)}
            assert done.report.bytes == sum(a.nbytes for a in tensors.values())


@pytest.mark.parametrize("policy", ["streaming:chunk=300,slots=2,readers=2", "import", "direct:chunk=256", "staged"])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_cpu_rows_sharding_reassembles_each_tensor(model, policy, n):
    path, tensors = model
    with halsim.upload(path, devices=["cpu"] * n, shard="rows", policy=policy, verify=True) as done:
        specs = {b.name: b for b in done.plan.request.buffers}
        views = done.tensors()
        for name, array in tensors.items():
            pieces = [f"{name}@{d}" for d in range(n)]
            assert [specs[p].device for p in pieces] == list(range(n))
            # Byte for byte, the slices in device order are the tensor.
            assert b"".join(done.buffers()[p].to_bytes() for p in pieces) == array.tobytes(), name
            for d, p in enumerate(pieces):
                want = rows_of(array, n, d)
                assert specs[p].shape == want.shape and specs[p].size == want.nbytes
                got = views[p]
                if want.size:
                    assert got.dtype == array.dtype
                    np.testing.assert_array_equal(got, want)
            if array.ndim:
                np.testing.assert_array_equal(np.concatenate([views[p].reshape(rows_of(array, n, d).shape)
                                                              for d, p in enumerate(pieces)]), array)


@pytest.mark.parametrize("upload_policy", ["streaming:chunk=500,slots=2,readers=2", "import", "staged", "direct"])
@pytest.mark.parametrize("download_policy", [None, "streaming:chunk=333,slots=3,readers=2,queues=2", "staged:chunk=900"])
@pytest.mark.parametrize("shard", ["whole", "rows"])
def test_cpu_download_of_a_sharded_upload_reproduces_the_file(model, tmp_path, upload_policy, download_policy, shard):
    path, _ = model
    target = tmp_path / "copy.safetensors"
    with halsim.upload(path, devices=["cpu"] * 3, shard=shard, policy=upload_policy) as done:
        report = done.download(target, download_policy)
        assert report.direction == "download" and report.bytes == done.report.bytes
        assert report.device == ", ".join(done.result.device_names)
        done.verify()  # the upload's buffers are untouched by the download
    assert target.read_bytes() == path.read_bytes()
    assert [t.name for t in read_index(target).tensors] == [t.name for t in read_index(path).tensors]
    assert not os.path.exists(str(target) + ".partial")


def test_cpu_per_device_staging_within_the_policy_bound(model):
    path, _ = model
    slots, chunk = 2, 400
    with halsim.upload(path, devices=["cpu"] * 3, shard="rows",
                       policy=f"streaming:chunk={chunk},slots={slots},readers=3") as done:
        plan = done.plan
        assert sorted(p.device for p in plan.pools) == [0, 1, 2]
        assert all(p.slots <= slots and p.slot_bytes <= chunk for p in plan.pools)
        assert done.report.peak_staging_bytes <= plan.staging_bytes <= 3 * slots * chunk
        reads = [s for s in done.report.trace.spans if s.op == "read"]
        assert most_at_once(reads) <= 3  # the engine's reader limit covers every device


# --- a failure on one device mid-run -------------------------------------------------------

EXPECTED = {k: v for k, v in EXPECTED_ERRORS.items() if k != "write_error"}  # uploads only


class OnDevice(FaultInjector):
    """A FaultInjector that counts and fires only on the steps and allocations of one
    device of the run, so a fault lands on that device whatever the interleaving."""

    def __init__(self, device: int, *faults: Fault):
        super().__init__(*faults)
        self.device = device

    def before(self, step, execution) -> None:
        if execution.index == self.device:
            super().before(step, execution)

    def on_allocate(self, kind, nbytes, execution) -> None:
        if execution.index == self.device:
            super().on_allocate(kind, nbytes, execution)


def events_on(plan, device: int, kind: str) -> int:
    """How many times ``kind`` can fire on ``device`` in a run of ``plan``."""
    if kind in ALLOC_FAULTS:
        if kind == "staging_oom":
            return 1 if plan.pool(device) is not None else 0
        bound = {s.buffer for s in plan.steps if s.op is Op.BIND}
        return sum(1 for i, b in enumerate(plan.request.buffers) if b.device == device and i not in bound)
    return sum(1 for s in plan.steps if s.device == device and s.op in STEP_FAULTS[kind])


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


FAULT_POLICIES = ["streaming:chunk=500,slots=2,readers=2,queues=2", "staged:chunk=1500", "import:piece=4KiB",
                  "direct:chunk=700,readers=2"]


@pytest.mark.parametrize("policy", FAULT_POLICIES)
@pytest.mark.parametrize("kind", sorted(EXPECTED))
@pytest.mark.parametrize("shard", ["whole", "rows"])
def test_cpu_failure_on_one_device_leaves_nothing_on_any(model, tmp_path, policy, kind, shard):
    """Every position of the fault on device 1 of 3: a clear error (or the import's declared
    fallback, or a cancel that came too late), no device holding anything, no file left open."""
    source, tensors = model
    path = tmp_path / "m.safetensors"
    shutil.copy(source, path)
    with open_file(path, "r") as probe:
        request = request_from_tensors(SourceInfo.of(probe), read_index(path).tensors, devices=3, shard=shard)
        plan = parse_policy(policy).plan(request, [CountingCpuDevice().caps] * 3)
    total = events_on(plan, 1, kind)
    positions = sorted({0, total // 2, max(0, total - 1), total})  # first, mid-run, last, and none at all
    for index in positions:
        shutil.copy(source, path)  # afresh: a short read truncates it
        devices = [CountingCpuDevice() for _ in range(3)]
        injector = OnDevice(1, Fault(kind, index))
        before = _open_fds()
        try:
            done = halsim.upload(path, devices=devices, shard=shard, policy=policy, faults=injector,
                                 cancel=injector.cancel, verify=True)
        except HalsimError as err:
            assert injector.fired, f"{kind}@{index} never fired, yet the upload failed: {err!r}"
            assert all("on device 1" in f.what or "allocation" in f.what for f in injector.fired)
            assert isinstance(err, EXPECTED[kind]), repr(err)
            assert str(path) in str(err) or "cpu" in str(err), str(err)
        else:
            assert index == total or kind in ("cancel", "import_refused"), f"{kind}@{index} did not stop the upload"
            with done:
                check_run(done.result)
                for name, array in tensors.items():
                    got = b"".join(b.to_bytes() for n, b in done.buffers().items() if n.split("@")[0] == name)
                    assert got == array.tobytes(), name
        for d, device in enumerate(devices):
            assert device.nothing_live(), f"{kind}@{index}: device {d} still holds {device.live}"
        assert _open_fds() == before, "the upload left a file open"


@pytest.mark.parametrize("kind", ["copy_error", "read_error", "device_oom", "staging_oom", "cancel"])
def test_engine_failure_on_one_device_trace_is_clean(model, kind):
    """The same through the Engine with a Trace: every counter of every device back to zero."""
    path, _ = model
    with open_file(path, "r") as file:
        request = request_from_tensors(SourceInfo.of(file), read_index(path).tensors, devices=2, shard="rows")
        devices = [CountingCpuDevice(), CountingCpuDevice()]
        plan = parse_policy("streaming:chunk=400,slots=2,readers=2").plan(request, [d.caps for d in devices])
        injector = OnDevice(1, Fault(kind, index=0 if kind == "staging_oom" else 1))
        trace = Trace()
        with pytest.raises(EXPECTED[kind]):
            Engine().run(plan, file, devices, trace=trace, faults=injector, cancel=injector.cancel)
        check_clean(trace, f"{kind} on device 1")
        check_trace(plan, trace, complete=False)
        assert all(d.nothing_live() for d in devices)


class _FailingFree(CountingCpuDevice):
    """A device whose driver refuses to free its staging (after freeing it)."""

    def open(self, plan, file, trace, index=0, faults=None):
        execution = super().open(plan, file, trace, index, faults)
        free = execution.free_staging

        def refuse():
            free()
            raise RuntimeError("driver refused to free the staging pool")

        execution.free_staging = refuse
        return execution


@pytest.mark.parametrize("failing", [0, 1])
def test_cleanup_failing_on_one_device_still_frees_the_others(model, failing):
    """One device that cannot release must not leave the others' memory allocated, and
    must not hide the run's own error."""
    path, _ = model
    devices = [CountingCpuDevice(), CountingCpuDevice()]
    devices[failing] = _FailingFree()
    policy = "streaming:chunk=400,slots=2,readers=2"
    with pytest.raises(DeviceError, match="injected copy error") as caught:
        halsim.upload(path, devices=devices, policy=policy, faults=OnDevice(1 - failing, Fault("copy_error", 1)))
    assert any("driver refused" in note for note in getattr(caught.value, "__notes__", []))
    assert all(d.nothing_live() for d in devices), [d.live for d in devices]
    # A run that succeeded but could not release: it fails, and frees every device's buffers.
    with pytest.raises(DeviceError, match="driver refused"):
        halsim.upload(path, devices=devices, policy=policy)
    assert all(d.nothing_live() for d in devices), [d.live for d in devices]
