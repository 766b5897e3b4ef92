"""The simulated machine: one simpy environment, built from a Platform.

Everything that several devices or runs share lives here — the flow network
(storage, host memory, links, switches), host and device memory, the reader
threads, the drive's queue, each GPU's copy engines and import lane — so GPUs
of one machine contend as they do on hardware.
"""

from __future__ import annotations

import simpy

from halsim.platform import Platform
from halsim.sim.flows import FlowNetwork
from halsim.sim.gates import DriverLock, Gate, Ids
from halsim.sim.memory import MemoryPool
from halsim.sim.routes import (HOST, PAGE_CACHE_THREAD, REGISTRATION, GpuRoutes, HostRoutes, build_resources,
                               cold_read_uses)


def _calls_and_bytes(calls: int, per_call: float, nbytes: int, bandwidth: float | None) -> float:
    """Seconds of ``calls`` calls moving ``nbytes`` in all (no ``bandwidth``: the bytes cost nothing)."""
    return calls * per_call + (nbytes / bandwidth if bandwidth else 0.0)


class Machine:
    def __init__(self, platform: Platform, env: simpy.Environment | None = None, *, pinned_staging: bool = True):
        self.platform = platform
        self.env = env or simpy.Environment()
        self.pinned_staging = pinned_staging
        self.net = FlowNetwork(self.env)
        self.net.contention = platform.host.thread_contention
        build_resources(self.net, platform)
        self.host_routes = HostRoutes.build(self.net, platform)
        self.gpu_routes = [GpuRoutes.build(self.net, platform, i) for i in range(len(platform.gpus))]
        self.host_memory = MemoryPool("host memory", platform.host.capacity)
        self.device_memory = [
            MemoryPool(f"device {i} memory", gpu.memory,
                       parent=self.host_memory if gpu.kind == "integrated" else None)
            for i, gpu in enumerate(platform.gpus)
        ]
        self.readers = Ids()
        self.storage_queue = Gate(self.env, platform.storage.queue_depth)
        self.copy_engines = [[Gate(self.env, 1) for _ in range(gpu.copy_engines)] for gpu in platform.gpus]
        self.import_lanes = [Gate(self.env, 1) for _ in platform.gpus]
        # One lock for the whole driver: registration holds back copies to every GPU.
        self.driver_lock = DriverLock(self.env) if platform.host.register_stalls_copies else None
        self._copies_running = [0 for _ in platform.gpus]
        self._drained: list[list] = [[] for _ in platform.gpus]

    def copy_started(self, gpu: int) -> None:
        self._copies_running[gpu] += 1

    def copy_finished(self, gpu: int) -> None:
        self._copies_running[gpu] -= 1
        if not self._copies_running[gpu]:
            waiting, self._drained[gpu] = self._drained[gpu], []
            for event in waiting:
                event.succeed()

    def until_copies_done(self, gpu: int):
        """None when no copy to or from ``gpu`` is running; else an event for when none is."""
        if not self._copies_running[gpu]:
            return None
        event = self.env.event()
        self._drained[gpu].append(event)
        return event

    def cached_read_class(self, request_bytes: int, speedup: float = 1.0, write_share: float = 1.0) -> int:
        """The flow class of one thread's page-cache read of a ``request_bytes`` request
        (``speedup``: into slots that stay in the CPU's cache, ``storage.page_cache_near_speedup``;
        ``write_share``: of its writes, the share that reaches host memory, ``host.staging_write_curve``)."""
        rate = self.platform.storage.page_cache_rate(request_bytes) * speedup
        # What stays in the cache neither loads host memory nor slows the other threads.
        return self.net.flow_class([(HOST, 1 + write_share)], rate, PAGE_CACHE_THREAD,
                                   contended=(1 + write_share) / 2)

    def cold_read_class(self, drive_share: float) -> int:
        """A buffered read of a cold file of which only ``drive_share`` of the bytes still come from the drive
        (the rest the kernel has read ahead): one thread copies them all out of the page cache."""
        return self.net.flow_class(cold_read_uses(drive_share), self.platform.storage.page_cache_bandwidth,
                                   PAGE_CACHE_THREAD, contended=1.0)

    def memcpy_class(self) -> int:
        """The flow class of one thread's memcpy: it reads and writes host memory."""
        return self.net.flow_class([(HOST, 2)], self.platform.host.memcpy_per_thread, "memcpy (one thread)",
                                   contended=1.0)

    @property
    def now(self) -> float:
        return self.env.now

    def pin_seconds(self, nbytes: int, calls: int) -> float:
        host = self.platform.host
        return _calls_and_bytes(calls, host.pin_per_call, nbytes, host.pin_bandwidth)

    def alloc_seconds(self, gpu: int, nbytes: int, calls: int) -> float:
        spec = self.platform.gpus[gpu]
        return _calls_and_bytes(calls, spec.alloc_per_call, nbytes, spec.alloc_bandwidth)

    def unpin_seconds(self, nbytes: int, calls: int) -> float:
        host = self.platform.host
        return _calls_and_bytes(calls, host.unpin_per_call, nbytes, host.unpin_bandwidth)

    def unregister_seconds(self, nbytes: int = 0, factor: float = 1.0) -> float:
        host = self.platform.host
        return factor * _calls_and_bytes(1, host.register_per_call, nbytes, host.unregister_bandwidth)

    def register_class(self, factor: float) -> int:
        """The flow class of registering a window, ``factor`` times slower than alone."""
        if factor == 1.0:
            return self.host_routes.register
        return self.net.flow_class([], self.platform.host.register_bandwidth / factor, REGISTRATION)
