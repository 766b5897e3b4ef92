"""Calibrate a device, simulate a sweep of upload policies on it, and run the best for real.

    python docs/examples/calibrate_and_choose.py [--device cpu] [--file MODEL] [--budget 64MiB] [--quick]

1. ``calibrate`` measures the device with microbenchmarks through its own
   backend and fits a Platform (written to ``platform.toml``, which
   ``halsim simulate --platform`` accepts too);
2. ``run_sweep`` simulates 51 policies on that platform for the model file —
   only the file's index is read, so this takes seconds;
3. the fastest policy within the staging budget uploads the file for real
   (every byte verified), and ``compare`` puts the sweep's top three next to
   their measured times.

Without ``--file`` it writes a 416 MiB file shaped like one Llama 3 8B decoder
layer (attention and MLP matrices, norms) next to the platform.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console

import halsim
from halsim.calibrate import Config, calibrate
from halsim.compare import compare
from halsim.sweep import make_targets, parse_grids, run_sweep, summary_tables
from halsim.workloads import Workload, load_workload

GRIDS = [
    "streaming:chunk=[1MiB,4MiB,16MiB,64MiB],slots=[1,2,4,8],readers=[1,2,4]",
    "import",
    "direct",
    "staged",
]


def example_file(folder: Path) -> Path:
    llama = load_workload("llama-3-8b")
    layer = tuple(t for t in llama.tensors if t.name.startswith("model.layers.0."))
    workload = Workload(name="llama-3-8b-layer-0", dtype=llama.dtype, tensors=layer,
                        description="Llama 3 8B's first decoder layer", source=llama.source)
    path = folder / workload.file_name
    if not path.exists():
        workload.write(path, "random")  # incompressible, and fast to make
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda:0, vulkan:0")
    parser.add_argument("--file", type=Path, help="a model file (default: write a 416 MiB example)")
    parser.add_argument("--budget", default="64MiB", help="most staging memory the chosen policy may use")
    parser.add_argument("--quick", action="store_true", help="quick calibration (seconds; rougher numbers)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "halsim-example")
    args = parser.parse_args()
    console = Console()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.file or example_file(args.dir)

    # 1. Measure the device and fit a platform to it; the scratch file goes where the model is.
    calibration = calibrate(args.device, Config.quick() if args.quick else Config.full(), scratch_dir=path.parent)
    console.print(calibration.table(sources=False))
    platform_path = calibration.save(args.dir / "platform.toml")
    console.print(f"platform written to {platform_path}")

    # 2. Simulate every policy of the grid on the calibrated platform.
    sweep = run_sweep(parse_grids(GRIDS), make_targets([calibration.platform], files=[path]), executor="serial")
    for table in summary_tables(sweep, args.budget, top=3):
        console.print(table)
    best = sweep.best(args.budget, n=3)
    chosen = list(best["policy"])

    # 3. Run the winner for real, then check the top three's predictions against the device.
    with halsim.upload(path, args.device, chosen[0], verify=True) as upload:
        report = upload.report
    console.print(f"[bold]{report.policy}[/]: {report.seconds:.3f} s on {report.device} "
                  f"(predicted {best['seconds'].iloc[0]:.3f} s), {report.bytes} bytes verified", highlight=False)
    comparison = compare(path, args.device, platform_path, chosen, repeat=3)
    console.print(comparison.table())
    console.print(comparison.summary(), highlight=False)


if __name__ == "__main__":
    main()
