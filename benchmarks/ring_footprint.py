"""Real streaming uploads by ring footprint, file and how the ring is pinned, interleaved.

    python benchmarks/ring_footprint.py [--device cuda:0] [--dir DIR] [--files 1GiB,4GiB] [--llama]
        [--policy SPEC ...] [--staging-first] [--raw] [--rounds 5] [--json OUT.json]

The calibration's eight-reader ring probe (16 MiB x 16 slots, 256 MiB of staging,
pinned before its first read) streams its scratch file; uploads stream model
files through rings of other footprints, pinning slot after slot while the first
ones already read. On the lent H200 VM an upload of 16 MiB x 8 slots x 8 readers
ran 1.28-1.46x faster than the same ring with 16 slots, where the simulator said
1.10x and calibration-style rings showed 1.00-1.04x (docs/fidelity-log.md, twelfth
session). This tells the candidate causes apart on the hardware alone: every
policy on every file (page-cached), in rounds that take each row in turn, each
row timed whole and over its data phase (first read to last copy), with

* ``--llama``: the fidelity runs' 4 GiB model file (48 tensors of 8 KiB..1002 MiB)
  beside the files of 16 MiB tensors;
* ``--staging-first``: each policy again with its whole ring pinned before the
  first read (``halsim.upload(staging_first=True)``), as calibration runs it;
* ``--raw``: each policy again on each file read whole as one raw tensor (one
  device buffer, reads from offset 0, page-aligned), as calibration's probe reads
  its scratch file; a file's tensors start past its header (1264 bytes into a
  page for the 16 MiB files) and go to a buffer each;
* ``--device sim:PLATFORM.toml``: the same rows in the simulator, on a calibrated
  platform (the files are still made: their indexes give the plans);
* per row: the reads after the last slot was pinned (mean seconds, how many at
  once) and the kernel's transparent huge page faults and fallbacks during the
  run (``/proc/vmstat``): a slot the kernel could not back with 2 MiB pages
  (pinned while the readers churn the page cache) costs the CPU's TLB more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import halsim
from halsim import pagecache
from halsim.sim import SimDevice
from halsim.units import parse_size
from halsim.workloads import TensorSpec, Workload

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_gpu import LAYERS  # noqa: E402  (the fidelity runs' model file)
from fidelity_gpu import make_file as make_llama  # noqa: E402

MiB = 1 << 20
TENSOR = (4096, 2048)  # BF16: 16 MiB, the chunk of the rings compared
POLICIES = ("streaming:chunk=16MiB,slots=8,readers=8",
            "streaming:chunk=16MiB,slots=16,readers=8",
            "streaming:chunk=16MiB,slots=8,readers=8,queues=2",
            "streaming:chunk=16MiB,slots=16,readers=8,queues=2")
THP = ("thp_fault_alloc", "thp_fault_fallback")


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


def vmstat() -> dict[str, int]:
    """The kernel's transparent huge page counters (empty where /proc/vmstat is not there)."""
    try:
        with open("/proc/vmstat") as f:
            return {k: int(v) for k, v in (line.split() for line in f) if k in THP}
    except OSError:
        return {}


def data_phase(report: halsim.Report) -> float:
    """Seconds from the first read's start to the last copy's end."""
    spans = [s for s in report.trace.spans if s.lane.startswith(("read/", "copy/"))]
    return max(s.end for s in spans) - min(s.start for s in spans)


