"""Warm uploads by how the page cache came to hold the file, and by their place after it.

    python benchmarks/warm_state.py [--device cuda:0] [--dir DIR] [--layers 5]
        [--policy SPEC ...] [--rounds 7] [--json OUT.json]

``halsim compare`` warms a file once (dropped, then read sequentially by one
thread) and then counts it warm for as long as it stays cached. A cold case
leaves it cached too, but read in by that case's readers, and the warm cases
that come next (in ``fidelity_gpu.py``, the ``--extra`` rings, and the next
round's first case) run on that cache. On the lent H200 VM the 16-slot extra
ran 1.30-1.44x slower than the 8-slot one in fidelity runs 56-59, right after
the cold block, where ``ring_footprint.py`` (fresh warm, rows interleaved)
gave 1.07-1.17x (docs/fidelity-log.md, fourteenth session). This times each policy
on the fidelity runs' model file after each of two preludes, first and second
after it, in rounds whose order changes:

* ``fresh``: ``pagecache.warm(fresh=True)``, as ``compare`` warms;
* ``after-cold``: the file dropped, then one cold upload by ``COLD_POLICY``
  (the last cold case of a fidelity round).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import halsim
from halsim import pagecache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_gpu import LAYERS  # noqa: E402  (the fidelity runs' model file)
from fidelity_gpu import make_file as make_llama  # noqa: E402

POLICIES = ("streaming:chunk=16MiB,slots=16,readers=8", "streaming:chunk=16MiB,slots=8,readers=8")
COLD_POLICY = "direct:chunk=16MiB,readers=4"
PRELUDES = ("fresh", "after-cold")


def prelude(kind: str, path: Path, device) -> None:
    if kind == "fresh":
        pagecache.warm(path, fresh=True)
        return
    pagecache.drop(path)
    with halsim.upload(path, device, COLD_POLICY):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/halsim-fidelity"))
    parser.add_argument("--layers", type=int, default=LAYERS, help="decoder layers of the model file (5: 4.3 GB)")
    parser.add_argument("--policy", action="append", default=None, metavar="SPEC",
                        help="a warm policy to time (repeatable; default: the 16 MiB x 8-reader rings of 16 and 8 slots)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = halsim.get_device(args.device)
    path = make_llama(args.dir, args.layers)
    policies = args.policy or list(POLICIES)
    # Every prelude, then the policies in every order: each policy first and later after each prelude.
    sequences = [(kind, order) for kind in PRELUDES for order in itertools.permutations(policies)]
    runs: dict[tuple[str, str, int], list[float]] = {}
    began = time.perf_counter()
    for round_ in range(-1, args.rounds):  # round -1 warms code paths and drivers; dropped
        for k in range(len(sequences)):
            kind, order = sequences[(k + max(round_, 0)) % len(sequences)]  # each round starts one later
            prelude(kind, path, device)
            for place, policy in enumerate(order):
                with halsim.upload(path, device, policy) as done:
                    seconds = done.report.seconds
                if round_ >= 0:
                    runs.setdefault((kind, policy, place), []).append(seconds)
        print(f"[{time.perf_counter() - began:5.1f}s] round {round_ + 1}/{args.rounds}", flush=True)
    print(f"\n{device.name} ({getattr(device, 'product', '')}), {path.name}, {args.rounds} rounds; "
          "median seconds (half the range, relative)")
    print(f"{'prelude':>10} {'policy':<45} " + " ".join(f"{f'place {p + 1}':>15}" for p in range(len(policies))))
    for kind in PRELUDES:
        for policy in policies:
            cells = []
            for place in range(len(policies)):
                got = runs[(kind, policy, place)]
                middle = statistics.median(got)
                cells.append(f"{middle:>8.4f} ±{(max(got) - min(got)) / 2 / middle:>4.0%}")
            print(f"{kind:>10} {policy:<45} " + " ".join(f"{c:>15}" for c in cells))
    if args.json:
        args.json.write_text(json.dumps({
            "device": device.name, "product": getattr(device, "product", ""), "file": path.name,
            "file_bytes": path.stat().st_size, "rounds": args.rounds, "cold_policy": COLD_POLICY,
            "rows": [{"prelude": kind, "policy": policy, "place": place + 1, "seconds": got}
                     for (kind, policy, place), got in runs.items()]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
