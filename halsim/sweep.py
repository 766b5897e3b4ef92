"""Policy sweeps: simulate every configuration of a grid on every platform and workload.

A grid spec is a policy spec whose values may be lists::

    streaming:chunk=[1MiB,4MiB,16MiB,64MiB],slots=[1,2,4,8],readers=[1,2,4]
    import:piece=[64MiB,256MiB],fallback=[staged,streaming(chunk=4MiB,slots=2)]
    import

and stands for the cartesian product of its lists. :func:`run_sweep` simulates
each configuration on each (platform, workload) target — in this process, in a
local process pool, on a Dask ``LocalCluster`` or on an existing Dask cluster —
and returns one row per run in a :class:`SweepResult`. Every simulation is a
pure function of (configuration, target), so the rows are the same whichever
executor ran them; they come back in grid order.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Sequence

from halsim.errors import HalsimError, PolicyError
from halsim.platform import Platform, load_platform
from halsim.policies import IREE_STREAMING, KINDS, Policy, parse_policy, policy_from_dict
from halsim.request import UploadRequest
from halsim.units import format_size

if TYPE_CHECKING:
    import pandas as pd

Executor = Literal["serial", "processes", "dask"]
EXECUTORS = ("serial", "processes", "dask")
ProgressFn = Callable[[int, int], None]  # (configurations done, configurations in all)

# What `halsim sweep` runs without --grid: the streaming grid, and the zero-staging paths.
DEFAULT_GRIDS = (
    "streaming:chunk=[1MiB,4MiB,16MiB,64MiB],slots=[1,2,4,8],readers=[1,2,4]",
    "import",
    "direct",
)

# Measured columns, after the policy's own fields and the target's labels.
MEASURES = ("seconds", "gb_per_s", "peak_staging_bytes", "peak_device_bytes", "bound", "bound_share", "ran", "error")


# ---------------------------------------------------------------- grid specs


def _split(text: str, spec: str) -> list[str]:
    """Split on commas outside brackets and parentheses."""
    pairs = {")": "(", "]": "["}
    parts, stack, current = [], [], []
    for ch in text:
        if ch in "([":
            stack.append(ch)
        elif ch in ")]":
            if not stack or stack.pop() != pairs[ch]:
                raise PolicyError(f"grid {spec!r}: unbalanced {ch!r}")
        if ch == "," and not stack:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if stack:
        raise PolicyError(f"grid {spec!r}: unbalanced {stack[-1]!r}")
    parts.append("".join(current).strip())
    return parts


def _axis(key: str, value: str, spec: str) -> list[str]:
    """The values of one ``key=value`` or ``key=[v1,v2,...]`` item."""
    if value.startswith("["):
        if not value.endswith("]"):
            raise PolicyError(f"grid {spec!r}: {key}={value} has text after its closing ']'")
        values = _split(value[1:-1], spec)
        if values == [""]:
            raise PolicyError(f"grid {spec!r}: {key}=[] is empty; give at least one value")
        if "" in values:
            raise PolicyError(f"grid {spec!r}: {key}={value} has an empty value")
        return values
    if "[" in value or "]" in value:
        raise PolicyError(f"grid {spec!r}: {key}={value}: a list must be the whole value, as in {key}=[a,b]")
    return [value]


def _field(key: str, value: str) -> Any:
    # A fallback is itself a policy spec, e.g. streaming(chunk=4MiB,slots=2).
    return parse_policy(value) if key == "fallback" else value


def parse_grid(spec: str) -> list[Policy]:
    """Every policy a grid spec stands for, in product order (last field varies fastest)."""
    text = spec.strip()
    kind, _, args = text.partition(":")
    kind = kind.strip()
    if not kind:
        raise PolicyError(f"grid {spec!r}: empty; expected a policy kind such as streaming or import")
    if kind == "auto":
        raise PolicyError(f"grid {spec!r}: auto chooses by sweeping, so it cannot be swept; "
                          "sweep the kinds it chooses from (staged, streaming, import, direct)")
    if kind not in KINDS:
        raise PolicyError(f"grid {spec!r}: unknown policy kind {kind!r}; choose one of "
                          f"{', '.join(k for k in KINDS if k != 'auto')}")
    axes: list[tuple[str, list[str]]] = []
    if args.strip():
        for item in _split(args, spec):
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key or not value:
                raise PolicyError(f"grid {spec!r}: expected key=value or key=[v1,v2], got {item!r}")
            if any(key == k for k, _ in axes):
                raise PolicyError(f"grid {spec!r}: {key!r} given twice")
            values = _axis(key, value, spec)
            for v in values:  # check each value alone, so the error names the bad one
                try:
                    policy_from_dict({"kind": kind, key: _field(key, v)}, source=f"grid {spec!r}")
                except PolicyError as err:
                    raise PolicyError(f"{err} (in {key}={v})") from None
            axes.append((key, values))
    policies = []
    for combo in itertools.product(*(values for _, values in axes)):
        data = {"kind": kind, **{key: _field(key, v) for (key, _), v in zip(axes, combo)}}
        policies.append(policy_from_dict(data, source=f"grid {spec!r}"))
    return policies


def parse_grids(specs: Iterable[str]) -> list[Policy]:
    """The configurations of several grids; a configuration two grids share runs once."""
    seen: dict[Policy, None] = {}
    for spec in specs:
        for policy in parse_grid(spec):
            seen.setdefault(policy, None)
    if not seen:
        raise PolicyError("no configurations to sweep: give at least one --grid")
    return list(seen)


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One (platform, workload) pair, resolved to data so any worker can simulate it."""

    platform: str  # label in the results
    workload: str
    spec: Platform
    request: UploadRequest
    gpus: int = 1


