"""How fast `halsim sweep` runs: 1,000 configurations of llama-3-8b on h100-pcie5.

    python benchmarks/sweep_speed.py [--workers 1,2] [--executors processes,dask] [--json out.json]

Goal: the 1,000 configurations in <= 60 s on a 2-core machine. Prints two
tables: per executor and worker count, the wall time, the CPU time of every
worker and of the busiest one, and the executor's startup — on a machine
shared with other work the wall time measures the neighbours too, so the
table also estimates the wall time on idle cores as startup + busiest
worker's CPU; then what one simulation costs per chunk size (the sweep's time
is almost all simulation, and small chunks dominate it). Every executor's
rows are checked equal to the first one's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from halsim.sweep import make_targets, parse_grid, run_sweep, same_run, simulate_row
from halsim.units import format_size

# 10 chunk sizes x 10 ring depths x 5 reader counts x 2 copy queues = 1,000 configurations.
GRID = ("streaming:chunk=[1MiB,2MiB,4MiB,8MiB,16MiB,32MiB,64MiB,128MiB,256MiB,512MiB],"
        "slots=[1,2,3,4,6,8,12,16,24,32],readers=[1,2,4,8,16],queues=[1,2]")


def per_chunk_cost(target, configs, samples: int) -> list[tuple[int, float, int]]:
    """(chunk, mean CPU seconds per simulation, steps) from a few configurations of each chunk size."""
    from halsim.api import simulate

    rows = []
    for chunk in sorted({c.chunk for c in configs}):
        picked = [c for c in configs if c.chunk == chunk]
        picked = picked[:: max(1, len(picked) // samples)][:samples]
        times = []
        for config in picked:
            start = time.process_time()
            simulate_row(target, config)
            times.append(time.process_time() - start)
        steps = simulate(target.request, target.spec, picked[0]).steps
        rows.append((chunk, statistics.mean(times), steps))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to try, e.g. 1,2")
    parser.add_argument("--executors", default="processes,dask", help="processes, dask and/or serial")
    parser.add_argument("--grid", default=GRID)
    parser.add_argument("--workload", default="llama-3-8b")
    parser.add_argument("--platform", default="h100-pcie5")
    parser.add_argument("--samples", type=int, default=3, help="configurations timed per chunk size")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()

    configs = parse_grid(args.grid)
    targets = make_targets([args.platform], [args.workload])
    tiny = make_targets([args.platform], ["test-small"])  # times an executor's startup alone
    distinct = len({same_run(c, targets[0]) for c in configs})
    print(f"{len(configs)} configurations of {args.workload} on {args.platform} ({distinct} distinct runs: "
          f"readers beyond the slots change nothing); {os.cpu_count()} cores, Python {platform.python_version()}")

    timings, reference = [], None
    for executor in args.executors.split(","):
        for workers in (int(w) for w in args.workers.split(",")):
            if executor == "serial" and workers != 1:
                continue
            start = time.perf_counter()
            run_sweep(["import"], tiny, executor=executor, workers=workers)
            startup = time.perf_counter() - start
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            result = run_sweep(configs, targets, executor=executor, workers=workers)
            seconds = time.perf_counter() - start
            load = max(load_before, os.getloadavg()[0])
            busiest = max(result.worker_cpu.values())
            if reference is None:
                reference = result.frame
            same = result.frame.equals(reference)
            timings.append({"executor": executor, "workers": workers, "seconds": seconds, "startup": startup,
                            "cpu": result.cpu_seconds, "busiest_worker_cpu": busiest,
                            "idle_estimate": startup + busiest, "same_rows": same, "load": load})
            print(f"  {executor} x{workers}: {seconds:.1f} s wall, {result.cpu_seconds:.1f} CPU-s "
                  f"(busiest worker {busiest:.1f}), startup {startup:.1f} s, load average {load:.1f}", flush=True)

    # On a shared machine wall time measures the neighbours too; CPU time does not. A sweep's
    # wall on idle cores is about the executor's startup plus its busiest worker's CPU time.
    print("\n| executor | workers | wall s (this machine) | CPU s, all workers | busiest worker CPU s | "
          "startup s | est. wall on idle cores | speed-up vs 1 worker (est.) | <= 60 s (est.) | rows equal | "
          "load avg |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|---:|")
    for run in timings:
        one = next((r["idle_estimate"] for r in timings if r["executor"] == run["executor"] and r["workers"] == 1),
                   None)
        speedup = f"{one / run['idle_estimate']:.2f}x" if one else "-"
        print(f"| {run['executor']} | {run['workers']} | {run['seconds']:.1f} | {run['cpu']:.1f} | "
              f"{run['busiest_worker_cpu']:.1f} | {run['startup']:.1f} | {run['idle_estimate']:.1f} | {speedup} | "
              f"{'yes' if run['idle_estimate'] <= 60 else 'no'} | {'yes' if run['same_rows'] else 'NO'} | "
              f"{run['load']:.1f} |")

    runs = list(dict.fromkeys(same_run(c, targets[0]) for c in configs))
    costs = per_chunk_cost(targets[0], runs, args.samples)
    counts = {chunk: sum(1 for c in runs if c.chunk == chunk) for chunk, _, _ in costs}
    total = sum(counts[chunk] * mean for chunk, mean, _ in costs)
    print(f"\nOne simulation, by chunk size ({args.samples} configurations each, this process):\n")
    print("| chunk | plan steps | CPU s per simulation | CPU us per step | distinct runs | share of sweep CPU |")
    print("|---:|---:|---:|---:|---:|---:|")
    for chunk, mean, steps in costs:
        print(f"| {format_size(chunk)} | {steps} | {mean:.3f} | {mean / steps * 1e6:.0f} | {counts[chunk]} | "
              f"{counts[chunk] * mean / total:.0%} |")
    print(f"\nEstimated single-core CPU for the grid's distinct runs: {total:.0f} s")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"configs": len(configs), "runs": timings, "cores": os.cpu_count(),
                       "per_chunk": [{"chunk": c, "seconds": m, "steps": s} for c, m, s in costs]}, f, indent=1)


if __name__ == "__main__":
    main()
