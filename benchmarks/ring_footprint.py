"""Real streaming uploads by ring footprint and file length, interleaved.

    python benchmarks/ring_footprint.py [--device cuda:0] [--dir DIR] [--files 1GiB,4GiB]
        [--policy SPEC ...] [--rounds 5] [--json OUT.json]

The calibration's eight-reader ring probe (16 MiB x 16 slots, 256 MiB of staging)
streams its 1 GiB scratch file; uploads stream 4 GiB files through rings of other
footprints. On the lent H200 VM an upload of 16 MiB x 8 slots x 8 readers ran
18-30 % faster than the same ring with 16 slots, where the simulator said 6-10 %
(fidelity run 52). This tells the two effects apart on the hardware alone: every
policy on every file (page-cached, 16 MiB tensors, random bytes), in rounds that
take each pair in turn, timed whole and over its data phase (first read to last
copy: without the device buffers' allocation and the staging's pinning).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import halsim
from halsim import pagecache
from halsim.units import format_size, parse_size
from halsim.workloads import TensorSpec, Workload

MiB = 1 << 20
TENSOR = (4096, 2048)  # BF16: 16 MiB, the chunk of the rings compared
POLICIES = ("streaming:chunk=16MiB,slots=8,readers=8",
            "streaming:chunk=16MiB,slots=16,readers=8",
            "streaming:chunk=16MiB,slots=8,readers=8,queues=2",
            "streaming:chunk=16MiB,slots=16,readers=8,queues=2")


def make_file(folder: Path, length: int) -> Path:
    """A safetensors file of ``length`` bytes (rounded down to whole 16 MiB tensors) of random bytes."""
    count = max(1, length // (TENSOR[0] * TENSOR[1] * 2))
    workload = Workload(name=f"ring-footprint-{count}x16MiB", dtype="BF16",
                        tensors=tuple(TensorSpec(name=f"t{k}", dtype="BF16", shape=TENSOR) for k in range(count)))
    path = folder / workload.file_name
    if not (path.exists() and path.stat().st_size == workload.index().file_length):
        folder.mkdir(parents=True, exist_ok=True)
        workload.write(path, "random")
    return path


def data_phase(report: halsim.Report) -> float:
    """Seconds from the first read's start to the last copy's end."""
    spans = [s for s in report.trace.spans if s.lane.startswith(("read", "copy/"))]
    return max(s.end for s in spans) - min(s.start for s in spans)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/halsim-ring-footprint"))
    parser.add_argument("--files", default="1GiB,4GiB", help="file lengths, comma-separated")
    parser.add_argument("--policy", action="append", default=None, metavar="SPEC",
                        help="a policy to run (repeatable; default: 16 MiB rings of 8 and 16 slots, 1 and 2 queues)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = halsim.get_device(args.device)
    files = [make_file(args.dir, parse_size(part)) for part in args.files.split(",")]
    policies = args.policy or list(POLICIES)
    pairs = [(f, p) for f in files for p in policies]
    walls: dict[tuple[Path, str], list[float]] = {pair: [] for pair in pairs}
    datas: dict[tuple[Path, str], list[float]] = {pair: [] for pair in pairs}
    for path in files:  # once, as halsim compare warms a file: every run then finds it as it left it
        pagecache.warm(path, fresh=True)
    began = time.perf_counter()
    for round_ in range(-1, args.rounds):  # round -1 warms code paths and drivers; dropped
        for k in range(len(pairs)):
            path, policy = pairs[(k + max(round_, 0)) % len(pairs)]  # each round starts one pair later
            with halsim.upload(path, device, policy) as done:
                report = done.report
            if round_ >= 0:
                walls[(path, policy)].append(report.seconds)
                datas[(path, policy)].append(data_phase(report))
        print(f"[{time.perf_counter() - began:5.1f}s] round {round_ + 1}/{args.rounds}", flush=True)
    rows = []
    print(f"\n{device.name} ({getattr(device, 'product', '')}), {args.rounds} rounds")
    print(f"{'file':>8} {'policy':<52} {'wall s':>7} {'data s':>7} {'data GB/s':>9} {'spread':>7}")
    for path, policy in pairs:
        wall, data = statistics.median(walls[(path, policy)]), statistics.median(datas[(path, policy)])
        spread = (max(datas[(path, policy)]) - min(datas[(path, policy)])) / 2 / data
        length = path.stat().st_size
        print(f"{format_size(length):>8} {policy:<52} {wall:>7.4f} {data:>7.4f} {length / data / 1e9:>9.2f} "
              f"{spread:>6.0%}")
        rows.append({"file_bytes": length, "policy": policy, "wall": walls[(path, policy)],
                     "data": datas[(path, policy)]})
    if args.json:
        args.json.write_text(json.dumps({"device": device.name, "product": getattr(device, "product", ""),
                                         "rounds": args.rounds, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