def make_targets(platforms: Sequence["str | Platform"], workloads: Sequence[str] = (),
                 files: Sequence["str | os.PathLike"] = (), *, gpus: int = 1, shard: str = "whole",
                 page_cached: bool = True) -> list[Target]:
    """Every (platform, source) pair. Platforms and files are read here, once, so a
    remote worker needs neither the catalogue's files nor the model files."""
    from halsim.api import _request_for  # the same request `halsim simulate` would build

    if not platforms:
        raise PolicyError("no platforms to sweep: give at least one --platform")
    if not workloads and not files:
        raise PolicyError("nothing to sweep: give at least one --workload or --file")
    specs = [(p if isinstance(p, Platform) else load_platform(p)) for p in platforms]
    labels = [p if isinstance(p, str) else p.name for p in platforms]
    sources = [(w, _request_for(w, page_cached, gpus, shard)) for w in workloads]
    sources += [(Path(f).name, _request_for(os.fspath(f), page_cached, gpus, shard)) for f in files]
    return [Target(label, name, spec, request, gpus)
            for label, spec in zip(labels, specs) for name, request in sources]


# ---------------------------------------------------------------- one run


def simulate_row(target: Target, policy: Policy, mode: str = "overlapped") -> dict[str, Any]:
    """The measured columns of one simulated run.

    A policy the target refuses (out of memory, say) is a row with an
    ``error``, not the end of the sweep.
    """
    from halsim.api import simulate
    from halsim.explain import bottlenecks

    try:
        report = simulate(target.request, target.spec, policy, gpus=target.gpus, mode=mode)
    except HalsimError as err:
        return {"seconds": math.nan, "gb_per_s": math.nan, "peak_staging_bytes": None, "peak_device_bytes": None,
                "bound": "", "bound_share": math.nan, "ran": "", "error": str(err)}
    shares = bottlenecks(report.trace, report.plan)
    bound, share = next(iter(shares.items()), ("", 0.0))
    return {
        "seconds": report.seconds,
        "gb_per_s": report.gb_per_s,
        "peak_staging_bytes": report.peak_staging_bytes,
        "peak_device_bytes": report.peak_device_bytes,
        "bound": bound,  # the resource that bounded most of the critical path
        "bound_share": share,
        "ran": report.policy,  # differs from the configuration when it fell back
        "error": "",
    }


def same_run(policy: Policy, target: Target) -> Policy:
    """The configuration that stands for every one that runs exactly as ``policy`` on ``target``.

    A streaming read needs a free staging slot, so no more reads are ever in
    flight than there are slots on all devices together: readers beyond that
    change nothing, and the sweep simulates such rings once.
    """
    if policy.kind == "streaming":
        slots = policy.slots * len(target.request.devices)
        if policy.readers > slots:
            return policy.model_copy(update={"readers": slots})
    return policy


