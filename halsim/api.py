"""The Python API: ``halsim.upload``, ``halsim.simulate``, ``Upload.download``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from halsim.device import Device, DeviceBuffer
from halsim.engine import CancelToken, Engine, Mode, RunResult
from halsim.errors import PolicyError, HalsimError, ImportRefusedError
from halsim.files import HalFile, open_file
from halsim.formats import ParamIndex, read_index
from halsim.plan import Plan
from halsim.policies import Policy, parse_policy, resolve_policy
from halsim.registry import get_devices
from halsim.report import Report
from halsim.request import Direction, SourceInfo, UploadRequest, request_from_tensors

def _devices(device, devices) -> list[Device]:
    return get_devices(devices if devices is not None else [device])


def _open_source(source, index: ParamIndex | None) -> tuple[HalFile, ParamIndex, bool]:
    """(file, index, we_opened_it)."""
    if isinstance(source, HalFile):
        if index is None:
            from halsim.formats.index import ParamIndex as _Index
            from halsim.formats.index import TensorInfo

            index = _Index(source.name, "raw", source.length,
                           (TensorInfo(Path(source.name).stem or "data", "U8", (source.length,), 0, source.length),), {})
        return source, index, False
    path = os.fspath(source)
    index = index or read_index(path)
    return open_file(path, "r"), index, True


class Upload:
    """Tensors in device memory, and how they got there.

    Use as a context manager, or call :meth:`free`, to release device buffers.
    """

    def __init__(self, result: RunResult, report: Report, file: HalFile, index: ParamIndex, owns_file: bool):
        self.result = result
        self.report = report
        self.file = file
        self.index = index
        self._owns_file = owns_file
        self._freed = False

    @property
    def plan(self) -> Plan:
        return self.result.plan

    def buffers(self) -> dict[str, DeviceBuffer]:
        specs = self.result.plan.request.buffers
        return {specs[i].name: buffer for i, buffer in sorted(self.result.buffers.items())}

    def tensors(self) -> dict[str, Any]:
        """Each tensor by name as the device's native array (numpy, CUDA...), no copy."""
        return {name: buffer.tensor() for name, buffer in self.buffers().items()}

    def verify(self) -> int:
        """Compare every buffer with the file, byte for byte; returns bytes checked."""
        request = self.result.plan.request
        checker = getattr(self.file, "check_unchanged", None)
        if checker is not None:
            checker()  # buffers used in place are the mapped file: reading a truncated one would SIGBUS
        checked = 0
        for t in request.transfers:
            if not t.length:
                continue
            expected = bytearray(t.length)
            self.file.read_into(t.file_offset, expected)
            got = self.result.buffers[t.buffer].to_bytes()[t.buffer_offset : t.buffer_offset + t.length]
            if got != expected:
                bad = next(i for i in range(t.length) if got[i] != expected[i])
                raise HalsimError(
                    f"{self.file.name}: buffer {request.buffers[t.buffer].name!r} differs from the file "
                    f"at file offset {t.file_offset + bad}"
                )
            checked += t.length
        return checked

    def download(self, path: str | os.PathLike, policy: "str | Policy | None" = None, *,
                 mode: Mode = "overlapped", progress=None, cancel: CancelToken | None = None,
                 faults=None) -> Report:
        """Write the buffers back into a file laid out like the source (``queue_write``).

        The file is written beside ``path`` and renamed into place only when
        every byte is there: a failed download leaves no half-written file.
        """
        path = os.fspath(path)
        partial = path + ".partial"
        source = self.result.plan.request
        devices = [e.device for _, e in sorted(self.result.executions.items())]
        caps = [d.caps for d in devices]
        chosen = parse_policy(policy) if policy is not None else parse_policy("streaming")
        target = open_file(partial, "rw", kind="fd", length=self.file.length)
        try:
            # Bytes outside the tensors (headers, padding) come from the source file.
            _copy_gaps(self.file, target, source)
            request = UploadRequest(SourceInfo(path, self.file.length, 0), source.buffers, source.transfers,
                                    Direction.DOWNLOAD)
            plan = chosen.plan(request, caps)
            result = Engine(mode).run(plan, target, devices, progress=progress, cancel=cancel, faults=faults,
                                      adopt=self._buffers_by_device())
            target.flush()
            target.close()
            os.replace(partial, path)
        except BaseException:
            target.close()
            try:
                os.unlink(partial)
            except FileNotFoundError:
                pass
            raise
        names = ", ".join(result.device_names)
        return Report.from_run(plan, result.trace, result.seconds, names, mode, simulated=False)

    def _buffers_by_device(self) -> dict[int, dict[int, DeviceBuffer]]:
        return {d: execution.buffers() for d, execution in self.result.executions.items()}

    def free(self) -> None:
        if not self._freed:
            self._freed = True
            self.result.free()
            if self._owns_file:
                self.file.close()

    def __enter__(self) -> "Upload":
        return self

    def __exit__(self, *exc) -> None:
        self.free()


def _copy_gaps(source: HalFile, target: HalFile, request: UploadRequest) -> None:
    covered = sorted((t.file_offset, t.file_offset + t.length) for t in request.transfers if t.length)
    position = 0
    gaps = []
    for start, end in covered:
        if start > position:
            gaps.append((position, start))
        position = max(position, end)
    if position < source.length:
        gaps.append((position, source.length))
    for start, end in gaps:
        for offset in range(start, end, 1 << 24):
            piece = bytearray(min(1 << 24, end - offset))
            source.read_into(offset, piece)
            target.write_from(offset, piece)


