"""Does the drive keep reading while a cold file's one reader pauses between requests?

    python benchmarks/cold_pauses.py [--bytes 1GiB] [--rounds 3] [--dir DIR] [--json OUT.json]

A one-slot streaming ring reads a request, then waits for its copy before reading the
next: the reader pauses. If the kernel (or whatever serves the "drive" of a VM) reads
ahead during the pause, the next request finds part of its bytes already in memory and
the pause costs less than its length. The simulator's cold read (latency + bytes at the
drive's rate) assumes the drive idles. This drops a scratch file from the page cache and
reads it sequentially with ``preadv`` into one reused buffer, spinning for a fixed pause
after each request, by request size and by pause (a share of the request's own read
time), in interleaved rounds. It prints, for each cell, the read time without the pauses
against the same size with no pause, and the share of the pauses that was hidden:
``1 - (T(pause) - T(0)) / total pause``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from halsim import pagecache
from halsim.calibrate import scratch_file
from halsim.units import format_size, parse_size

MiB = 1 << 20
SIZES = (4 * MiB, 16 * MiB, 64 * MiB)
SHARES = (0.0, 0.03, 0.1, 0.3, 1.0)  # each pause as a share of the request's read time
GUESS_RATE = 1.6e9  # bytes/s, to size the pauses before anything is measured


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def cold_run(path: Path, length: int, size: int, pause: float, buffer: memoryview) -> tuple[float, float]:
    """(seconds in total, seconds paused): ``length`` bytes read cold in ``size`` requests."""
    pagecache.drop(path)
    fd = os.open(path, os.O_RDONLY)
    paused = 0.0
    try:
        start = time.perf_counter()
        for offset in range(0, length, size):
            os.preadv(fd, [buffer[: min(size, length - offset)]], offset)
            if pause:
                t0 = time.perf_counter()
                spin(pause)
                paused += time.perf_counter() - t0
        return time.perf_counter() - start, paused
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", default="1GiB", help="size of the scratch file (default 1GiB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the scratch file goes (default: the temp dir)")
    parser.add_argument("--json", default=None, help="write every run here")
    args = parser.parse_args()
    length = parse_size(args.bytes)

    path = scratch_file(args.dir or tempfile.gettempdir(), length, "halsim-cold-pauses-")
    runs: dict[tuple[int, float], list[tuple[float, float]]] = {(s, p): [] for s in SIZES for p in SHARES}
    try:
        buffer = memoryview(np.ones(max(SIZES), np.uint8))
        for round_ in range(args.rounds):
            order = list(runs)
            random.Random(round_).shuffle(order)
            for size, share in order:
                runs[(size, share)].append(cold_run(path, length, size, share * size / GUESS_RATE, buffer))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        path.unlink(missing_ok=True)

    window = pagecache.read_ahead_bytes(path.parent)
    print(f"{format_size(length)} cold, one reader; readahead {format_size(window) if window else 'unknown'}; "
          f"median of {args.rounds} rounds")
    print(f"{'request':>8} {'pause':>9} {'GB/s':>6} {'reading':>8} {'vs none':>8} {'hidden':>7}")
    for size in SIZES:
        bare = statistics.median(t for t, _ in runs[(size, 0.0)])
        for share in SHARES:
            total = statistics.median(t for t, _ in runs[(size, share)])
            paused = statistics.median(p for _, p in runs[(size, share)])
            reading = total - paused
            hidden = f"{1 - (total - bare) / paused:>6.0%}" if paused else f"{'':>6}"
            print(f"{format_size(size):>8} {share * size / GUESS_RATE * 1e3:>7.2f}ms {length / total / 1e9:>6.2f} "
                  f"{reading:>8.3f} {reading / bare:>8.2f} {hidden:>7}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "bytes": length, "read_ahead": window, "guess_rate": GUESS_RATE,
            "runs": [{"size": s, "share": p, "seconds": [t for t, _ in v], "paused": [q for _, q in v]}
                     for (s, p), v in runs.items()]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
