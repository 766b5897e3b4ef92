"""Simulator fidelity on a GPU: calibrate ``cuda:0``, then predicted vs measured over 16 policy cases.

    python benchmarks/fidelity_gpu.py OUT [--device cuda:0] [--dir DIR] [--repeat 5] [--quick] [--layers 5] [--no-embeddings]
        [--extra SPEC ...] [--no-fit]

1. writes a ~4 GiB Llama-3-8B-like safetensors file (embedding, LM head and the
   first 5 decoder layers: 4.0 GiB in 48 tensors of 8 KiB..1002 MiB) into DIR;
2. ``--repeat`` rounds, each one round of ``halsim calibrate``'s microbenchmarks on
   the device (scratch file in DIR, so cold reads hit the same drive) and then one
   real upload of every case below (after a warm-up run of each in the first):
   streaming with chunks 1 MiB..256 MiB, slots 1..8, readers 1..8, queues 1..2;
   import; direct; staged; page-cached and cold;
3. one Platform fitted from every round's probes, and every case simulated on it:
   the platform comes from the same minutes as the uploads it predicts (these
   VMs move by 10 % and more within minutes: docs/fidelity-log.md, run 12).

``--extra SPEC`` (repeatable): further warm policies, run and predicted with the
others but kept out of the targets and stored apart (``extra`` in OUT.json), so
a question about one case's neighbours does not change the scored set. They run
after the cold cases, on the file read back afresh (until the fourteenth session
they ran on the cache the last cold case left, the first of them 14-20 % slower:
benchmarks/warm_state.py).

``--no-fit``: stop once ``OUT.raw.json`` is written. The fit takes minutes of CPU
(110 of run 53's 218 s on the lent H200 VM) and needs no GPU:
``python3 benchmarks/fidelity_replay.py OUT.raw.json --cases --write DIR`` does it
anywhere, and writes the fitted platform, the table and the JSON.

``--no-interleave``: calibrate first, then every real run, then the probes again,
one size of each (:mod:`halsim.drift`), to show how far the machine moved.

Prints the calibration, the comparison table and the issue's targets (median
|error| <= 5 %, worst <= 15 %, same ranking); writes ``OUT.json`` (calibration
and comparison; ``OUT.raw.json`` holds the same data before the fit, its predictions
those of a stand-in platform), ``OUT.md`` (the table for docs/fidelity.md), ``OUT.toml``
(the platform), ``OUT.perfetto.json`` and ``OUT.png`` (sim above real, per case).
Budget: under 4 minutes on an H100 host with 16 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console

import halsim
from halsim.calibrate import Config, Measurements, calibrate, measure, target_for
from halsim.compare import MEDIAN_ERROR_TARGET, WORST_ERROR_TARGET, Case, compare, pooled
from halsim.drift import median_change, recheck
from halsim.fit import fit_platform
from halsim.policies import parse_policy
from halsim.units import format_size
from halsim.workloads import Workload, load_workload

WARM = [
    "streaming:chunk=1MiB,slots=8,readers=4",
    "streaming:chunk=4MiB,slots=4,readers=2",
    "streaming:chunk=16MiB,slots=8,readers=4",
    "streaming:chunk=16MiB,slots=8,readers=8,queues=2",
    "streaming:chunk=16MiB,slots=1,readers=1",
    "streaming:chunk=64MiB,slots=1,readers=1",  # IREE's default after #14665
    "streaming:chunk=64MiB,slots=2,readers=2,queues=2",
    "streaming:chunk=256MiB,slots=2,readers=1",
    "import",
    "import:piece=64MiB,queues=2",
    "direct:chunk=16MiB,readers=4",
    "staged",
]
COLD = [
    "streaming:chunk=16MiB,slots=8,readers=4",
    "streaming:chunk=64MiB,slots=1,readers=1",
    "import",
    "direct:chunk=16MiB,readers=4",
]
# The real runs of an interleaved comparison are predicted once every round is in; the
# rounds run against this stand-in platform, whose predictions are dropped.
DRAFT_PLATFORM = "h100-pcie5"
LAYERS = 5  # embedding + LM head (2 x 1002 MiB) + 5 layers of 416 MiB: 4.0 GiB


def llama_like(layers: int, embeddings: bool = True) -> Workload:
    full = load_workload("llama-3-8b")
    keep = [t for t in full.tensors
            if (int(t.name.split(".")[2]) < layers if t.name.startswith("model.layers.") else embeddings)]
    name = f"llama-3-8b-{layers}-layers" + ("" if embeddings else "-only")
    return Workload(name=name, dtype=full.dtype, tensors=tuple(keep),
                    description=f"Llama 3 8B's first {layers} decoder layers" + (" and embeddings" if embeddings else ""),
                    source=full.source)


def make_file(folder: Path, layers: int, embeddings: bool = True) -> Path:
    workload = llama_like(layers, embeddings)
    path = folder / workload.file_name
    if path.exists() and path.stat().st_size == workload.index().file_length:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    workload.write(path, "random")  # incompressible, and fast to make
    with open(path, "rb") as f:
        os.fsync(f.fileno())  # a cold run can only drop pages that are written back
    print(f"wrote {path} ({format_size(path.stat().st_size)}) in {time.perf_counter() - start:.1f} s", flush=True)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output prefix: OUT.json, OUT.md, OUT.toml, OUT.perfetto.json, OUT.png")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/halsim-fidelity"), help="where the files go")
    # Five: over 11 stored runs of 3 rounds, one round alone scored a mean worst |error| of 25 % against
    # the three pooled's 17 % (fidelity_replay.py --rounds; docs/fidelity-log.md, seventeenth session).
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds: of calibration and of real runs per case (the median)")
    parser.add_argument("--quick", action="store_true", help="quick calibration, one real run per case (a dry run)")
    parser.add_argument("--no-interleave", dest="interleave", action="store_false",
                        help="calibrate first, then every real run (and the probes again after)")
    parser.add_argument("--layers", type=int, default=LAYERS, help="decoder layers in the file (5: 4.0 GiB)")
    parser.add_argument("--no-embeddings", dest="embeddings", action="store_false",
                        help="leave out the embedding and LM head (2 x 1002 MiB): --layers 1 is then 416 MiB")
    parser.add_argument("--extra", action="append", default=[], metavar="SPEC",
                        help="a further warm policy, reported apart from the scored cases (repeatable)")
    parser.add_argument("--no-fit", dest="fit", action="store_false",
                        help="stop after writing OUT.raw.json: fit it elsewhere with fidelity_replay.py --write")
    args = parser.parse_args()
    if not args.fit and not args.interleave:
        parser.error("--no-fit needs the interleaved rounds (OUT.raw.json is written between them and the fit)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    console = Console(width=160)
    began = time.perf_counter()

    def stamp(what: str) -> None:
        console.print(f"[{time.perf_counter() - began:5.1f}s] {what}", highlight=False)

    device = halsim.get_device(args.device)
    stamp(f"device {device.name}: {device.caps.describe()}")
    path = make_file(args.dir, args.layers, args.embeddings)
    stamp("file ready")

    config = Config.quick() if args.quick else Config.full()
    rounds = 1 if args.quick else args.repeat
    name = f"calibrated-{device.name.replace(':', '')}"
    cases = [Case(parse_policy(s), False, s) for s in WARM] + [Case(parse_policy(s), True, s) for s in COLD]
    extra = [Case(parse_policy(s), False, s) for s in args.extra]

    def split(comparison):
        """The scored cases, and the ``--extra`` ones after them."""
        rows = comparison.rows
        return (dataclasses.replace(comparison, rows=rows[:len(cases)]),
                dataclasses.replace(comparison, rows=rows[len(cases):]))

    def progress(done: int, total: int, what: str) -> None:
        if done < total:
            print(f"  {done}/{total} {what}", flush=True)

    moved = []
    if args.interleave:
        # Round k of calibration, then round k of the real runs: the platform is fitted from
        # probes taken across the same minutes as the uploads it predicts.
        target = target_for(device, args.dir)
        measured, parts = [], []
        for k in range(rounds):
            measured.append(measure(target, dataclasses.replace(config, repeats=1)))
            stamp(f"calibration round {k + 1}/{rounds}")
            parts.append(compare(path, device, DRAFT_PLATFORM, cases + extra, repeat=1, warmup=k == 0,
                                 progress=progress))
            stamp(f"comparison round {k + 1}/{rounds}")
        # Everything measured, before the fit (minutes of CPU on a slow host): a run cut off while
        # fitting keeps its data, and fidelity_replay.py fits it anywhere.
        scored, further = split(pooled(parts, DRAFT_PLATFORM))
        # The card's product name too: a lent machine's kind may stand for more than one card.
        raw = {"device": device.name, "product": getattr(device, "product", device.name),
               "calibration": {"measurements": Measurements.pooled(measured).to_dict()},
               "comparison": scored.to_dict(), "extra": further.to_dict() if extra else None}
        args.out.with_suffix(".raw.json").write_text(json.dumps(raw, indent=1, default=str))
        stamp(f"wrote {args.out}.raw.json")
        if not args.fit:
            console.print(f"not fitted (--no-fit): python3 benchmarks/fidelity_replay.py {args.out}.raw.json "
                          "--cases --write DIR", highlight=False)
            return 0
        calibration = fit_platform(Measurements.pooled(measured), name=name)
        result = pooled(parts, calibration.platform)
        stamp("fitted")
    else:
        calibration = calibrate(device, dataclasses.replace(config, repeats=rounds) if not args.quick else config,
                                scratch_dir=args.dir, name=name)
        stamp("calibrated")
        result = compare(path, device, calibration.platform, cases + extra, repeat=rounds, progress=progress)
        stamp("compared")
        # Did the machine hold still? The calibration's probes again, one size of each.
        moved = recheck(device, calibration.measurements, scratch_dir=args.dir)
        stamp("rechecked")
    result, extras = split(result)
    console.print(calibration.table())
    for note in calibration.notes:
        console.print(f"note: {note}", highlight=False)
    calibration.save(args.out.with_suffix(".toml"))
    console.print(result.table())
    console.print(result.summary(), highlight=False)
    if extras.rows:
        console.print("further cases, not scored (--extra):", highlight=False)
        console.print(extras.table())
    if moved:
        drift_lines = [f"| {m.probe} | {m.before:.4g} | {m.after:.4g} | {m.change:+.1%} |" for m in moved]
        drift_head = (f"The calibration's probes measured again after the comparison (median |change| "
                      f"{median_change(moved):.1%}):\n\n| probe | at calibration s | after s | change |\n")
        console.print(f"the machine between calibration and comparison: median |change| {median_change(moved):.1%} "
                      f"over {len(moved)} probes; " + ", ".join(f"{m.probe} {m.change:+.0%}" for m in moved),
                      highlight=False)
    else:  # interleaved: each probe's rounds span the comparison
        points = calibration.measurements.points
        drift_lines = [f"| {m.probe.label} | {min(m.samples[m.probe.readings[0]]):.4g} | "
                       f"{max(m.samples[m.probe.readings[0]]):.4g} | ±{m.spread():.1%} |" for m in points]
        spread = statistics.median(m.spread() for m in points) if points else 0.0
        drift_head = (f"The calibration's probes over its {rounds} round(s), between the rounds of real runs "
                      f"(median spread ±{spread:.1%}):\n\n| probe | fastest s | slowest s | spread |\n")
        console.print(f"the calibration's probes across the comparison: median spread ±{spread:.1%}", highlight=False)
    for note in result.notes:
        console.print(f"note: {note}", highlight=False)
    ranking = result.ranking
    targets = [(f"median |error| <= {MEDIAN_ERROR_TARGET:.0%}", result.median_error <= MEDIAN_ERROR_TARGET),
               (f"worst |error| <= {WORST_ERROR_TARGET:.0%}", result.worst_error <= WORST_ERROR_TARGET),
               ("same ranking", ranking.same_order),
               ("ranking within the spread of real runs", ranking.swapped_beyond_noise == 0),
               ("same order of every pair the rounds order (sign test)", ranking.orders_as_rounds),
               (">= 10 configurations", len(result.rows) >= 10)]
    for what, met in targets:
        # None: too few rounds to order any pair, so nothing to judge (the JSON keeps null).
        verdict = "met" if met else "NOT met" if met is not None else f"not judged ({result.repeat} rounds)"
        console.print(f"  {verdict}: {what}", highlight=False)

    product = getattr(device, "product", device.name)
    header = (f"## {product} ({device.name}), {result.when[:10]}\n\n"
              f"Host: {result.host}. File: {Path(result.file).name}, {format_size(result.file_bytes)}; "
              f"{result.repeat} real run(s) per case after a warm-up run; spread = half the range of the real runs.\n"
              f"Platform: calibrated on the same machine (`halsim calibrate --device {device.name}`)"
              + (f", in {rounds} rounds between the rounds of real runs.\n\n" if args.interleave else ".\n\n"))
    drift_table = "\n\n" + drift_head + "|---|---:|---:|---:|\n" + "\n".join(drift_lines) + "\n"
    args.out.with_suffix(".md").write_text(header + result.markdown() + drift_table)
    body = {"device": device.name, "product": product, "calibration": calibration.to_dict(),
            "comparison": result.to_dict(), "extra": extras.to_dict() if extras.rows else None,
            "targets": dict(targets), "seconds": time.perf_counter() - began,
            "interleaved": args.interleave,
            "drift": [{"probe": m.probe, "before": m.before, "after": m.after, "change": m.change} for m in moved]}
    args.out.with_suffix(".json").write_text(json.dumps(body, indent=1, default=str))
    everything = dataclasses.replace(result, rows=result.rows + extras.rows)
    everything.write_perfetto(args.out.with_suffix(".perfetto.json"))
    everything.plot(args.out.with_suffix(".png"))
    stamp(f"wrote {args.out}.{{json,md,toml,perfetto.json,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
