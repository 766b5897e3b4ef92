"""How fast a cold file reads, over the course of the read: is the drive's rate steady?

    python benchmarks/cold_read_profile.py FILE [--scratch-bytes 1GiB] [--json OUT.json]

The calibration measures cold reads on a 1 GiB scratch file, in well under a
second each; an upload of a 4 GiB file reads cold for about three. A drive that
bursts (a cloud disk with a throughput allowance) looks faster to the first than
to the second. This script drops ``FILE`` from the page cache and reads it in
several ways, recording when each request completed, then prints the rate over
the whole read, over its first GiB and over the rest, and per quarter second:

- ``pread``, 16 MiB requests, on 1 and on 4 threads (the streaming rings);
- through a mapping, ``MADV_POPULATE_READ`` in 256 MiB pieces (what a cold
  import's registration does: it faults the pages in);
- the first ``--scratch-bytes`` of the file only, on 4 threads (the size of
  the calibration's probes), before and after the long reads;
- the 4-thread read again after ten idle seconds (a burst allowance refills).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import threading
import time
from pathlib import Path

from halsim import pagecache
from halsim.units import format_size, parse_size

REQUEST = 16 << 20
PIECE = 256 << 20
WINDOW = 0.25  # seconds per row of the rate over time
IDLE = float(os.environ.get("HALSIM_COLD_IDLE", "10"))


def pread_all(path: Path, length: int, threads: int) -> list[tuple[float, int]]:
    """Read [0, length) in REQUEST-sized preads on ``threads`` threads: (seconds, bytes) per request."""
    done: list[tuple[float, int]] = []
    lock = threading.Lock()
    next_offset = [0]
    fd = os.open(path, os.O_RDONLY)
    buffers = [bytearray(REQUEST) for _ in range(threads)]
    start = time.perf_counter()

    def worker(k: int) -> None:
        view = memoryview(buffers[k])
        while True:
            with lock:
                offset = next_offset[0]
                next_offset[0] += REQUEST
            if offset >= length:
                return
            n = os.preadv(fd, [view[: min(REQUEST, length - offset)]], offset)
            with lock:
                done.append((time.perf_counter() - start, n))

    try:
        pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        os.close(fd)
    return sorted(done)


def populate_all(path: Path, length: int) -> list[tuple[float, int]]:
    """Fault [0, length) in through a mapping, PIECE at a time (as registering a cold mapping does)."""
    advice = getattr(mmap, "MADV_POPULATE_READ", 22)  # Linux 5.14
    done = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), length, prot=mmap.PROT_READ) as m:
        start = time.perf_counter()
        for offset in range(0, length, PIECE):
            n = min(PIECE, length - offset)
            m.madvise(advice, offset, n)
            done.append((time.perf_counter() - start, n))
    return done


def summarise(label: str, done: list[tuple[float, int]]) -> dict:
    total = sum(n for _, n in done)
    seconds = done[-1][0]
    first_gib, first_seconds = 0, 0.0
    for t, n in done:
        if first_gib >= 1 << 30:
            break
        first_gib += n
        first_seconds = t
    rest = total - first_gib
    windows, edge, acc = [], WINDOW, 0
    for t, n in done:
        while t > edge:
            windows.append(acc / WINDOW / 1e9)
            acc, edge = 0, edge + WINDOW
        acc += n
    row = {"label": label, "bytes": total, "seconds": seconds, "gb_per_s": total / seconds / 1e9,
           "first_gib_gb_per_s": first_gib / first_seconds / 1e9 if first_seconds else None,
           "rest_gb_per_s": rest / (seconds - first_seconds) / 1e9 if rest and seconds > first_seconds else None,
           "per_window_gb_per_s": [round(w, 3) for w in windows]}
    rest_text = f"{row['rest_gb_per_s']:.2f}" if row["rest_gb_per_s"] else "-"
    print(f"{label:<50} {format_size(total):>9} {seconds:>7.2f} s {row['gb_per_s']:>6.2f} GB/s   "
          f"first GiB {row['first_gib_gb_per_s'] or 0:>5.2f}, after {rest_text:>5}   "
          f"per {WINDOW:g} s: {' '.join(f'{w:.2f}' for w in windows[:16])}", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--scratch-bytes", default="1GiB", help="the calibration's probe size")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.file.is_file():
        parser.error(f"{args.file}: no such file")
    size = args.file.stat().st_size
    scratch = min(parse_size(args.scratch_bytes), size)
    print(f"{args.file} ({format_size(size)}); cold reads, dropped from the page cache before each", flush=True)
    rows = []

    def cold(label, read):
        pagecache.drop(args.file)
        rows.append(summarise(label, read()))

    cold(f"first {format_size(scratch)}, pread 16 MiB x 4 threads", lambda: pread_all(args.file, scratch, 4))
    cold("whole file, pread 16 MiB x 4 threads", lambda: pread_all(args.file, size, 4))
    cold("whole file, pread 16 MiB x 1 thread", lambda: pread_all(args.file, size, 1))
    cold("whole file, mapped, populated 256 MiB at a time", lambda: populate_all(args.file, size))
    cold(f"first {format_size(scratch)}, pread 16 MiB x 4 threads, again", lambda: pread_all(args.file, scratch, 4))
    pagecache.drop(args.file)
    time.sleep(IDLE)
    rows.append(summarise(f"whole file, pread 16 MiB x 4, after {IDLE:g} s idle", pread_all(args.file, size, 4)))
    if args.json:
        args.json.write_text(json.dumps({"file": str(args.file), "bytes": size, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
