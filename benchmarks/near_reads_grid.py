"""Page-cache reads into a ring of slots through the device's engine: the rate by request size, readers and footprint.

    python benchmarks/near_reads_grid.py --device cuda:0 [--rounds 5] [--json OUT.json]

Calibration's ``near`` probes measure one reader's 4 MiB requests into 16..128 MiB of
slots against the same requests into 256 MiB, and the simulator gives every ring the
speedup of its footprint whatever its request size and readers. This measures whether
that holds: warm reads through the device's own staging (pinned on CUDA), each run
``readers`` readers taking the slots in turn, rounds interleaved and each round in a
fresh random order so drift spreads over the grid. It prints, for each request size and
reader count, every footprint's rate per reader and its speedup over the largest footprint.
(``read_footprint.py`` measured the same with bare ``preadv`` threads into ordinary memory,
one configuration after another; this goes through the engine and the staging a ring uses.)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys

from halsim.calibrate import _engine_run, _spans, _wall, ring_read_plan, target_for

MiB = 1 << 20
SIZES = (4 * MiB, 16 * MiB, 64 * MiB)
READERS = (1, 2)
FOOTPRINTS = tuple(f * MiB for f in (16, 32, 64, 128, 256, 512))
RUN_BYTES = 512 * MiB  # bytes a run reads (at least two passes over its slots)


def reads_per_run(size: int, footprint: int) -> int:
    """RUN_BYTES of requests, and at least two passes over the slots."""
    return max(2 * (footprint // size), RUN_BYTES // size)


def cells() -> list[tuple[int, int, int]]:
    """(request size, readers, footprint), each reader with slots of its own to take in turn."""
    return [(size, readers, footprint) for size in SIZES for readers in READERS for footprint in FOOTPRINTS
            if footprint // size >= readers and (footprint // size) % readers == 0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scratch-dir", default=None, help="where the scratch file goes (default: the temp dir)")
    parser.add_argument("--json", default=None, help="write every run's seconds here")
    args = parser.parse_args()

    grid = cells()
    longest = max(reads_per_run(s, f) * s for s, _, f in grid)
    target = target_for(args.device, args.scratch_dir)
    target.open(longest)
    seconds: dict[tuple[int, int, int], list[float]] = {cell: [] for cell in grid}
    try:
        for round_ in range(args.rounds):
            order = list(grid)
            random.Random(round_).shuffle(order)
            for size, readers, footprint in order:
                with target.source(cold=False) as (file, source):
                    plan = ring_read_plan(source, size, reads_per_run(size, footprint), readers, footprint // size)
                    trace = _engine_run(plan, file, target.device, "serial" if readers == 1 else "overlapped")
                seconds[(size, readers, footprint)].append(_wall(_spans(trace, "read/", "read")))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        target.close()

    print(f"device {args.device}: GB/s per reader (speedup over the largest footprint), median of {args.rounds}")
    print(f"{'request':>8} {'readers':>7} " + " ".join(f"{f // MiB:>12}MiB" for f in FOOTPRINTS))
    for size in SIZES:
        for readers in READERS:
            rates = {}
            for footprint in FOOTPRINTS:
                if (size, readers, footprint) in seconds:
                    rates[footprint] = reads_per_run(size, footprint) * size / readers / \
                        statistics.median(seconds[(size, readers, footprint)])
            far = rates[max(rates)]
            row = " ".join(f"{rates[f] / 1e9:>7.2f} ({rates[f] / far:.2f})" if f in rates else f"{'':>15}"
                           for f in FOOTPRINTS)
            print(f"{size // MiB:>6}MiB {readers:>7} {row}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"device": args.device, "run_bytes": RUN_BYTES,
                       "runs": [{"size": s, "readers": r, "footprint": f, "seconds": v}
                                for (s, r, f), v in seconds.items()]}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
