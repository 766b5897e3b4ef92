"""The ``halsim`` command line (typer + rich).

A failing command prints one line naming the file and the problem and exits
non-zero; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.markup import escape
from rich.table import Table

from halsim.errors import HalsimError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Decide how model weights move from a file into GPU memory.")
out = Console()
err = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def _errors() -> Iterator[None]:
    """One line per failure unless --debug."""
    if _state["debug"]:
        yield
        return
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        _fail("interrupted")
    except (HalsimError, OSError, ValueError) as e:
        _fail(str(e) or type(e).__name__)


@contextmanager
def _progress(description: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A byte progress bar on stderr; shows only if the work takes more than a moment."""
    if not enabled:
        yield lambda done, total: None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
               TransferSpeedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextmanager
def _count_progress(description: str) -> Iterator[Callable[..., None]]:
    """A bar of items done (runs, benchmarks) on stderr; ``update(done, total, what=None)``
    also retitles it with what is running."""
    from rich.progress import MofNCompleteColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int, what: str | None = None) -> None:
            bar.update(task, completed=done, total=total, **({"description": what} if what else {}))

        yield update


def _print_report(report, as_json: bool, explain: bool = False, lanes: bool = False) -> None:
    if as_json:
        out.print_json(report.to_json()) if out.is_terminal else print(report.to_json())
        return
    table = Table(show_header=False, box=None)
    for key, value in report.rows():
        table.add_row(f"[bold]{key}[/]", value)
    out.print(table)
    for note in report.notes:
        out.print(f"[yellow]note:[/] {note}")
    if explain:
        out.print(f"[bold]bounded by:[/] {report.explain()}")
    if lanes:
        _print_lanes(report)


def _print_lanes(report) -> None:
    from halsim.lanes import copy_gaps, dispatch_delays, lane_uses
    from halsim.units import format_size

    wall = report.seconds
    table = Table(title="where the time went, lane by lane", title_justify="left")
    for column in ("lane", "step", "steps", "bytes", "first s", "last s", "busy s", "busy %"):
        left = column in ("lane", "step")
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for r in lane_uses(report.trace):
        table.add_row(r.lane, r.op, str(r.steps), format_size(r.bytes), f"{r.first:.4f}", f"{r.last:.4f}",
                      f"{r.busy:.4f}", f"{100 * r.busy / wall:.0f}%" if wall > 0 else "-")
    out.print(table)
    gaps = copy_gaps(report.trace, wall)
    if gaps is not None:
        out.print(f"copies: the first began at {gaps.before_first:.4f} s; in flight {gaps.in_flight:.4f} s of "
                  f"{gaps.span:.4f}; {gaps.after_last:.4f} s after the last; the longest stretch with none "
                  f"{gaps.longest_gap * 1e3:.2f} ms (at {gaps.longest_gap_at:.4f} s)", highlight=False)
    if report.plan is not None:
        for d in dispatch_delays(report.trace, report.plan):
            out.print(f"{d.op} steps started {d.median * 1e6:.0f} us (median), {d.p90 * 1e6:.0f} us (p90) after they "
                      f"could; {d.summed:.4f} s summed over {d.steps}", highlight=False)


def _exports(report, plot: Optional[Path], trace: Optional[Path], json_path: Optional[Path] = None) -> None:
    if plot:
        report.plot(plot)
        err.print(f"wrote {plot}")
    if trace:
        report.to_perfetto(trace)
        err.print(f"wrote {trace}")
    if json_path:
        report.save_json(json_path)
        err.print(f"wrote {json_path}")