def _run_batch(target: Target, items: Sequence[tuple[int, Policy]], mode: str) -> tuple[list, int, float]:
    """(job, row) for each item, the worker's pid, and the CPU seconds it spent on them."""
    start = time.process_time()
    rows = [(job, simulate_row(target, policy, mode)) for job, policy in items]
    return rows, os.getpid(), time.process_time() - start


# ---------------------------------------------------------------- executors

Batch = tuple[int, list[tuple[int, Policy]]]  # (target index, [(job, policy)])


def _batches(jobs: Sequence[tuple[int, Policy]], workers: int) -> list[Batch]:
    """Strided batches per target: batch j holds the target's jobs j, j+n, j+2n...

    Small-chunk configurations simulate far slower than large ones, and grids
    list them together; striding mixes cheap and dear in every batch so the
    workers finish together. Batches amortise the per-task cost of the executor.
    """
    size = max(1, min(16, math.ceil(len(jobs) / (workers * 8))))
    by_target: dict[int, list[tuple[int, Policy]]] = {}
    for job, (t, policy) in enumerate(jobs):
        by_target.setdefault(t, []).append((job, policy))
    out = []
    for t, items in by_target.items():
        count = math.ceil(len(items) / size)
        out.extend((t, items[j::count]) for j in range(count))
    return out


def _serial(targets, jobs, mode, **_) -> Iterable[tuple]:
    for t, items in _batches(jobs, 1):
        yield _run_batch(targets[t], items, mode)


def _processes(targets, jobs, mode, *, workers: int, **_) -> Iterable[tuple]:
    import multiprocessing

    # forkserver: workers start from a clean process that has imported halsim once,
    # never from a fork of a parent holding threads (rich, Dask) or locks.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["halsim.sweep", "halsim.api", "halsim.sim", "halsim.explain"])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {pool.submit(_run_batch, targets[t], items, mode) for t, items in _batches(jobs, workers)}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


def _dask(targets, jobs, mode, *, workers: int, scheduler: str | None = None, **_) -> Iterable[tuple]:
    import logging

    from distributed import Client, LocalCluster, as_completed

    if scheduler:
        client, cluster = Client(scheduler), None
    else:
        # One single-threaded worker process per core: simulations are pure Python (the GIL).
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    try:
        # Ship each target's request and platform once, not once per task.
        shipped = client.scatter(list(targets), broadcast=True)
        threads = sum(client.nthreads().values()) or workers  # a remote cluster may be far bigger than this machine
        futures = [client.submit(_run_batch, shipped[t], items, mode, pure=False)
                   for t, items in _batches(jobs, threads)]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


_EXECUTORS = {"serial": _serial, "processes": _processes, "dask": _dask}


# ---------------------------------------------------------------- results


def _policy_field_types() -> dict[str, str]:
    """Each policy field's column type, from the policies' own annotations: Int64 for
    counts and sizes (nullable: a field other kinds lack is missing, not 0), float64
    for fractions (hybrid's share), text for words and nested policies."""
    from typing import get_args

    types: dict[str, str] = {}
    for cls in get_args(get_args(Policy)[0]):
        for name, field in cls.model_fields.items():
            if name != "kind":
                kind = field.annotation
                types[name] = "Int64" if kind is int else "float64" if kind is float else "string"
    return types


POLICY_COLUMN_TYPES = _policy_field_types()


def _policy_columns(configs: Sequence[Policy]) -> list[str]:
    columns: dict[str, None] = {}
    for policy in configs:
        for name in policy.model_dump():
            if name != "kind":
                columns.setdefault(name, None)
    return list(columns)


def _policy_values(policy: Policy, columns: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"policy": policy.spec(), "kind": policy.kind}
    for name in columns:
        value = getattr(policy, name, None)
        row[name] = value.spec() if hasattr(value, "spec") else value
    return row