def steady_reads(report: halsim.Report) -> tuple[float, float]:
    """The reads that started after the last slot was pinned: mean seconds, and how many ran at once."""
    spans = report.trace.spans
    pinned = max((s.end for s in spans if s.op == "pin"), default=0.0)
    reads = [s for s in spans if s.lane.startswith("read/") and s.start >= pinned]
    if not reads:
        return 0.0, 0.0
    busy = sum(s.end - s.start for s in reads)
    return busy / len(reads), busy / (max(s.end for s in reads) - min(s.start for s in reads))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/halsim-ring-footprint"))
    parser.add_argument("--files", default="1GiB,4GiB", help="lengths of files of 16 MiB tensors, comma-separated")
    parser.add_argument("--llama", action="store_true", help="also the fidelity runs' 4 GiB model file")
    parser.add_argument("--policy", action="append", default=None, metavar="SPEC",
                        help="a policy to run (repeatable; default: 16 MiB rings of 8 and 16 slots, 1 and 2 queues)")
    parser.add_argument("--staging-first", action="store_true",
                        help="each policy also with its ring pinned before the first read")
    parser.add_argument("--raw", action="store_true",
                        help="each policy also on each file as one raw tensor (one buffer, aligned reads)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = halsim.get_device(args.device)
    real = not isinstance(device, SimDevice)  # the host's huge-page counters say nothing of a simulated run
    files = [make_file(args.dir, parse_size(part)) for part in args.files.split(",") if part]
    if args.llama:
        files.append(make_llama(args.dir, LAYERS))
    policies = args.policy or list(POLICIES)
    pinnings = (False, True) if args.staging_first else (False,)
    layouts = (False, True) if args.raw else (False,)
    rows = [(f, p, first, raw) for f in files for p in policies for first in pinnings for raw in layouts]
    runs: dict[tuple, list[dict]] = {row: [] for row in rows}
    for path in files:  # once, as halsim compare warms a file: every run then finds it as it left it
        pagecache.warm(path, fresh=True)
    began = time.perf_counter()
    for round_ in range(-1, args.rounds):  # round -1 warms code paths and drivers; dropped
        for k in range(len(rows)):
            row = rows[(k + max(round_, 0)) % len(rows)]  # each round starts one row later
            path, policy, first, raw = row
            thp = vmstat() if real else {}
            # A HalFile without an index uploads as one raw tensor: the whole file, from offset 0.
            source = halsim.open_file(path) if raw else path
            try:
                with halsim.upload(source, device, policy, staging_first=first) as done:
                    report = done.report
            finally:
                if raw:
                    source.close()
            after = vmstat() if real else {}
            if round_ >= 0:
                mean, together = steady_reads(report)
                runs[row].append({"wall": report.seconds, "data": data_phase(report), "steady_read": mean,
                                  "steady_together": together, **{k: after[k] - thp[k] for k in after}})
        print(f"[{time.perf_counter() - began:5.1f}s] round {round_ + 1}/{args.rounds}", flush=True)
    print(f"\n{device.name} ({getattr(device, 'product', '')}), {args.rounds} rounds; medians")
    print(f"{'file':>24} {'policy':<50} {'pinned':>7} {'layout':>7} {'wall s':>7} {'data s':>7} {'GB/s':>6} "
          f"{'spread':>6} "          f"{'read ms':>7} {'at once':>7} {'THP':>5} {'4K':>5}")
    out = []
    for row in rows:
        path, policy, first, raw = row
        got = runs[row]

        def median(key: str) -> float:
            return statistics.median(r.get(key, 0) for r in got)

        data = median("data")
        spread = (max(r["data"] for r in got) - min(r["data"] for r in got)) / 2 / data
        length = path.stat().st_size
        print(f"{path.stem[-24:]:>24} {policy:<50} {'first' if first else 'behind':>7} "
              f"{'raw' if raw else 'tensors':>7} {median('wall'):>7.4f} {data:>7.4f} {length / data / 1e9:>6.2f} "
              f"{spread:>5.0%} {median('steady_read') * 1e3:>7.2f} "
              f"{median('steady_together'):>7.1f} {median('thp_fault_alloc'):>5.0f} "
              f"{median('thp_fault_fallback'):>5.0f}")
        out.append({"file": path.name, "file_bytes": length, "policy": policy, "staging_first": first, "raw": raw,
                    "runs": got})
    if args.json:
        args.json.write_text(json.dumps({"device": device.name, "product": getattr(device, "product", ""),
                                         "rounds": args.rounds, "rows": out}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
