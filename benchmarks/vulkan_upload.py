"""Vulkan-device uploads of one page-cached file: streaming and import, GB/s and peak staging.

    python benchmarks/vulkan_upload.py [--device vulkan:0] [--size 1GiB] [--repeat 3]
                                       [--file model.safetensors] [--also cuda:0] [--json out.json]

Each policy uploads every tensor of the file to the device; the table gives
the policy that ran (import falls back when the device cannot import the
file), the median time over ``--repeat`` runs and the GB/s it makes, the peak
staging bytes, and the number of copies. (Importing in place moves no bytes:
its time is the time until the tensors are usable.) Every policy's result is checked byte for byte once
(outside the timing). ``--file`` reuses a file (so the CUDA benchmark can
read the same one); ``--also cuda:0`` times the same policies on another
device in the same run, for a side-by-side table.

Import policies run a second time on the file's bytes copied into anonymous
host memory (rows marked ``[anon]``): drivers that refuse to import a mapped
file (the device's import probe, Mesa issue 9251) often import anonymous
memory, so these rows show what import gives there. Where the probe refused,
those rows use the device opened with ``probe=False``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

import halsim
sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under python -P
from bench_files import make_file, readinto_seconds  # noqa: E402
from halsim.errors import DeviceUnavailableError
from halsim.files import MemoryFile
from halsim.registry import get_device
from halsim.units import format_size, parse_size

POLICIES = [
    "streaming:chunk=16MiB,slots=4,readers=2,queues=1",
    "streaming:chunk=16MiB,slots=4,readers=4,queues=2",
    "streaming:chunk=64MiB,slots=2,readers=2,queues=1",
    "streaming:chunk=64MiB,slots=1,readers=1,queues=1",  # IREE's inline loop
    "import:piece=256MiB,queues=1",
    "import:piece=64MiB,queues=2",
    "staged",
]


def describe(device) -> str:
    text = getattr(device, "description", None)
    return f"{device.name} = {text}" if text else f"{device.name}: {device.caps.describe()}"


def bench(device, source, policy: str, repeat: int, index=None, label: str = "") -> dict:
    times, report = [], None
    try:
        for k in range(repeat + 1):  # the first run warms the driver up and is not timed
            with halsim.upload(source, device, policy, index=index) as done:
                if k == 0:
                    done.verify()
                else:
                    times.append(done.report.seconds)
                report = done.report
    except Exception as err:  # one failing row (or backend) must not lose the others
        return {"device": device.name, "requested": policy + label, "policy": "failed", "error": f"{type(err).__name__}: {err}",
                "seconds": 0.0, "gb_per_s": 0.0, "peak_staging_bytes": 0, "peak_imported_bytes": 0,
                "copies": 0, "bytes": 0, "notes": [f"failed: {type(err).__name__}: {err}"]}
    seconds = statistics.median(times)
    return {
        "device": device.name,
        "requested": policy + label,
        "policy": report.policy,
        "seconds": seconds,
        "gb_per_s": report.bytes / seconds / 1e9,
        "peak_staging_bytes": report.peak_staging_bytes,
        "peak_imported_bytes": report.peak_imported_bytes,
        "copies": report.copies,
        "bytes": report.bytes,
        "notes": report.notes,
    }


def print_info() -> None:
    """What the machine offers: every backend's status, and the Vulkan device in detail."""
    from halsim.registry import backends

    for status in backends():
        print(f"{status.name}: " + ("available " + ", ".join(n for n, _ in status.devices)
                                   if status.available else f"unavailable ({status.reason})"))
    try:
        from halsim.backends import vulkan

        device = vulkan.open_device(0)
    except Exception as err:  # report, never hide, why it did not open
        print(f"vulkan:0 did not open: {type(err).__name__}: {err}")
        return
    info = device.info
    print(f"vulkan:0 = {device.description}")
    print(f"  caps: {device.caps.model_dump()}")
    print(f"  queue family {info.queue_family}: flags {info.queue_flags:#x}, {info.queue_count} queue(s), "
          f"transfer-only {info.transfer_only}; sparse binding {info.sparse_binding}")
    print(f"  maxMemoryAllocationSize {info.max_allocation}, maxBufferSize {info.max_buffer}, "
          f"maxMemoryAllocationCount {info.max_allocation_count}, split at {device.logical.max_piece}")
    print(f"  memory types: {[f'{flags:#x}@heap{heap}' for flags, heap in info.memory_types]}")
    print(f"  heaps: {[f'{format_size(size)} flags {flags:#x}' for size, flags in info.heaps]}")
    print(f"  import of a mapped file: {device.import_problem or 'works (probe read it back exactly)'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="vulkan:0")
    parser.add_argument("--also", default="", help="comma-separated devices timed the same way (e.g. cuda:0)")
    parser.add_argument("--size", default="1GiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--file", type=Path, help="use this model file instead of writing one")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the test file")
    parser.add_argument("--policies", default="", help="semicolon-separated policies (default: a fixed set)")
    parser.add_argument("--no-anonymous", action="store_true", help="skip the [anon] import rows")
    parser.add_argument("--info", action="store_true", help="print the backends and the Vulkan device, then stop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.info:
        print_info()
        return

    try:
        devices = [get_device(args.device)]
    except DeviceUnavailableError as err:
        print(f"{args.device}: {err}")
        sys.exit(2)
    for name in filter(None, (n.strip() for n in args.also.split(","))):
        try:
            devices.append(get_device(name))
        except DeviceUnavailableError as err:
            print(f"skipping {name}: {err}")

    folder = None
    if args.file:
        path = args.file
    else:
        folder = Path(tempfile.mkdtemp(dir=args.dir))
        path = folder / "model.safetensors"
        make_file(path, parse_size(args.size))
    index = halsim.formats.read_index(path)
    first = min(t.offset for t in index.tensors)
    nbytes = index.total_bytes
    target = np.empty(nbytes, np.uint8)
    readinto_seconds(path, target, first)  # warm the page cache
    baseline = statistics.median(readinto_seconds(path, target, first) for _ in range(args.repeat))
    del target

    policies = [p for p in args.policies.split(";") if p] or POLICIES
    rows = []
    for device in devices:
        for policy in policies:
            rows.append(bench(device, path, policy, args.repeat))
    imports = [p for p in policies if p.startswith("import")]
    if imports and not args.no_anonymous:
        import mmap

        backing = mmap.mmap(-1, path.stat().st_size)
        with open(path, "rb", buffering=0) as f:
            f.readinto(backing)
        anonymous = MemoryFile(memoryview(backing), name=f"{path.name} (anonymous copy)")
        for device in devices:
            target, trusted = device, None
            if not device.caps.can_import_host and getattr(getattr(device, "logical", None), "can_import", False):
                from halsim.backends.vulkan import VulkanDevice

                target = trusted = VulkanDevice(device.index, probe=False)
            for policy in imports:
                rows.append(bench(target, anonymous, policy, args.repeat, index=index, label=" [anon]"))
            if trusted is not None:
                trusted.close()
        anonymous.close()
        backing.close()

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    for device in devices:
        print(f"device: {describe(device)}")
    print(f"file: {path.name}, {format_size(nbytes)} of tensors in {len(index.tensors)} tensors, page-cached; "
          f"median of {args.repeat} runs after one warm-up")
    print(f"readinto into host memory (baseline): {nbytes / baseline / 1e9:.2f} GB/s")
    header = f"{'device':<9} {'policy (requested -> ran)':<72} {'ms':>8} {'GB/s':>8} {'staging':>9} {'copies':>7}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ran = row["requested"]
        if row["policy"].split(":")[0] != ran.split(":")[0]:  # a fallback ran
            ran = f"{ran} -> {row['policy']}"
        print(f"{row['device']:<9} {ran:<72} {row['seconds'] * 1e3:8.1f} {row['gb_per_s']:8.2f} "
              f"{format_size(row['peak_staging_bytes']):>9} "
              f"{row['copies']:>7}")
    for row in rows:
        for note in row["notes"]:
            print(f"  note ({row['device']}, {row['requested']}): {note}")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": platform.node(), "devices": [describe(d) for d in devices], "bytes": nbytes,
            "readinto_gb_per_s": nbytes / baseline / 1e9, "rows": rows}, indent=1))
    if folder is not None:
        path.unlink()
        folder.rmdir()
    for device in devices:
        close = getattr(device, "close", None)
        if close is not None and device.name.startswith("vulkan"):
            close()


if __name__ == "__main__":
    main()
