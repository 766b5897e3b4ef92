"""Helpers for the simulator tests: small platforms with round numbers, synthetic requests."""

from __future__ import annotations

from halsim.platform import Platform, load_platform, platform_from_dict
from halsim.request import BufferSpec, SourceInfo, Transfer, UploadRequest

GB = 1e9
MiB = 1 << 20
GiB = 1 << 30


def toy_platform(gpus: int = 1, switch: bool = False, kind: str = "dedicated", **over) -> Platform:
    """Round numbers: 1 GB/s drive and page-cache thread, a 2 GB/s link, no latency or overhead,
    host memory so fast it never binds, pinning almost free."""
    data = {
        "name": "toy",
        "storage": {"bandwidth": "1GB/s", "latency": 0, "queue_depth": 8, "page_cache_bandwidth": "1GB/s"},
        "host": {"memcpy_per_thread": "1GB/s", "total_bandwidth": 1e18, "capacity": "1TiB",
                 "pin_bandwidth": 1e18, "register_bandwidth": "4GB/s"},
        "links": [{"name": "l", "h2d": "2GB/s", "d2h": "2GB/s", "overhead": 0}],
        "switches": [{"name": "s", "h2d": "2GB/s", "d2h": "2GB/s"}] if switch else [],
        "gpus": [{"name": f"g{i}", "kind": kind, "memory": "64GiB", "copy_engines": 2, "link": "l",
                  "direct_storage": True, **({"switch": "s"} if switch else {})} for i in range(gpus)],
    }
    for path, value in over.items():
        section, _, key = path.partition("__")
        if key:
            target = data[section]
            for item in target if isinstance(target, list) else [target]:
                item[key] = value
        else:
            data[section] = value
    return platform_from_dict(data, "toy")


def make_request(sizes, *, page_cached: bool = True, host_alignment: int = 4096, start: int = 0,
                 devices: int = 1) -> UploadRequest:
    """One buffer per size, laid out back to back in a file; buffers dealt round-robin to devices."""
    buffers, transfers, offset = [], [], start
    for i, n in enumerate(sizes):
        buffers.append(BufferSpec(f"t{i}", n, i % devices))
        transfers.append(Transfer(offset, i, 0, n))
        offset += n
    source = SourceInfo("synthetic.bin", offset, host_alignment, page_cached)
    return UploadRequest(source, tuple(buffers), tuple(transfers))


def iree_request(page_cached: bool = True) -> UploadRequest:
    """The 1 GiB model of the IREE change, from the workload catalogue when it is there."""
    try:
        from halsim.workloads import load_workload

        return load_workload("iree-1gib").request(page_cached=page_cached)
    except ImportError:  # pragma: no cover - the catalogue ships with halsim
        return make_request([32 * MiB] * 32, page_cached=page_cached)


def toml_round_trip(platform: Platform, tmp_path) -> str:
    """Write ``platform`` as TOML, check it loads back equal, and return the text."""
    path = tmp_path / "p.toml"
    path.write_text(platform.to_toml())
    assert load_platform(path) == platform
    return path.read_text()
