"""Does a registration cost more inside an upload than alone? Same file, same pieces, alternating.

    python benchmarks/registration_context.py FILE [--device cuda:0] [--rounds 3] [--json OUT.json]

Calibration times registrations alone: windows of a file imported and released
one after the other, nothing else running. Inside an ``import`` upload the same
calls run while copies stream and the engine's threads work, and fidelity runs
15-20 found them 10-20 % slower there than predicted. This takes FILE (page-cached,
warmed as ``halsim compare`` warms it), and for 256 MiB and 64 MiB pieces, round
after round, times its first GiB registered alone (the calibration's probe,
through the engine) and its whole length uploaded with ``import:piece=P``; and
prints the median registration and release per piece, alone and in the upload.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import halsim
from halsim import pagecache
from halsim.calibrate import Probe, _engine_run, _spans, import_plan
from halsim.files import MappedFile
from halsim.request import SourceInfo

MiB = 1 << 20
PIECES = (256 * MiB, 64 * MiB)
ALONE_BYTES = 1 << 30


def alone(path: Path, device, piece: int) -> tuple[list[float], list[float]]:
    file = MappedFile(path)
    try:
        probe = Probe("import", piece, max(2, min(16, ALONE_BYTES // piece)))
        trace = _engine_run(import_plan(probe, SourceInfo.of(file, page_cached=True), False), file, device, "serial")
    finally:
        file.close()
    return [s.seconds for s in _spans(trace, "import/", "import")], [s.seconds for s in _spans(trace, "import/", "unimport")]


def uploaded(path: Path, device, piece: int, queues: int) -> tuple[list[float], list[float], float]:
    with halsim.upload(path, device, f"import:piece={piece >> 20}MiB,queues={queues}") as done:
        report = done.report
    spans = report.trace.spans
    return ([s.seconds for s in spans if s.lane.startswith("import/") and s.op == "import" and s.nbytes == piece],
            [s.seconds for s in spans if s.lane.startswith("import/") and s.op == "unimport" and s.nbytes == piece],
            report.seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.file.is_file():
        parser.error(f"{args.file}: no such file")
    device = halsim.get_device(args.device)
    pagecache.warm(args.file, fresh=True)
    rows: dict[str, dict[str, list[float]]] = {}
    for round_ in range(args.rounds + 1):  # the first round warms threads, code paths and the driver
        for piece in PIECES:
            for label, queues in (("alone", 0), ("upload, 1 queue", 1), ("upload, 2 queues", 2)):
                got = alone(args.file, device, piece) if not queues else uploaded(args.file, device, piece, queues)
                row = rows.setdefault(f"{piece >> 20} MiB, {label}", {"register": [], "release": [], "wall": []})
                if round_:
                    row["register"] += got[0]
                    row["release"] += got[1]
                    if queues:
                        row["wall"].append(got[2])
    print(f"{'pieces, where':<26} {'register ms':>11} {'GB/s':>6} {'release ms':>10} {'upload s':>9}")
    for label, row in rows.items():
        piece = int(label.split()[0]) * MiB
        reg, rel = statistics.median(row["register"]), statistics.median(row["release"])
        wall = f"{statistics.median(row['wall']):.4f}" if row["wall"] else "-"
        print(f"{label:<26} {reg * 1e3:>11.3f} {piece / reg / 1e9:>6.1f} {rel * 1e3:>10.3f} {wall:>9}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
