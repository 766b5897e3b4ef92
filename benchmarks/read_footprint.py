"""Page-cache reads by request size, threads and destination footprint.

    python benchmarks/read_footprint.py FILE [--scattered] [--repeat 3] [--json OUT.json]
        [--sizes 16MiB] [--footprints 0,128MiB,256MiB] [--threads 4,8] [--read-bytes 1GiB,4GiB]

A ring's reads go to ``slots x chunk`` bytes of staging, taken in turn. The
calibration reads into 256 MiB of slots (``READ_FOOTPRINT``), because reads into
one slot that stays in the CPU's cache ran 20-40% faster (fidelity run 6). A
ring of 4 MiB x 4 slots writes to only 16 MiB, and the simulator has predicted
it 16-19% slow in three runs. This measures, on a page-cached FILE, each thread's
rate for every request size, footprint and thread count, so the two can be told
apart; ``--read-bytes`` also by how much each measurement reads (a short one
pays its threads' start on fewer bytes). Destinations are ordinary pre-touched memory (page-locking does not
change what the CPU's copy costs). The file is first dropped and read back on
one thread, as ``halsim compare`` warms it (2 MiB pages on the H100 VM's kernel);
``--scattered`` reads it back cold on four threads instead, as a streaming ring
does (4 KiB pages there).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

from halsim import pagecache
from halsim.units import format_size, parse_size

from cold_read_profile import pread_all  # noqa: E402  (benchmarks/ is first on sys.path)

MiB = 1 << 20
SIZES = (1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB)
FOOTPRINTS = (0, 16 * MiB, 64 * MiB, 256 * MiB)  # 0: one slot per thread
THREADS = (1, 2, 4)
READ_BYTES = 1 << 30  # per measurement


def sizes(text: str) -> tuple[int, ...]:
    return tuple(parse_size(part) for part in text.split(","))


def measure(fd: int, file_size: int, size: int, footprint: int, threads: int, read_bytes: int = READ_BYTES) -> float:
    """Seconds to read ``read_bytes`` in ``size`` requests on ``threads`` threads into slots filling ``footprint``."""
    slots = max(threads, footprint // size) if footprint else threads
    slots -= slots % threads  # each thread cycles through its own slots
    arena = np.ones(slots * size, dtype=np.uint8)  # touched: no page faults while timing
    views = [memoryview(arena[k * size : (k + 1) * size]) for k in range(slots)]
    count = read_bytes // size
    span = max(file_size // size, 1)

    def worker(t: int) -> None:
        mine = views[t::threads]
        for k, i in enumerate(range(t, count, threads)):
            os.preadv(fd, [mine[k % len(mine)]], (i % span) * size)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scattered", action="store_true", help="warm it as a cold 4-reader ring leaves it")
    parser.add_argument("--sizes", type=sizes, default=SIZES, help="request sizes, comma-separated")
    parser.add_argument("--footprints", type=sizes, default=FOOTPRINTS, help="slot bytes; 0: one slot per thread")
    parser.add_argument("--threads", type=lambda v: tuple(int(x) for x in v.split(",")), default=THREADS)
    parser.add_argument("--read-bytes", type=sizes, default=(READ_BYTES,), help="bytes each measurement reads")
    args = parser.parse_args()
    if not args.file.is_file():
        parser.error(f"{args.file}: no such file")
    size = args.file.stat().st_size
    if args.scattered:
        pagecache.drop(args.file)
        pread_all(args.file, size, 4)
    else:
        pagecache.warm(args.file, fresh=True)
    print(f"{args.file}: {'read back cold by 4 threads' if args.scattered else 'dropped, read back by one thread'}",
          flush=True)
    rows = []
    fd = os.open(args.file, os.O_RDONLY)
    try:
        print(f"{'request':>8} {'footprint':>10} {'threads':>7} {'read':>6} {'GB/s per thread':>16} {'(runs)':>24}",
              flush=True)
        grid = [(r, f, t, b) for r in args.sizes for f in args.footprints for t in args.threads
                for b in args.read_bytes if not (f and f < r)]
        times: dict[tuple, list[float]] = {point: [] for point in grid}
        for _ in range(args.repeat):  # round after round: a burst elsewhere spoils one sample of many points
            for point in grid:
                request, footprint, threads, read_bytes = point
                times[point].append(measure(fd, size, request, footprint, threads, read_bytes))
        for (request, footprint, threads, read_bytes), taken in times.items():
            per_thread = sorted(read_bytes / t / threads / 1e9 for t in taken)
            median = per_thread[len(per_thread) // 2]
            where = f"{footprint >> 20} MiB" if footprint else "1 slot"
            print(f"{request >> 20:>5} MiB {where:>10} {threads:>7} {format_size(read_bytes):>6} {median:>16.2f} "
                  f"{' '.join(f'{v:.2f}' for v in per_thread):>24}", flush=True)
            rows.append({"request": request, "footprint": footprint, "threads": threads, "read_bytes": read_bytes,
                         "gb_per_s_per_thread": median, "runs": per_thread})
    finally:
        os.close(fd)
    if args.json:
        args.json.write_text(json.dumps({"file": str(args.file), "scattered": args.scattered, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
