"""``halsim demo``: the IREE #14665 cases, simulated, then run for real."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from halsim.units import format_size, parse_size

# (case, platform, policy): the three cases of the IREE change plus an overlapped ring.
SIMULATED_CASES = [
    ("staged (before)", "dgpu-pcie4", "staged"),
    ("IREE streaming", "dgpu-pcie4", "streaming:chunk=64MiB,slots=1,readers=1"),
    ("overlapped", "dgpu-pcie4", "streaming:chunk=16MiB,slots=4,readers=4"),
    ("import", "igpu-unified", "import"),
]
REAL_POLICIES = ["streaming:chunk=16MiB,slots=4,readers=4", "auto"]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def synthetic_model(path: Path, size: int):
    """A safetensors file of F32 tensors totalling ``size`` bytes (the IREE 1 GiB model at 1GiB)."""
    from halsim.workloads import TensorSpec, Workload, load_workload

    if size == 1 << 30:
        workload = load_workload("iree-1gib")
    else:
        count = 32 if size >= 32 * 4096 else 1
        per = max(4, size // count // 4 * 4)
        workload = Workload(name="demo", description="synthetic model for halsim demo", source="halsim demo",
                            dtype="F32", tensors=[TensorSpec(name=f"param.{i}", dtype="F32", shape=(per // 4,))
                                                  for i in range(count)])
    workload.write(path, fill="pattern")
    return workload


def _table(rows, title: str) -> Table:
    """Compact: fits 80 columns; the policies are listed under the table."""
    table = Table(title=title, title_justify="left")
    for label in ("case", "on", "seconds", "GB/s", "staging", "device", "copies", "imported"):
        table.add_column(label, justify="left" if label in ("case", "on") else "right")
    for case, where, r in rows:
        # Bytes used in place move nothing: a rate would only measure mapping them.
        rate = "in place" if r.copies == 0 and r.imported_bytes == r.bytes else f"{r.gb_per_s:.1f}"
        table.add_row(case, where, f"{r.seconds:.3f}", rate, format_size(r.peak_staging_bytes),
                      format_size(r.peak_device_bytes), str(r.copies), format_size(r.imported_bytes))
    policies = sorted({(case, r.policy) for case, _, r in rows})
    table.caption = "\n".join(f"{case}: {policy}" for case, policy in policies)
    table.caption_justify = "left"
    return table


def run_demo(folder: Path, size_text: str, real: bool, out: Console, err: Console) -> None:
    import halsim
    from halsim.cli import _progress
    from halsim.registry import backends

    size = parse_size(size_text)
    if size < 4:
        raise ValueError(f"--size {size_text!r} is too small")
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.safetensors"
    err.print(f"writing a {format_size(size)} synthetic model to {model}")
    synthetic_model(model, size)
    summary = {"model": str(model), "simulated": [], "real": []}

    simulated = []
    for case, platform, policy in SIMULATED_CASES:
        with _progress(f"simulating {case}", True) as update:
            report = halsim.simulate(str(model), platform, policy, progress=update)
        stem = folder / f"sim-{_slug(case)}"
        report.save_json(stem.with_suffix(".json"))
        report.plot(stem.with_suffix(".png"), title=f"{case} ({platform})")
        simulated.append((case, platform, report))
        summary["simulated"].append({"case": case, "platform": platform, **report.to_dict()})
    out.print(_table(simulated, f"Simulated: {model.name} ({format_size(size)})"))

    if real:
        measured = []
        for status in backends():
            if not status.available:
                err.print(f"{status.name}: unavailable ({escape(status.reason)}) — skipped")
                continue
            for name, _caps in status.devices:
                device_spec = name if ":" in name or name == "cpu" else f"{name}:0"
                for policy in REAL_POLICIES:
                    with _progress(f"uploading to {device_spec} ({policy})", True) as update:
                        with halsim.upload(model, device_spec, policy, progress=update, verify=True) as done:
                            report = done.report
                    stem = folder / f"real-{_slug(device_spec)}-{_slug(policy.split(':')[0])}"
                    report.save_json(stem.with_suffix(".json"))
                    report.plot(stem.with_suffix(".png"))
                    measured.append((policy.split(":")[0], device_spec, report))
                    summary["real"].append({"device": device_spec, "verified": True, **report.to_dict()})
        out.print(_table(measured, "Measured here, every byte verified"))
    (folder / "summary.json").write_text(json.dumps(summary, indent=1))
    out.print(f"reports, plots and the model are in [bold]{folder.resolve()}[/]")