@app.command()
def simulate(
    workload: Optional[str] = typer.Option(None, "--workload", "-w", help="A named workload (see `halsim workloads`)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="A model file; only its index is read."),
    platform: str = typer.Option("h100-pcie5", "--platform", "-p", help="A named platform or a .toml file."),
    policy: str = typer.Option("auto", "--policy", help="Policy spec, e.g. streaming:chunk=16MiB,slots=4."),
    gpus: int = typer.Option(1, "--gpus", min=1, help="Shard the weights over this many GPUs."),
    shard: str = typer.Option("whole", "--shard", help="whole (tensors dealt to GPUs) or rows."),
    cold: bool = typer.Option(False, "--cold", help="The file is not in the page cache."),
    mode: str = typer.Option("overlapped", "--mode", help="overlapped or serial (one step at a time)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG: timeline and memory over time."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write a Perfetto (Chrome trace) JSON."),
    lanes: bool = typer.Option(False, "--lanes", help="Print how busy each lane was (reads, copy queues, imports)."),
) -> None:
    """Simulate an upload on a model of the hardware."""
    import halsim

    with _errors():
        if (workload is None) == (file is None):
            _fail("give exactly one of --workload NAME or --file PATH")
        policy_spec = _policy_arg(policy)
        source = workload if workload is not None else str(file)
        with _progress("simulating", not as_json) as update:
            report = halsim.simulate(source, platform, policy_spec, page_cached=not cold, gpus=gpus, shard=shard,
                                     mode=mode, progress=update)
        _print_report(report, as_json, explain=not as_json, lanes=lanes)
        _exports(report, plot, trace)


def _policy_arg(policy: str):
    from halsim.policies import load_policy, parse_policy

    if policy.endswith((".toml", ".json")) and Path(policy).exists():
        return load_policy(policy)
    return parse_policy(policy)


@app.command()
def upload(
    path: Path = typer.Argument(..., help="Model file: .safetensors, .npy, .npz, or any file (raw)."),
    device: List[str] = typer.Option(["cpu"], "--device", "-d", help="cpu, cuda:N, vulkan:N, sim:PLATFORM; repeat to shard."),
    policy: str = typer.Option("auto", "--policy", help="Policy spec or a policy .toml/.json file."),
    shard: str = typer.Option("whole", "--shard", help="With several devices: whole or rows."),
    mode: str = typer.Option("overlapped", "--mode", help="overlapped or serial."),
    verify: bool = typer.Option(False, "--verify", help="Compare every byte on the device with the file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG of the run."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Write a Perfetto JSON of the run."),
    platform: Optional[str] = typer.Option(None, "--platform", "-p",
                                           help="With --policy auto: choose by simulating this platform."),
    lanes: bool = typer.Option(False, "--lanes", help="Print how busy each lane was (reads, copy queues, imports) "
                               "and what bounded the run."),
) -> None:
    """Upload a model file to a device for real."""
    import halsim

    with _errors():
        chosen, targets = _policy_arg(policy), device
        if platform is not None:
            from halsim.choose import auto_on_platform, choose_for_file

            chosen, targets = auto_on_platform(chosen, platform), [halsim.get_device(d) for d in device]
            choice = choose_for_file(path, chosen, [t.caps for t in targets], shard)
            (err if as_json else out).print(f"[bold]auto chose[/] {choice.policy.spec()}: {choice.why()}",
                                            highlight=False)
        with _progress(f"uploading {path.name}", not as_json) as update:
            done = halsim.upload(path, devices=targets, policy=chosen, shard=shard, mode=mode,
                                 progress=update, verify=verify)
        with done:
            report = done.report
            if verify and not as_json:
                out.print(f"[green]verified[/] {report.bytes} bytes")
            _print_report(report, as_json, explain=lanes, lanes=lanes)
            _exports(report, plot, trace)


@app.command()
def sweep(
    workload: List[str] = typer.Option([], "--workload", "-w", help="A named workload; repeat for several."),
    file: List[Path] = typer.Option([], "--file", "-f", help="A model file (only its index is read); repeatable."),
    platform: List[str] = typer.Option(["h100-pcie5"], "--platform", "-p", help="A platform; repeat for several."),
    grid: List[str] = typer.Option([], "--grid", "-g",
                                   help="Grid spec, e.g. 'streaming:chunk=[4MiB,16MiB],slots=[2,4]'; repeatable."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Staging budget for the best configurations."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Use the Dask cluster at tcp://HOST:PORT."),
    executor: str = typer.Option("processes", "--executor", help="processes, dask (a LocalCluster) or serial."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Local workers (default: one per core)."),
    gpus: int = typer.Option(1, "--gpus", min=1, help="Shard the weights over this many GPUs."),
    shard: str = typer.Option("whole", "--shard", help="whole or rows."),
    cold: bool = typer.Option(False, "--cold", help="The file is not in the page cache."),
    mode: str = typer.Option("overlapped", "--mode", help="overlapped or serial."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write every row to .parquet or .csv."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG of time against staging, IREE's default marked."),
    top: int = typer.Option(5, "--top", min=1, help="How many best configurations to list."),
) -> None:
    """Simulate every configuration of a grid; print the best within the budget and the Pareto front."""
    from halsim import sweep as sweeps

    with _errors():
        configs = sweeps.parse_grids(grid or sweeps.DEFAULT_GRIDS)
        sweeps.parse_budget(budget)  # a bad budget fails before the sweep, not after
        if output is not None and output.suffix.lower() not in (".parquet", ".csv"):
            _fail(f"{output}: results go to a .parquet or .csv file")
        targets = sweeps.make_targets(platform, workload, file, gpus=gpus, shard=shard, page_cached=not cold)
        started = time.perf_counter()
        with _count_progress(f"simulating {len(configs) * len(targets)} runs") as update:
            result = sweeps.run_sweep(configs, targets, executor=executor, workers=workers, scheduler=scheduler,
                                      mode=mode, progress=update)
        err.print(f"{len(result.frame)} runs ({result.simulations} distinct) simulated in "
                  f"{time.perf_counter() - started:.1f} s, {result.cpu_seconds:.1f} CPU-s", highlight=False)
        for table in sweeps.summary_tables(result, budget, top):
            out.print(table)
        if output:
            result.save(output)
            err.print(f"wrote {output} ({len(result.frame)} rows)")
        if plot:
            result.plot(plot)
            err.print(f"wrote {plot}")


@app.command()
def calibrate(
    device: str = typer.Option(..., "--device", "-d", help="cpu, cuda:N, vulkan:N, or sim:PLATFORM (the simulator itself)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the fitted platform to this .toml."),
    quick: bool = typer.Option(False, "--quick", help="Small sizes, three repeats: seconds instead of minutes."),
    scratch: Optional[Path] = typer.Option(None, "--scratch", help="Directory for the scratch file (default: the "
                                           "temp dir); put it on the drive your weights live on."),
    name: Optional[str] = typer.Option(None, "--name", help="Name of the platform (default: calibrated-DEVICE)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write every measurement and the fit as JSON."),
) -> None:
    """Measure a device with microbenchmarks and fit a platform for the simulator to it."""
    from halsim.calibrate import Config, calibrate as run

    with _errors():
        with _count_progress("calibrating") as update:
            result = run(device, Config.quick() if quick else Config.full(), scratch_dir=scratch, name=name,
                         progress=lambda done, total, what: update(done, total, f"{device}: {what}"))
        out.print(result.table(sources=out.width >= 120))  # the TOML's comments say what set each value
        for note in result.notes:
            out.print(f"[yellow]note:[/] {note}", highlight=False)
        if output:
            result.save(output)
            err.print(f"wrote {output} (use it: halsim simulate --platform {output})")
        if json_path:
            json_path.write_text(json.dumps(result.to_dict(), indent=1))
            err.print(f"wrote {json_path}")


@app.command()
def compare(
    path: Path = typer.Argument(..., help="Model file to upload (and to simulate)."),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu, cuda:N or vulkan:N."),
    platform: str = typer.Option(..., "--platform", "-p", help="The platform to predict with (e.g. from calibrate)."),
    policy: List[str] = typer.Option(..., "--policy", help="A policy spec; repeat for several."),
    cache: str = typer.Option("warm", "--cache", help="warm (page-cached file: dropped and read back by one "
                              "thread before the first warm run and after each cold one), cold, or both."),
    repeat: int = typer.Option(3, "--repeat", min=1, help="Real runs of each case; the median is compared."),
    mode: str = typer.Option("overlapped", "--mode", help="overlapped or serial."),
    trace: Optional[Path] = typer.Option(None, "--trace", help="Perfetto JSON: sim and real as separate processes."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="PNG: each case's sim timeline above its real one."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the comparison as JSON."),
    fixed_order: bool = typer.Option(False, "--fixed-order", help="Run the cases in the order given every round "
                                     "(default: warm, then cold cases, each in a fresh random order a round)."),
) -> None:
    """Run policies in the simulator and on a device on the same file: predicted vs measured."""
    from halsim.compare import cases, compare as run

    with _errors():
        with _count_progress("comparing") as update:
            result = run(path, device, platform, cases(policy, cache), repeat=repeat, mode=mode, progress=update,
                         shuffle=not fixed_order)
        out.print(result.table())
        out.print(result.summary(), highlight=False)
        for note in result.notes:
            out.print(f"[yellow]note:[/] {note}", highlight=False)
        for target, write in ((trace, result.write_perfetto), (plot, result.plot)):
            if target:
                write(target)
                err.print(f"wrote {target}")
        if json_path:
            json_path.write_text(result.to_json())
            err.print(f"wrote {json_path}")


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="Model file."),
    as_json: bool = typer.Option(False, "--json"),
    limit: int = typer.Option(50, "--limit", help="Show at most this many tensors (0: all)."),
) -> None:
    """Show a model file's parameter index (no tensor data is read)."""
    from halsim.formats import read_index
    from halsim.units import format_size

    with _errors():
        index = read_index(path)
        if as_json:
            body = {"path": index.path, "format": index.format, "file_length": index.file_length,
                    "metadata": index.metadata,
                    "tensors": [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "offset": t.offset,
                                 "nbytes": t.nbytes} for t in index.tensors]}
            print(json.dumps(body))
            return
        out.print(f"[bold]{index.path}[/]: {index.format}, {len(index.tensors)} tensors, "
                  f"{format_size(index.total_bytes)} of {format_size(index.file_length)}")
        table = Table()
        for column in ("name", "dtype", "shape", "offset", "bytes"):
            table.add_column(column, justify="right" if column in ("offset", "bytes") else "left")
        shown = index.tensors if limit == 0 else index.tensors[:limit]
        for t in shown:
            table.add_row(t.name, t.dtype, "x".join(map(str, t.shape)) or "scalar", str(t.offset), str(t.nbytes))
        out.print(table)
        if len(shown) < len(index.tensors):
            out.print(f"... {len(index.tensors) - len(shown)} more (--limit 0 shows all)")


@app.command()
def devices(as_json: bool = typer.Option(False, "--json")) -> None:
    """List each backend, whether it can run here (and why not), and its devices' caps."""
    from halsim.registry import backends

    with _errors():
        statuses = backends()
        if as_json:
            print(json.dumps([{"backend": s.name, "available": s.available, "reason": s.reason,
                               "devices": [{"name": n, "caps": c.model_dump()} for n, c in s.devices]}
                              for s in statuses]))
            return
        for s in statuses:
            if not s.available:
                out.print(f"{s.name}: [yellow]unavailable[/] ({escape(s.reason)})", highlight=False)
                continue
            for name, caps in s.devices:
                out.print(f"{name}: [green]available[/] — {caps.describe()}", highlight=False)


@app.command()
def platforms() -> None:
    """List the named platforms."""
    from halsim.platform import list_platforms, load_platform

    with _errors():
        for name in list_platforms():
            out.print(f"[bold]{name}[/]: {load_platform(name).description}", highlight=False)


@app.command()
def workloads() -> None:
    """List the named workloads."""
    from halsim.units import format_size
    from halsim.workloads import list_workloads, load_workload

    with _errors():
        for name in list_workloads():
            w = load_workload(name)
            out.print(f"[bold]{name}[/]: {len(w.tensors)} tensors, {format_size(w.total_bytes)} — {w.description}",
                      highlight=False)


@app.command()
def demo(
    output: Path = typer.Option(Path("halsim-demo"), "--out", "-o", help="Folder for the model and the reports."),
    size: str = typer.Option("1GiB", "--size", help="Size of the synthetic model (the IREE case is 1GiB)."),
    real: bool = typer.Option(True, "--real/--no-real", help="Also upload for real on every available device."),
) -> None:
    """The IREE #14665 cases, simulated side by side, then uploaded for real and verified."""
    from halsim.demo import run_demo

    with _errors():
        run_demo(output, size, real, out, err)


def main() -> None:  # pragma: no cover
    app()
