"""How fast the simulator runs: a 100 GiB upload in 4 MiB chunks (issue 3's goal: <= 1 s).

25,600 chunks of ``streaming:chunk=4MiB,slots=4,readers=4`` on ``h100-pcie5``
(the H100's memory raised to 128 GiB so 100 GiB fits). Planning (pure policy
code) and simulating (engine + simulator) are timed apart; events are the
simpy events processed (a flow's completion resumes its step inline, so
there are about as many as instants at which something changes); "sim s" is wall time, "cpu s" this process's CPU time (the
fairer number on a busy machine). Not a test: nothing here is asserted.

    python benchmarks/sim_speed.py [--repeat N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from halsim.engine import Engine
from halsim.platform import load_platform
from halsim.policies import parse_policy
from halsim.request import BufferSpec, SourceInfo, Transfer, UploadRequest
from halsim.sim import Simulator

GiB = 1 << 30
GOAL_SECONDS = 1.0


def big_request(total: int = 100 * GiB, tensors: int = 400) -> UploadRequest:
    size = total // tensors
    buffers = tuple(BufferSpec(f"t{i}", size) for i in range(tensors))
    transfers = tuple(Transfer(i * size, i, 0, size) for i in range(tensors))
    return UploadRequest(SourceInfo("synthetic-100gib.safetensors", tensors * size, 4096, True), buffers, transfers)


def h100_with_room():
    p = load_platform("h100-pcie5")
    return p.model_copy(update={"gpus": (p.gpus[0].model_copy(update={"memory": 128 * GiB}),)})


def one_run(request, spec: str, mode: str = "overlapped", platform=None) -> dict:
    sim = Simulator(platform or h100_with_room())
    device = sim.device(0)
    t0 = time.perf_counter()
    plan = parse_policy(spec).plan(request, device.caps)
    t1 = time.perf_counter()
    first_event = next(sim.env._eid)
    c1 = time.process_time()
    result = Engine(mode).run(plan, None, [device])
    t2 = time.perf_counter()
    cpu = time.process_time() - c1
    events = next(sim.env._eid) - first_event - 1
    return {"steps": len(plan), "events": events, "plan_s": t1 - t0, "sim_s": t2 - t1, "cpu_s": cpu,
            "simulated_s": result.seconds, "gb_per_s": request.total_bytes / result.seconds / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is shown")
    parser.add_argument("--profile", action="store_true", help="profile the main case instead")
    args = parser.parse_args()
    request = big_request()
    main_case = "streaming:chunk=4MiB,slots=4,readers=4"
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(one_run, request, main_case)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return
    cases = [
        (main_case, "overlapped"),
        (main_case, "serial"),
        ("streaming:chunk=4MiB,slots=8,readers=8,queues=2", "overlapped"),
        ("staged:chunk=4MiB", "overlapped"),
    ]
    header = (f"{'case':52} {'steps':>7} {'events':>8} {'plan s':>7} {'sim s':>7} {'cpu s':>7} "
              f"{'events/s':>10} {'steps/s':>9} {'sim GB/s':>9}")
    print(header)
    print("-" * len(header))
    for spec, mode in cases:
        best = min((one_run(request, spec, mode) for _ in range(args.repeat)), key=lambda r: r["sim_s"])
        label = f"{spec} ({mode})"
        print(f"{label:52} {best['steps']:7d} {best['events']:8d} {best['plan_s']:7.3f} {best['sim_s']:7.3f} "
              f"{best['cpu_s']:7.3f} "
              f"{best['events'] / best['sim_s']:10,.0f} {best['steps'] / best['sim_s']:9,.0f} {best['gb_per_s']:9.2f}")
        if (spec, mode) == cases[0]:
            verdict = "meets" if best["sim_s"] <= GOAL_SECONDS else "misses"
            print(f"{'':52} goal: simulate 100 GiB in <= {GOAL_SECONDS:.0f} s -> {best['sim_s']:.3f} s wall "
                  f"({best['cpu_s']:.3f} s CPU), {verdict} it")


if __name__ == "__main__":
    main()
