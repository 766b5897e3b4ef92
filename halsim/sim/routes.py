"""Which resources each kind of transfer crosses, and how hard it uses them.

Weights count host-memory traffic per byte moved: a CPU copy (the kernel's
copy out of the page cache, the driver's pageable bounce) reads and writes
DRAM, weight 2; a DMA engine reading or writing host memory, weight 1 (a
platform's ``host.dma_weight``, fitted where it differs); a copy
on an integrated GPU reads and writes the same DRAM, weight 2. A buffered read
of a cold file is a drive DMA into the page cache (1) plus the kernel's copy
out of it (2).
"""

from __future__ import annotations

from dataclasses import dataclass

from halsim.platform import Platform
from halsim.sim.flows import FlowNetwork

STORAGE = "storage"
HOST = "host memory"
PAGE_CACHE_THREAD = "page cache (one thread)"
PAGEABLE = "pageable copy (driver bounce)"
REGISTRATION = "registration"
PINNING = "pinning"


def link_name(gpu: int, direction: str) -> str:
    return f"link/d{gpu}/{direction}"


def build_resources(net: FlowNetwork, platform: Platform) -> None:
    net.resource(STORAGE, platform.storage.bandwidth)
    net.resource(HOST, platform.host.total_bandwidth)
    for i in range(len(platform.gpus)):
        link = platform.link_of(i)
        net.resource(link_name(i, "h2d"), link.h2d)
        net.resource(link_name(i, "d2h"), link.d2h)
    for switch in platform.switches:
        net.resource(f"switch/{switch.name}/h2d", switch.h2d)
        net.resource(f"switch/{switch.name}/d2h", switch.d2h)


def cold_read_uses(drive_share: float = 1.0) -> list[tuple[str, float]]:
    """A buffered read of a cold file: the drive's DMA into the page cache, for the share of the bytes
    still on the drive (the kernel read the rest ahead), and the thread's copy of them all out of it (2)."""
    return [(STORAGE, drive_share), (HOST, 2 + drive_share)]


@dataclass(frozen=True)
class HostRoutes:
    """Transfers between the file and host memory (no GPU involved)."""

    cached_read: int  # page cache -> buffer
    cold_read: int  # drive -> page cache -> buffer
    direct_read: int  # O_DIRECT: drive -> buffer
    read_ahead: int  # drive -> page cache, while no one waits (the kernel's readahead)
    cached_write: int  # buffer -> page cache (write-back is not modelled)
    direct_write: int  # O_DIRECT: buffer -> drive
    fault_in: int  # a cold mapped file's pages read in while it is registered
    register: int  # page-locking existing memory (an import window)
    pin: int  # allocating pinned memory (a staging slot pinned in the background)

    @classmethod
    def build(cls, net: FlowNetwork, platform: Platform) -> "HostRoutes":
        st = platform.storage
        thread = st.page_cache_bandwidth
        # One storage resource for reads and writes; a write's weight makes it run at write_bandwidth alone.
        write_weight = st.bandwidth / st.write_rate
        # Faulting a mapping in reads ahead in larger pieces than pread: its own rate, on the same drive.
        fault_weight = st.bandwidth / (st.fault_in_bandwidth or st.bandwidth)
        return cls(
            cached_read=net.flow_class([(HOST, 2)], thread, PAGE_CACHE_THREAD, contended=1.0),
            cold_read=net.flow_class(cold_read_uses(), thread, PAGE_CACHE_THREAD, contended=1.0),
            direct_read=net.flow_class([(STORAGE, 1), (HOST, 1)]),
            read_ahead=net.flow_class([(STORAGE, 1), (HOST, 1)]),
            cached_write=net.flow_class([(HOST, 2)], thread, PAGE_CACHE_THREAD, contended=1.0),
            direct_write=net.flow_class([(STORAGE, write_weight), (HOST, 1)]),
            fault_in=net.flow_class([(STORAGE, fault_weight), (HOST, 1)]),
            register=net.flow_class([], platform.host.register_bandwidth, REGISTRATION),
            pin=net.flow_class([], platform.host.pin_bandwidth, PINNING),
        )


@dataclass(frozen=True)
class GpuRoutes:
    """Transfers between host memory (or the drive) and one GPU."""

    h2d: int  # pinned host memory -> device
    d2h: int  # device -> pinned host memory
    h2d_pageable: int
    d2h_pageable: int
    storage_h2d: int  # drive -> device, no host memory (GPUDirect Storage)

    @classmethod
    def build(cls, net: FlowNetwork, platform: Platform, gpu: int) -> "GpuRoutes":
        spec = platform.gpus[gpu]
        link = platform.link_of(gpu)
        switch = platform.switch_of(gpu)
        # On an integrated GPU "device memory" is host DRAM too: a copy reads and writes it.
        dma = 2 if spec.kind == "integrated" else platform.host.dma_weight
        pageable = link.pageable or min(platform.host.memcpy_per_thread, link.h2d)

        def via(direction: str, host: float) -> list[tuple[str, float]]:
            path = [(HOST, host), (link_name(gpu, direction), 1)]
            if switch is not None:
                path.append((f"switch/{switch.name}/{direction}", 1))
            return path

        def copy(direction: str, host: float) -> list[tuple[str, float]]:
            return via(direction, host)

        # The drive writes device memory directly; on an integrated GPU that memory is host DRAM.
        storage_path = [(STORAGE, 1)] + via("h2d", 1 if spec.kind == "integrated" else 0)
        return cls(
            h2d=net.flow_class(copy("h2d", dma)),
            d2h=net.flow_class(copy("d2h", dma)),
            # The driver's bounce: a CPU copy into its pinned buffer (2), then the DMA (1).
            h2d_pageable=net.flow_class(copy("h2d", dma + 2), pageable, PAGEABLE, contended=1.0),
            d2h_pageable=net.flow_class(copy("d2h", dma + 2), pageable, PAGEABLE, contended=1.0),
            storage_h2d=net.flow_class(storage_path),
        )
