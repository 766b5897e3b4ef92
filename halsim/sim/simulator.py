"""The simulator: a machine in simpy time, and its GPUs as devices for the engine.

``Simulator(platform)`` owns one simpy environment and one machine; every
``device(i)`` of it shares that machine's storage, host memory and switches,
so a multi-GPU run contends as it would on hardware; they also share one
dispatcher, the engine's host thread (``host.step_overhead`` per step). The
engine drives it like any device: it submits steps (simpy processes start) and
waits — ``wait`` advances simulated time until a step it waits on is done.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import simpy

from halsim.device import Pending
from halsim.errors import DeviceError
from halsim.platform import Platform, load_platform
from halsim.request import UploadRequest
from halsim.sim.device import SimDevice
from halsim.sim.dispatch import Dispatcher
from halsim.sim.machine import Machine


class Simulator:
    def __init__(self, platform: "str | os.PathLike | Platform" = "h100-pcie5", *, pinned_staging: bool = True):
        self.platform = load_platform(platform)
        self.env = simpy.Environment()
        self.machine = Machine(self.platform, self.env, pinned_staging=pinned_staging)
        # The engine's one host thread, shared by every GPU (None when it costs nothing).
        self.dispatcher = Dispatcher.of(self.platform, self.env)
        self._devices: dict[int, SimDevice] = {}
        self._done: list[Pending] = []  # steps finished and not yet handed to a waiter, in order

    def device(self, gpu: int = 0) -> SimDevice:
        """GPU ``gpu`` of the platform as a device (the same object each time)."""
        if gpu not in self._devices:
            if not 0 <= gpu < len(self.platform.gpus):
                raise DeviceError(f"platform {self.platform.name!r} has {len(self.platform.gpus)} GPU(s); "
                                  f"there is no GPU {gpu}")
            self._devices[gpu] = SimDevice(self, gpu)
        return self._devices[gpu]

    @property
    def devices(self) -> list[SimDevice]:
        return [self.device(i) for i in range(len(self.platform.gpus))]

    @property
    def now(self) -> float:
        return self.env.now

    # ------------------------------------------------------------ engine side
    def finished(self, pending: Pending) -> None:
        self._done.append(pending)

    def wait(self, pending: Sequence[Pending]) -> list[Pending]:
        """Run simulated time until one of ``pending`` is done; return all of them that are."""
        env = self.env
        net = self.machine.net
        queue = env._queue
        step = env.step
        while True:
            done = self._done
            if done:
                if len(done) == 1 and done[0] in pending:
                    self._done = []
                    return done
                wanted = {id(p) for p in pending}
                ready = [p for p in done if id(p) in wanted]
                if ready:
                    self._done = [p for p in done if id(p) not in wanted]
                    return ready
            # Inlined FlowNetwork.step: solve rates before time moves on.
            if net.dirty and (not queue or queue[0][0] > env._now):
                net.settle()
            if not queue:
                raise DeviceError(
                    f"simulation of {self.platform.name} ran out of events with {len(pending)} step(s) "
                    "still pending", device=f"sim:{self.platform.name}")
            step()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass (allocation costs), running what is due meanwhile."""
        if seconds > 0:
            self.machine.net.run(until=self.env.now + seconds)


def simulate(
    source: "str | os.PathLike | UploadRequest | Any",
    platform: "str | os.PathLike | Platform" = "h100-pcie5",
    policy: Any = None,
    *,
    page_cached: bool | None = None,
    mode: str = "overlapped",
    gpus: int = 1,
    shard: str = "whole",
    pinned_staging: bool = True,
):
    """Simulate uploading ``source`` on ``platform`` under ``policy``; returns a Report.

    ``source`` is an UploadRequest, a Workload, a workload name (``"iree-1gib"``)
    or a model file (only its index is read). ``page_cached=False`` reads the
    file from the drive; ``None`` keeps a request's own flag (else: cached).
    """
    from halsim.engine import Engine
    from halsim.policies import resolve_policy
    from halsim.report import Report

    simulator = Simulator(platform, pinned_staging=pinned_staging)
    targets = [simulator.device(i) for i in range(gpus)]
    request = _request(source, page_cached, gpus, shard)
    plan = resolve_policy(policy).plan(request, [d.caps for d in targets])
    result = Engine(mode).run(plan, None, targets)
    report = Report.from_run(plan, result.trace, result.seconds, ", ".join(result.device_names), mode,
                             simulated=True)
    result.free()
    return report


def _request(source, page_cached: bool | None, gpus: int, shard: str) -> UploadRequest:
    if isinstance(source, UploadRequest):
        if page_cached is not None and source.source.page_cached != page_cached:
            info = dataclasses.replace(source.source, page_cached=page_cached)
            return UploadRequest(info, source.buffers, source.transfers, source.direction)
        return source
    page_cached = True if page_cached is None else page_cached
    if hasattr(source, "request") and callable(source.request):  # a Workload
        return source.request(devices=gpus, shard=shard, page_cached=page_cached)
    text = os.fspath(source)
    if Path(text).exists():
        from halsim.formats import read_index
        from halsim.request import SourceInfo, request_from_tensors

        index = read_index(text)
        # A mapped file's base is page-aligned, so the simulated device may import it.
        info = SourceInfo(text, index.file_length, 4096, page_cached)
        return request_from_tensors(info, index.tensors, devices=gpus, shard=shard)
    from halsim.workloads import load_workload

    return load_workload(text).request(devices=gpus, shard=shard, page_cached=page_cached)