def run_sweep(
    configs: Sequence["Policy | str"],
    targets: Sequence[Target],
    *,
    executor: Executor = "processes",
    workers: int | None = None,
    scheduler: str | None = None,
    mode: str = "overlapped",
    progress: ProgressFn | None = None,
) -> "SweepResult":
    """Simulate every configuration on every target.

    ``executor`` is ``"serial"`` (this process), ``"processes"`` (a local
    process pool) or ``"dask"`` (a Dask ``LocalCluster`` of ``workers``
    processes, or the existing cluster at ``scheduler``, e.g.
    ``tcp://host:8786``, whose workers must have halsim installed).
    """
    configs = [parse_policy(c) for c in configs]
    if any(c.kind == "auto" for c in configs):
        raise PolicyError("auto chooses by sweeping, so it cannot be swept")
    if scheduler:
        executor = "dask"
    if executor not in _EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    targets = list(targets)
    workers = workers or os.cpu_count() or 1
    # One job per distinct run: configurations that run the same are simulated once.
    jobs: dict[tuple[int, Policy], int] = {}
    job_of = [jobs.setdefault((t, same_run(policy, target)), len(jobs))
              for t, target in enumerate(targets) for policy in configs]
    runs_of_job = [0] * len(jobs)
    for job in job_of:
        runs_of_job[job] += 1
    measured: list[dict | None] = [None] * len(jobs)
    total, done = len(job_of), 0
    if progress:
        progress(0, total)
    cpu: dict[int, float] = {}
    for results, pid, seconds in _EXECUTORS[executor](targets, list(jobs), mode, workers=workers, scheduler=scheduler):
        cpu[pid] = cpu.get(pid, 0.0) + seconds
        for job, row in results:
            measured[job] = row
            done += runs_of_job[job]
        if progress:
            progress(done, total)
    columns = _policy_columns(configs)
    runs = list(jobs)
    records = []
    for position, job in enumerate(job_of):
        target = targets[position // len(configs)]
        policy = configs[position % len(configs)]
        row = dict(measured[job])
        if row["ran"] == runs[job][1].spec():  # it ran as configured, so as this configuration
            row["ran"] = policy.spec()
        records.append({**_policy_values(policy, columns), "platform": target.platform,
                        "workload": target.workload, **row})
    return SweepResult(_frame(records, columns), tuple(targets), mode, len(jobs), cpu)


def _frame(records: list[dict], policy_columns: Sequence[str]) -> "pd.DataFrame":
    import pandas as pd

    frame = pd.DataFrame.from_records(
        records, columns=["policy", "kind", *policy_columns, "platform", "workload", *MEASURES])
    # Fields a kind lacks are missing, not 0: nullable integers keep them so in Parquet too.
    for name in policy_columns:
        frame[name] = frame[name].astype(POLICY_COLUMN_TYPES.get(name, "string"))
    for name in ("peak_staging_bytes", "peak_device_bytes"):
        frame[name] = frame[name].astype("Int64")
    for name in ("seconds", "gb_per_s", "bound_share"):
        frame[name] = frame[name].astype("float64")
    return frame


@dataclass
class SweepResult:
    """The rows of a sweep, and what to read off them."""

    frame: "pd.DataFrame"
    targets: tuple[Target, ...] = field(default=(), repr=False)
    mode: str = "overlapped"
    simulations: int = 0  # distinct runs simulated (configurations that run the same share one)
    worker_cpu: dict[int, float] = field(default_factory=dict, repr=False)  # CPU seconds by worker pid

    @property
    def cpu_seconds(self) -> float:
        """CPU time the simulations took, all workers together."""
        return sum(self.worker_cpu.values())

    @property
    def ok(self) -> "pd.DataFrame":
        """The runs that completed (no error)."""
        return self.frame[self.frame["error"] == ""]

    def best(self, budget: int | str | None = None, n: int = 5) -> "pd.DataFrame":
        """The ``n`` fastest runs per (platform, workload) whose peak staging fits ``budget``.

        Ties go to less staging, then to grid order.
        """
        import pandas as pd

        rows = self.ok
        if budget is not None:
            rows = rows[rows["peak_staging_bytes"] <= parse_budget(budget)]
        # Groups stay in sweep order; within one, fastest first.
        parts = [group.sort_values(["seconds", "peak_staging_bytes"], kind="stable").head(n)
                 for _, group in rows.groupby(["platform", "workload"], sort=False)]
        return pd.concat(parts) if parts else rows

    def pareto(self) -> "pd.DataFrame":
        """Per (platform, workload), the runs no other beats on both time and peak staging."""
        from halsim.pareto import pareto_front

        return pareto_front(self.ok)

    def reference(self, policy: Policy = IREE_STREAMING) -> "pd.DataFrame":
        """The rows of ``policy`` per target, simulating those the grid did not include."""
        rows = self.frame[self.frame["policy"] == policy.spec()]
        missing = [t for t in self.targets
                   if not ((rows["platform"] == t.platform) & (rows["workload"] == t.workload)).any()]
        if not missing:
            return rows
        import pandas as pd

        extra = [{**_policy_values(policy, []), "platform": t.platform, "workload": t.workload,
                  **simulate_row(t, policy, self.mode)} for t in missing]
        return pd.concat([rows, pd.DataFrame.from_records(extra)], ignore_index=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the rows to ``.parquet`` or ``.csv``."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            self.frame.to_parquet(path, index=False)
        elif suffix == ".csv":
            self.frame.to_csv(path, index=False)
        else:
            raise ValueError(f"{path}: results go to a .parquet or .csv file")
        return path

    def plot(self, path: str | os.PathLike) -> Path:
        """PNG of time against peak staging, the Pareto front drawn, IREE's default starred."""
        from halsim.pareto import plot_pareto

        return plot_pareto(self.ok, path, reference=self.reference(),
                           reference_label=f"IREE default ({IREE_STREAMING.spec()})")


def load_results(path: str | os.PathLike) -> "pd.DataFrame":
    """Rows written by :meth:`SweepResult.save`."""
    import pandas as pd

    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    # Text columns stay text (an empty error is "", not NaN); missing numbers are NaN.
    words = {name for name, kind in POLICY_COLUMN_TYPES.items() if kind == "string"}
    text = {name: str for name in ("policy", "kind", "platform", "workload", "bound", "ran", "error", *words)}
    frame = pd.read_csv(path, dtype=text, keep_default_na=False, na_values=[""])
    for name in frame.columns:
        if name in text:
            frame[name] = frame[name].fillna("")
        elif POLICY_COLUMN_TYPES.get(name) == "float64" or name in ("seconds", "gb_per_s", "bound_share"):
            frame[name] = frame[name].astype("float64")
        else:
            frame[name] = frame[name].astype("Int64")  # policy fields and byte counts
    return frame


# ---------------------------------------------------------------- printing


def summary_tables(result: SweepResult, budget: int | str | None = None, top: int = 5) -> list:
    """Rich tables per (platform, workload): the best runs within ``budget``, then the Pareto front."""
    from rich.table import Table

    def table(title: str, rows: "pd.DataFrame", caption: str | None = None) -> Table:
        t = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
        t.add_column("policy", overflow="fold")
        for label in ("seconds", "GB/s", "peak staging"):
            t.add_column(label, justify="right", no_wrap=True)
        t.add_column("bounded by", min_width=16)
        for row in rows.itertuples(index=False):
            t.add_row(row.policy, f"{row.seconds:.4f}", f"{row.gb_per_s:.2f}", format_size(row.peak_staging_bytes),
                      f"{row.bound} {row.bound_share:.0%}" if row.bound else "")
        return t

    limit = f" within {format_size(parse_budget(budget))} staging" if budget is not None else ""
    best, front, reference = result.best(budget, top), result.pareto(), result.reference()
    tables = []
    for target in result.targets:
        def of(rows: "pd.DataFrame") -> "pd.DataFrame":
            return rows[(rows["platform"] == target.platform) & (rows["workload"] == target.workload)]

        where = f"{target.workload} on {target.platform}"
        ref = of(reference[reference["error"] == ""])
        caption = (f"IREE default {IREE_STREAMING.spec()}: {ref['seconds'].iloc[0]:.4f} s, "
                   f"{format_size(ref['peak_staging_bytes'].iloc[0])} staging") if len(ref) else None
        tables.append(table(f"{where}: fastest{limit}", of(best)))
        tables.append(table(f"{where}: Pareto front of time against peak staging", of(front), caption))
    errors = result.frame[result.frame["error"] != ""]
    if len(errors):
        t = Table(title=f"{len(errors)} run(s) failed", title_justify="left")
        for label in ("platform", "workload", "policy", "error"):
            t.add_column(label)
        for row in errors.head(top).itertuples(index=False):
            t.add_row(row.platform, row.workload, row.policy, row.error)
        tables.append(t)
    return tables


def parse_budget(budget: int | str | None) -> int | None:
    from halsim.units import parse_size

    return None if budget is None else parse_size(budget)


__all__ = ["DEFAULT_GRIDS", "EXECUTORS", "Target", "SweepResult", "parse_grid", "parse_grids", "make_targets",
           "same_run", "simulate_row", "run_sweep", "load_results", "summary_tables"]
