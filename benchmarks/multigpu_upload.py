"""Sharded upload to 1, 2, 4 and 8 GPUs: aggregate and per-GPU GB/s, measured next to predicted.

    python benchmarks/multigpu_upload.py OUT [--policy SPEC] [--gpus 1,2,4,8] [--shard whole,rows]
                                         [--dir DIR] [--layers 15] [--repeat 3] [--quick] [--calibrated TOML]
                                         [--per-switch K]
    python benchmarks/multigpu_upload.py --simulate-only dgx-h100 [OUT] [--per-switch K]

One page-cached Llama-3-8B-like safetensors file (embedding, norm and LM head
plus the first ``--layers`` decoder layers; 15: 8.05 GiB in 138 BF16 tensors,
written with the workload catalogue's ``pattern`` fill) is uploaded with
``halsim.upload(path, devices=["cuda:0", ..., "cuda:N-1"], shard=...)`` for
every N of ``--gpus`` the machine has: one Engine drives all N GPUs, which
share the host's memory bandwidth and the policy's reader threads. Two
policies: the best one-GPU policy (``--policy``, by default the fastest
page-cached streaming ring of docs/benchmarks/cuda.md) and ``import``; two
shardings: ``whole`` (tensors dealt to GPUs, biggest first) and ``rows`` (each
tensor split by its first dimension, tensor-parallel style).

Before that, ``cuda:0`` is calibrated (``halsim.calibrate``: microbenchmarks
fitted into a one-GPU Platform; ``--calibrated`` reuses a saved one) and the
platform is extended to N GPUs — copies of GPU 0, each on its own link, and
with ``--per-switch K`` every K GPUs behind one PCIe switch whose uplink runs
at the link's rate (a DGX H100 has pairs). Each measured row (median of
``--repeat`` runs after a warm-up run; bytes checked at the head, middle and
tail of every buffer) sits next to the simulator's prediction for the same
file, policy, sharding and N. Seconds are the engine's (allocation, transfer,
release: what the simulator models); the end-to-end wall time is in the JSON.

Prints one table; writes OUT.json (everything) and OUT.md (the table).
Without a CUDA GPU it says why and exits with status 2. ``--simulate-only
PLATFORM`` needs no GPU: it prints the predicted table for a catalogue
platform (or a ``.toml``), extended to 8 GPUs when it has fewer.
``--backend cpu`` runs the measuring path on N CPU devices (host memory
standing in for GPUs) to check the script itself where there is no GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import halsim
from halsim import pagecache
from halsim.errors import PlatformError
from halsim.formats import read_index
from halsim.platform import Platform, load_platform, platform_from_dict
from halsim.registry import get_devices
from halsim.units import format_size
from halsim.workloads import Workload, load_workload, pattern_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under python -P
from bench_host import host_facts  # noqa: E402

GB = 1e9
DEFAULT_POLICY = "streaming:chunk=16MiB,slots=16,readers=8,queues=2"
IMPORT_POLICY = "import"
GPU_COUNTS = (1, 2, 4, 8)
DATE = _dt.date.today().isoformat()


# ----- the file --------------------------------------------------------------------------------


def llama_like(layers: int) -> Workload:
    full = load_workload("llama-3-8b")
    keep = [t for t in full.tensors
            if not t.name.startswith("model.layers.") or int(t.name.split(".")[2]) < layers]
    return Workload(name=f"llama-3-8b-{layers}-layers", dtype=full.dtype, tensors=tuple(keep),
                    description=f"Llama 3 8B with its first {layers} decoder layers", source=full.source)


def make_file(folder: Path, workload: Workload) -> Path:
    path = folder / workload.file_name
    want = workload.index()
    if path.exists() and path.stat().st_size == want.file_length:
        try:
            if [(t.name, t.offset) for t in read_index(path).tensors] == [(t.name, t.offset) for t in want.tensors]:
                return path
        except Exception:  # a broken leftover: write it again
            pass
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    workload.write(path, "pattern")  # every byte is a function of its offset: checkable on the GPU
    print(f"wrote {path} ({format_size(path.stat().st_size)}) in {time.perf_counter() - start:.1f} s", flush=True)
    return path


# ----- the platform, extended to N GPUs ----------------------------------------------------------


def extend(platform: Platform, gpus: int, per_switch: int = 0) -> Platform:
    """``platform`` with at least ``gpus`` GPUs: a platform that has them is kept as it is
    (its own topology), else GPU 0 is copied, each copy on its own link (links are point to
    point) and, with ``per_switch``, every ``per_switch`` GPUs behind one switch whose uplink
    runs at the link's rate."""
    if len(platform.gpus) >= gpus:
        return platform
    data = platform.model_dump()
    base, link = data["gpus"][0], platform.link_of(0)
    groups = -(-gpus // per_switch) if per_switch > 0 else 0
    data["switches"] = [{"name": f"switch-{k}", "h2d": link.h2d, "d2h": link.d2h} for k in range(groups)]
    data["gpus"] = [{**base, "name": f"{base['name']} #{i}", "switch": f"switch-{i // per_switch}" if groups else None}
                    for i in range(gpus)]
    topology = f", {per_switch} per PCIe switch" if groups else ", each on its own uplink"
    data["description"] = f"{platform.description or platform.name}; GPU 0 x {gpus}{topology}"
    return platform_from_dict(data, f"{platform.name} extended to {gpus} GPUs")


def predict(platform: Platform, workload: Workload, policy: str, gpus: int, shard: str) -> dict[str, Any]:
    request = workload.request(devices=gpus, shard=shard, page_cached=True)
    report = halsim.simulate(request, platform, policy, gpus=gpus)
    return {"seconds": report.seconds, "gb_per_s": report.bytes / report.seconds / GB,
            "per_gpu_gb_per_s": report.bytes / report.seconds / GB / gpus, "ran": report.policy,
            "staging_bytes": report.peak_staging_bytes, "bound": _bound(report)}


def _bound(report) -> str:
    """The resource that held the simulated run back longest."""
    totals: dict[str, float] = {}
    for step in report.trace.meta.get("sim_bound", {}).values():
        for what, seconds in step.items():
            totals[what] = totals.get(what, 0.0) + seconds
    return max(totals, key=totals.get) if totals else ""


# ----- measuring -----------------------------------------------------------------------------------


def sample_check(upload, span: int = 64 * 1024) -> None:
    """Compare the first, middle and last bytes of every buffer with the file's pattern."""
    request = upload.plan.request
    buffers = upload.result.buffers
    for t in request.transfers:
        if not t.length:
            continue
        buffer = buffers[t.buffer]
        # A GPU buffer reads back a range; others (--backend cpu) hand over all their bytes, once.
        whole = None if hasattr(buffer, "read_range") else buffer.to_bytes()
        for at in sorted({0, max(0, t.length // 2 - span // 2), max(0, t.length - span)}):
            n = min(span, t.length - at)
            lo = t.buffer_offset + at
            got = buffer.read_range(lo, n) if whole is None else whole[lo : lo + n]
            if got != pattern_bytes(t.file_offset + at, n).tobytes():
                raise RuntimeError(f"{buffer.name}: bytes at +{at} differ from the file")


def measure(devices: list, path: Path, index, policy: str, shard: str, repeat: int) -> dict[str, Any]:
    """``repeat`` sharded uploads after one warm-up: engine and wall seconds, per-device rates."""
    engine, wall, per_device = [], [], []
    ran, staging, notes = "", 0, []
    pagecache.warm(path)  # page-cached rows: put back whatever a calibration or another row pushed out
    for r in range(repeat + 1):
        start = time.perf_counter()
        done = halsim.upload(path, devices=devices, policy=policy, shard=shard, index=index)
        elapsed = time.perf_counter() - start
        try:
            sample_check(done)
            report = done.report
            if r:  # run 0 warms threads, contexts and the driver's allocators
                engine.append(report.seconds)
                wall.append(elapsed)
                per_device.append(_device_rates(done))
            ran, staging, notes = report.policy, report.peak_staging_bytes, list(report.notes)
        finally:
            done.free()
    seconds = statistics.median(engine)
    nbytes = index.total_bytes
    median_run = per_device[engine.index(sorted(engine)[(len(engine) - 1) // 2])]
    return {"seconds": engine, "wall_seconds": wall, "gb_per_s": nbytes / seconds / GB,
            "per_gpu_gb_per_s": nbytes / seconds / GB / len(devices),
            "wall_gb_per_s": nbytes / statistics.median(wall) / GB,
            "spread": (max(engine) - min(engine)) / 2 / seconds,
            "per_device_gb_per_s": median_run, "ran": ran, "staging_bytes": staging, "notes": notes}


def _device_rates(done) -> list[float]:
    """Each device's bytes over the time from its first step's start to its last step's end."""
    request = done.plan.request
    rates = []
    for d in request.devices:
        spans = [s for s in done.report.trace.spans if s.device == d and s.step >= 0]
        nbytes = sum(b.size for b in request.buffers if b.device == d)
        busy = max(s.end for s in spans) - min(s.start for s in spans) if spans else 0.0
        rates.append(nbytes / busy / GB if busy > 0 else 0.0)
    return rates


# ----- devices -----------------------------------------------------------------------------------------


def cuda_count() -> tuple[int, str]:
    """(CUDA GPUs here, why none) — the reason is the driver's or the bindings'."""
    from halsim.backends import cuda_driver
    from halsim.errors import DeviceUnavailableError

    try:
        count = cuda_driver.device_count()
    except DeviceUnavailableError as err:
        return 0, str(err)
    return count, "" if count else "the CUDA driver reports no GPU"


def environment(devices: list, backend: str) -> dict[str, Any]:
    return {**host_facts(cuda=backend == "cuda"), "backend": backend, "devices": [d.name for d in devices],
            "cards": [getattr(d, "product", d.name) for d in devices]}


# ----- output -------------------------------------------------------------------------------------------


def _num(value: float | None, width: int = 7) -> str:
    return f"{value:{width}.2f}" if isinstance(value, (int, float)) else f"{'—':>{width}}"


def table(rows: list[dict], measured: bool) -> list[str]:
    if measured:
        head = f"{'GPUs':>4}  {'policy':<52} {'shard':<5} {'GB/s':>7} {'/GPU':>7} {'sim':>7} {'/GPU':>7} {'error':>7}"
    else:
        head = f"{'GPUs':>4}  {'policy':<52} {'shard':<5} {'GB/s':>7} {'/GPU':>7} {'staging':>9}  bound by"
    lines = [head, "-" * len(head)]
    for r in rows:
        sim, real = r["predicted"], r.get("measured")
        start = f"{r['gpus']:>4}  {r['policy']:<52} {r['shard']:<5} "
        if measured:
            if real is None or "error" in (real or {}):
                lines.append(start + f"{'—':>7} {'—':>7} {_num(sim['gb_per_s'])} {_num(sim['per_gpu_gb_per_s'])}"
                             f"  {(real or {}).get('error', 'not run')}")
                continue
            error = (sim["seconds"] - statistics.median(real["seconds"])) / statistics.median(real["seconds"])
            lines.append(start + f"{_num(real['gb_per_s'])} {_num(real['per_gpu_gb_per_s'])} "
                                 f"{_num(sim['gb_per_s'])} {_num(sim['per_gpu_gb_per_s'])} {error:+7.1%}")
        else:
            lines.append(start + f"{_num(sim['gb_per_s'])} {_num(sim['per_gpu_gb_per_s'])} "
                                 f"{format_size(sim['staging_bytes']):>9}  {sim['bound']}")
    return lines


def markdown(rows: list[dict], measured: bool) -> str:
    if measured:
        lines = ["| GPUs | policy | shard | measured GB/s | per GPU | predicted GB/s | per GPU | error (time) |",
                 "|---:|---|---|---:|---:|---:|---:|---:|"]
    else:
        lines = ["| GPUs | policy | shard | predicted GB/s | per GPU | staging (all GPUs) | bound by |",
                 "|---:|---|---|---:|---:|---:|---|"]
    for r in rows:
        sim, real = r["predicted"], r.get("measured")
        cells = [str(r["gpus"]), f"`{r['policy']}`", r["shard"]]
        if measured:
            if real is None or "error" in real:
                cells += ["—", "—", f"{sim['gb_per_s']:.2f}", f"{sim['per_gpu_gb_per_s']:.2f}",
                          (real or {}).get("error", "not run")]
            else:
                error = (sim["seconds"] - statistics.median(real["seconds"])) / statistics.median(real["seconds"])
                cells += [f"{real['gb_per_s']:.2f}", f"{real['per_gpu_gb_per_s']:.2f}", f"{sim['gb_per_s']:.2f}",
                          f"{sim['per_gpu_gb_per_s']:.2f}", f"{error:+.1%}"]
        else:
            cells += [f"{sim['gb_per_s']:.2f}", f"{sim['per_gpu_gb_per_s']:.2f}", format_size(sim["staging_bytes"]),
                      sim["bound"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(out: Path | None, body: dict, md_header: str, rows: list[dict], measured: bool) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.with_suffix("") if out.suffix in (".json", ".md") else out
    Path(f"{base}.json").write_text(json.dumps(body, indent=1, default=str))
    Path(f"{base}.md").write_text(md_header + markdown(rows, measured))
    print(f"wrote {base}.json and {base}.md")


# ----- main ---------------------------------------------------------------------------------------------


def plan_rows(counts: list[int], policies: list[str], shards: list[str]) -> list[tuple[int, str, str]]:
    """(N, policy, shard) in table order; one GPU has nothing to shard, so it gets one row per policy."""
    return [(n, p, s) for n in counts for p in policies for s in (shards[:1] if n == 1 else shards)]


def simulate_only(args) -> int:
    try:
        platform = load_platform(args.simulate_only)
    except PlatformError as err:
        print(f"multigpu_upload: {err}", file=sys.stderr)
        return 2
    workload = llama_like(args.layers)
    rows = []
    for n, policy, shard in plan_rows(args.gpus, [args.policy, IMPORT_POLICY], args.shard):
        rows.append({"gpus": n, "policy": policy, "shard": shard,
                     "predicted": predict(extend(platform, n, args.per_switch), workload, policy, n, shard)})
    extended = ""
    if len(platform.gpus) < max(args.gpus):
        extended = f" (GPU 0 copied to N, {f'{args.per_switch} per switch' if args.per_switch else 'own uplinks'})"
    title = (f"predicted on {platform.name}{extended}; {workload.name}, {format_size(workload.total_bytes)} "
             f"in {len(workload.tensors)} tensors, page-cached")
    print(title)
    print("\n".join(table(rows, measured=False)))
    body = {"mode": "simulate-only", "date": DATE, "platform": platform.model_dump(), "workload": workload.name,
            "bytes": workload.total_bytes, "tensors": len(workload.tensors), "per_switch": args.per_switch,
            "rows": rows}
    write(args.out, body, f"{title}\n\n", rows, measured=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("out", type=Path, nargs="?", help="output prefix: OUT.json and OUT.md")
    parser.add_argument("--policy", default=DEFAULT_POLICY, help="the best one-GPU policy (import always runs too)")
    parser.add_argument("--gpus", default="1,2,4,8", type=lambda s: [int(n) for n in s.split(",")],
                        help="GPU counts, as many as the machine has (default 1,2,4,8)")
    parser.add_argument("--shard", default="whole,rows", type=lambda s: s.split(","), help="whole, rows or both")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/halsim-bench"), help="where the file goes")
    parser.add_argument("--layers", type=int, default=15, help="decoder layers in the file (15: 8.05 GiB)")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per row (median), after a warm-up")
    parser.add_argument("--quick", action="store_true", help="quick calibration (seconds, not minutes)")
    parser.add_argument("--calibrated", type=Path, help="a platform TOML saved by an earlier calibration of cuda:0")
    parser.add_argument("--per-switch", type=int, default=0,
                        help="GPUs behind each PCIe switch in the extended platform (0: each its own uplink)")
    parser.add_argument("--simulate-only", metavar="PLATFORM", help="print the predicted table for PLATFORM; no GPU")
    parser.add_argument("--backend", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a dry run of the measuring path on CPU devices (no GPU needed)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip the remaining rows after this long")
    args = parser.parse_args(argv)
    bad = [s for s in args.shard if s not in ("whole", "rows")]
    if bad:
        parser.error(f"--shard takes whole and/or rows, not {bad[0]!r}")
    if any(n < 1 for n in args.gpus):
        parser.error("--gpus takes positive counts")
    if args.simulate_only:
        return simulate_only(args)
    if args.out is None:
        parser.error("give OUT (the prefix of OUT.json and OUT.md), or --simulate-only PLATFORM")
    began = time.perf_counter()

    if args.backend == "cuda":
        have, why = cuda_count()
        if not have:
            print(f"multigpu_upload: no CUDA GPU here — {why}.\n"
                  "This benchmark measures CUDA GPUs; run it on a machine with one or more, or print the "
                  "prediction alone with --simulate-only PLATFORM (e.g. dgx-h100).", file=sys.stderr)
            return 2
        names = [f"cuda:{i}" for i in range(have)]
    else:
        have, names = max(args.gpus), ["cpu"] * max(args.gpus)
    counts = [n for n in args.gpus if n <= have]
    if not counts:
        print(f"multigpu_upload: the machine has {have} GPU(s); --gpus asks for {args.gpus}", file=sys.stderr)
        return 2
    devices = get_devices(names[: max(counts)])
    env = environment(devices, args.backend)
    print(f"{len(devices)} device(s): {', '.join(sorted(set(env['cards'])))}; measuring N = {counts}", flush=True)

    workload = llama_like(args.layers)
    path = make_file(args.dir, workload)
    index = read_index(path)
    pagecache.warm(path)

    if args.calibrated:
        one_gpu = load_platform(args.calibrated)
        calibration = {"from": str(args.calibrated)}
        print(f"platform: {args.calibrated} (an earlier calibration)", flush=True)
    else:
        from halsim.calibrate import Config, calibrate

        # Full sizes, 3 rounds: minutes, as in benchmarks/fidelity_gpu.py.
        config = Config.quick() if args.quick else dataclasses.replace(Config.full(), repeats=3)
        start = time.perf_counter()
        fitted = calibrate(devices[0], config, scratch_dir=args.dir,
                           name=f"calibrated-{devices[0].name.replace(':', '')}")
        one_gpu = fitted.platform
        calibration = fitted.to_dict()
        fitted.save(Path(f"{args.out.with_suffix('') if args.out.suffix else args.out}.toml"))
        print(f"calibrated {devices[0].name} in {time.perf_counter() - start:.0f} s", flush=True)

    rows = []
    for n, policy, shard in plan_rows(counts, [args.policy, IMPORT_POLICY], args.shard):
        row: dict[str, Any] = {"gpus": n, "policy": policy, "shard": shard,
                               "predicted": predict(extend(one_gpu, n, args.per_switch), workload, policy, n, shard)}
        if time.perf_counter() - began > args.budget_s:
            row["measured"] = {"error": "skipped: time budget spent"}
        else:
            try:
                row["measured"] = measure(devices[:n], path, index, policy, shard, args.repeat)
            except Exception as err:  # one failing row is recorded, the others still run
                row["measured"] = {"error": f"{type(err).__name__}: {err}"}
        rows.append(row)
        real = row["measured"]
        shown = f"{real['gb_per_s']:.2f} GB/s" if "gb_per_s" in real else real["error"]
        print(f"  N={n} {policy} {shard}: {shown} (predicted {row['predicted']['gb_per_s']:.2f})", flush=True)

    title = (f"{len(devices)} x {env['cards'][0]} ({args.backend}), {env['date'][:10]}; {workload.name}, "
             f"{format_size(index.total_bytes)} in {len(index.tensors)} tensors, page-cached; "
             f"median of {args.repeat} after a warm-up; platform: "
             + (str(args.calibrated) if args.calibrated else f"calibrated on {devices[0].name}")
             + (f", {args.per_switch} GPUs per switch" if args.per_switch else ", each GPU its own uplink"))
    print()
    print(title)
    print("\n".join(table(rows, measured=True)))
    body = {"mode": "measured", "environment": env, "file": {"path": str(path), "bytes": index.file_length,
                                                             "tensor_bytes": index.total_bytes,
                                                             "tensors": len(index.tensors)},
            "policy": args.policy, "per_switch": args.per_switch, "calibration": calibration, "rows": rows,
            "seconds": time.perf_counter() - began}
    write(args.out, body, f"{title}\n\n", rows, measured=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
