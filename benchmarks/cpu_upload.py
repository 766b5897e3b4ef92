"""CPU-device upload of a page-cached file against a plain ``readinto``, same run.

    python benchmarks/cpu_upload.py [--size 2GiB] [--repeat 3] [--json out.json]

Prints one table: each halsim policy's GB/s and its ratio to reading the same
file into one preallocated numpy array (goal: >= 0.8), both into freshly
allocated buffers and into existing ones (``upload(..., into=...)``, which is
what the baseline does), then how long the
simulator takes for 100 GiB of llama-like tensors in 4 MiB chunks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import halsim
sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under python -P
from bench_files import make_file, readinto_seconds  # noqa: E402
from halsim.units import format_size, parse_size

POLICIES = [
    "direct:chunk=16MiB,readers=2",
    "direct:chunk=64MiB,readers=1",
    "streaming:chunk=16MiB,slots=4,readers=2,queues=1",
    "streaming:chunk=64MiB,slots=1,readers=1",
    "staged",
    "import",  # zero-copy: tensors are views of the page cache (into= copies from the mapping)
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2GiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the test file")
    args = parser.parse_args()
    size = parse_size(args.size)
    folder = Path(tempfile.mkdtemp(dir=args.dir))
    path = folder / "model.safetensors"
    make_file(path, size)
    index = halsim.formats.read_index(path)
    first = min(t.offset for t in index.tensors)
    nbytes = index.total_bytes
    target = np.empty(nbytes, np.uint8)
    readinto_seconds(path, target, first)  # warm the page cache

    rows = []
    baseline = statistics.median(readinto_seconds(path, target, first) for _ in range(args.repeat))
    rows.append(("readinto (baseline)", nbytes / baseline / 1e9, 1.0, 0))
    for policy in POLICIES:
        fresh, into, staging = [], [], 0
        for _ in range(args.repeat):
            with halsim.upload(path, "cpu", policy) as done:
                fresh.append(done.report.seconds)
                staging = done.report.peak_staging_bytes
        # The baseline fills memory it already has; so does an upload into existing buffers.
        with halsim.upload(path, "cpu", "streaming") as owner:
            for _ in range(args.repeat):
                with halsim.upload(path, "cpu", policy, into=owner) as done:
                    into.append(done.report.seconds)
        for label, times in ((policy, fresh), ("  into existing buffers", into)):
            seconds = statistics.median(times)
            rows.append((label, nbytes / seconds / 1e9, baseline / seconds, staging))

    from halsim.platform import load_platform

    h100 = load_platform("h100-pcie5")  # memory raised to 128 GiB so 100 GiB fits
    roomy = h100.model_copy(update={"gpus": (h100.gpus[0].model_copy(update={"memory": 128 << 30}),)})
    sim_start = time.perf_counter()
    sim_report = halsim.simulate(_llama_like_100gib(), roomy, "streaming:chunk=4MiB,slots=4,readers=4")
    sim_seconds = time.perf_counter() - sim_start

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print(f"file: {format_size(nbytes)} of tensors, page-cached, median of {args.repeat}")
    print(f"{'method':<52} {'GB/s':>7} {'vs readinto':>12} {'staging':>9}")
    for name, rate, ratio, staging in rows:
        print(f"{name:<52} {rate:7.2f} {ratio:12.2f} {format_size(staging):>9}")
    print(f"simulating 100 GiB in 4 MiB chunks (streaming:chunk=4MiB,slots=4,readers=4 on h100-pcie5): "
          f"{sim_seconds:.2f} s wall, predicted upload {sim_report.seconds:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "sim_wall_seconds": sim_seconds, "bytes": nbytes}, indent=1))
    path.unlink()
    folder.rmdir()


def _llama_like_100gib():
    from halsim.request import SourceInfo, request_from_tensors
    from halsim.formats.index import TensorInfo

    # 100 GiB of tensors shaped like llama's (112 MiB MLP and 32 MiB attention matrices).
    sizes = [112 << 20, 112 << 20, 112 << 20, 32 << 20, 8 << 20, 8 << 20, 32 << 20]
    tensors, offset, i = [], 4096, 0
    while offset < (100 << 30):
        n = sizes[i % len(sizes)]
        tensors.append(TensorInfo(f"t{i}", "BF16", (n // 2,), offset, n))
        offset += n
        i += 1
    return request_from_tensors(SourceInfo("llama-like-100GiB", offset, 4096), tensors)


if __name__ == "__main__":
    main()