def upload(
    source: "str | os.PathLike | HalFile",
    device: "str | Device" = "cpu",
    policy: "str | Policy | None" = None,
    *,
    devices: "Sequence[str | Device] | None" = None,
    index: ParamIndex | None = None,
    shard: str = "whole",
    mode: Mode = "overlapped",
    progress: Callable[[int, int], None] | None = None,
    cancel: CancelToken | None = None,
    verify: bool = False,
    faults=None,
    into: "Upload | None" = None,
    staging_first: bool = False,
) -> Upload:
    """Upload every tensor of ``source`` to ``device`` (or ``devices``, sharded).

    ``policy`` is a Policy or a spec string (``"streaming:chunk=16MiB,slots=4"``);
    the default, ``auto``, picks from the device's capabilities.

    ``into``: fill the buffers of an earlier upload of the same layout instead of
    allocating new ones (IREE's ``queue_read`` into an existing buffer: reloading
    weights in place). They stay owned, and freed, by ``into``.

    ``staging_first``: pin the whole staging ring before the first read, where a
    device pins it in the background while the first slots already stream (CUDA):
    slower to start, the steady state alone, as calibration's probes run it.
    """
    if into is not None:
        if devices is None and device == "cpu":
            devices = [e.device for _, e in sorted(into.result.executions.items())]
    targets = _devices(device, devices)
    file, index, owns = _open_source(source, index)
    try:
        request = request_from_tensors(SourceInfo.of(file), index.tensors, devices=len(targets), shard=shard)
        caps = [d.caps for d in targets]
        adopt = None
        if into is not None:
            adopt = _adoptable(into, request)
            # Bytes must land in the given buffers: no binding of host memory in their place.
            caps = [c.model_copy(update={"unified_memory": False}) for c in caps]
        plan = resolve_policy(policy).plan(request, caps)
        run = Engine(mode).run
        try:
            result = run(plan, file, targets, progress=progress, cancel=cancel, faults=faults, adopt=adopt,
                         staging_first=staging_first)
        except ImportRefusedError as err:
            # The device refused the host memory at run time (the engine has freed
            # everything): run the import policy's declared fallback instead.
            plan = _after_refused_import(plan, request, targets, err)
            result = run(plan, file, targets, progress=progress, cancel=cancel, faults=faults, adopt=adopt,
                         staging_first=staging_first)
    except BaseException:
        if owns:
            file.close()
        raise
    names = ", ".join(result.device_names)
    done = Upload(result, Report.from_run(plan, result.trace, result.seconds, names, mode, simulated=False),
                  file, index, owns)
    if verify:
        try:
            done.verify()
        except BaseException:
            done.free()
            raise
    return done


def _after_refused_import(plan: Plan, request: UploadRequest, targets, err: ImportRefusedError) -> Plan:
    fallback = getattr(plan.policy, "fallback", None)
    if plan.policy.kind != "import" or fallback is None:
        raise err
    retry = fallback.plan(request, [d.caps for d in targets])
    note = f"import refused at run time ({err}); using fallback {fallback.spec()}"
    return Plan(retry.policy, plan.requested, retry.request, retry.steps, retry.pools, retry.windows, retry.limits,
                plan.notes + retry.notes + (note,))


def _adoptable(into: Upload, request: UploadRequest) -> dict[int, dict[int, DeviceBuffer]]:
    """``into``'s buffers, checked to match ``request``'s one for one."""
    theirs = into.result.plan.request.buffers
    if into._freed:
        raise PolicyError(f"{request.source.name}: cannot upload into a freed upload")
    if [(b.name, b.size, b.device) for b in theirs] != [(b.name, b.size, b.device) for b in request.buffers]:
        raise PolicyError(
            f"{request.source.name}: its tensors do not match the buffers of the upload given as into= "
            f"({len(request.buffers)} tensors vs {len(theirs)} buffers, or different names, sizes or devices)"
        )
    return into._buffers_by_device()


def simulate(
    source: "str | os.PathLike | UploadRequest",
    platform: Any = "h100-pcie5",
    policy: "str | Policy | None" = None,
    *,
    page_cached: bool = True,
    gpus: int = 1,
    shard: str = "whole",
    mode: Mode = "overlapped",
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Simulate uploading ``source`` — a workload name, a model file (only its
    index is read) or an UploadRequest — on ``platform`` under ``policy``."""
    from halsim.sim import Simulator

    simulator = Simulator(platform)
    targets = [simulator.device(i) for i in range(gpus)]
    request = _request_for(source, page_cached, gpus, shard)
    chosen = resolve_policy(policy)
    if chosen.kind == "auto" and chosen.platform is None and isinstance(platform, (str, os.PathLike)):
        # Simulating a platform: auto chooses by simulating that same platform.
        chosen = chosen.model_copy(update={"platform": os.fspath(platform)})
    plan = chosen.plan(request, [d.caps for d in targets])
    result = Engine(mode).run(plan, None, targets, progress=progress)
    names = ", ".join(result.device_names)
    report = Report.from_run(plan, result.trace, result.seconds, names, mode, simulated=True)
    result.free()
    return report


def _request_for(source, page_cached: bool, gpus: int, shard: str) -> UploadRequest:
    if isinstance(source, UploadRequest):
        if source.source.page_cached == page_cached:
            return source
        return UploadRequest(replace(source.source, page_cached=page_cached), source.buffers, source.transfers,
                             source.direction)
    text = os.fspath(source)
    if os.path.exists(text):
        index = read_index(text)
        # A mapped file's base is page-aligned, so the simulator may import it.
        info = SourceInfo(text, index.file_length, 4096, page_cached)
        return request_from_tensors(info, index.tensors, devices=gpus, shard=shard)
    from halsim.workloads import load_workload

    return load_workload(text).request(devices=gpus, shard=shard, page_cached=page_cached)
