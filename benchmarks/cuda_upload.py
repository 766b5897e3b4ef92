"""CUDA upload of an 8 GiB llama-like safetensors file, in one run: halsim's
policies against the pinned-copy ceiling and the usual ways of loading.

    python benchmarks/cuda_upload.py [--dir DIR] [--layers 15] [--repeat 3] [--json out.json]
    python benchmarks/cuda_upload.py --make-only --dir DIR      # only write the file

The file is Llama 3 8B's embedding, norm and LM head plus its first ``--layers``
decoder layers (15: 8.05 GiB, 169 tensors), BF16, written with the workload
catalogue's ``pattern`` fill so every byte that lands on the GPU can be checked.
Rows, each timed from ``halsim.upload()`` (or the peer's first call) until the
bytes are on the device, median of ``--repeat``:

1. ceiling: ``cuMemcpyHtoDAsync`` of 1 GiB of pinned memory;
2. halsim ``streaming`` at several chunk/slots/readers/queues, ``import``,
   ``direct`` and ``auto`` on the page-cached file, and from host memory;
3. peers: ``safetensors.torch.load_file(path, device="cuda")``; reading the file
   into memory and ``torch.frombuffer(...).cuda()``; a naive read-then-pageable-copy;
4. cold cache (``echo 3 > /proc/sys/vm/drop_caches`` before each run) for the
   plain sequential read of the file and halsim's best settings.

Prints one table (GB/s, peak staging, peak RSS) and the issue's goals; writes JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import json
import mmap
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import halsim
from halsim.formats import read_index
from halsim.files import MemoryFile
from halsim.units import format_size
from halsim.workloads import Workload, load_workload, pattern_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under python -P
from bench_host import host_facts  # noqa: E402

GB = 1e9
MiB, GiB = 1 << 20, 1 << 30

# The backend's variants, for comparison with its defaults (pipelined staging, spinning waits
# where the run's threads each have a core).
ALLOC = {"HALSIM_CUDA_STAGING": "alloc"}  # staging: one cuMemHostAlloc up front
BLOCK = {"HALSIM_CUDA_WAIT": "block"}  # copies waited for on a blocking-sync event (the default to the fifth session)
BUFFERED = {"HALSIM_CUFILE_BUFFERED": "1"}
# Each queue: queue a copy, wait for it, queue the next; registrations wait for nothing (the backend before).
ONE_AT_A_TIME = {"HALSIM_CUDA_COPY_DEPTH": "1"}

# (label, policy, environment)
PAGE_CACHED = [
    ("auto", "auto", None),
    ("streaming 16MiB x16, 8 readers, 2 queues", "streaming:chunk=16MiB,slots=16,readers=8,queues=2", None),
    ("streaming 16MiB x16, 12 readers, 2 queues", "streaming:chunk=16MiB,slots=16,readers=12,queues=2", None),
    ("  same, blocking waits", "streaming:chunk=16MiB,slots=16,readers=12,queues=2", BLOCK),
    ("  same, staging by one cuMemHostAlloc", "streaming:chunk=16MiB,slots=16,readers=12,queues=2", ALLOC),
    ("  same, copies queued one at a time", "streaming:chunk=16MiB,slots=16,readers=12,queues=2", ONE_AT_A_TIME),
    ("streaming 16MiB x16, 14 readers, 2 queues", "streaming:chunk=16MiB,slots=16,readers=14,queues=2", None),
    ("streaming 16MiB x16, 16 readers, 2 queues", "streaming:chunk=16MiB,slots=16,readers=16,queues=2", None),
    ("streaming 8MiB x32, 14 readers, 2 queues", "streaming:chunk=8MiB,slots=32,readers=14,queues=2", None),
    ("streaming 4MiB x16, 12 readers, 2 queues", "streaming:chunk=4MiB,slots=16,readers=12,queues=2", None),
    ("streaming 4MiB x16, 12 readers, 3 queues", "streaming:chunk=4MiB,slots=16,readers=12,queues=3", None),
    ("streaming 8MiB x16, 12 readers, 3 queues", "streaming:chunk=8MiB,slots=16,readers=12,queues=3", None),
    ("IREE inline loop: streaming 64MiB x1, 1 reader", "streaming:chunk=64MiB,slots=1,readers=1", None),
    ("import 256MiB pieces, 1 importer, 2 queues", "import:piece=256MiB,queues=2", None),
    ("import 256MiB pieces, 2 importers, 2 queues", "import:piece=256MiB,queues=2,importers=2", None),
    ("import 128MiB pieces, 4 importers, 2 queues", "import:piece=128MiB,queues=2,importers=4", None),
    ("import 1GiB pieces, 2 importers, 2 queues", "import:piece=1GiB,queues=2,importers=2", None),
    ("direct 16MiB, 8 readers (cuFile, buffered fd)", "direct:chunk=16MiB,readers=8", BUFFERED),
    ("hybrid: import 50%, stream 50%", "hybrid:share=0.5", None),
    ("hybrid: import 20% in 256MiB pieces, stream 80% (16MiB x16, 12 readers, 2 queues)",
     "hybrid:share=0.2,imported=import(piece=256MiB),streamed=streaming(chunk=16MiB,slots=16,readers=12,queues=2)",
     None),
    ("hybrid: import 30% in 256MiB pieces, stream 70% (same ring)",
     "hybrid:share=0.3,imported=import(piece=256MiB),streamed=streaming(chunk=16MiB,slots=16,readers=12,queues=2)",
     None),
    ("hybrid: import 20% in 64MiB pieces, stream 80% (same ring)",
     "hybrid:share=0.2,imported=import(piece=64MiB),streamed=streaming(chunk=16MiB,slots=16,readers=12,queues=2)",
     None),
    # Released at the end: no cuMemHostUnregister (which waits for every copy in flight) between copies.
    ("import 256MiB pieces, 2 queues, released at end", "import:piece=256MiB,queues=2,release=at_end", None),
    ("  same, copies queued one at a time (the backend before)", "import:piece=256MiB,queues=2,release=at_end",
     ONE_AT_A_TIME),
    ("import 256MiB pieces, 1 importer, 2 queues, copies queued one at a time (the backend before)",
     "import:piece=256MiB,queues=2", ONE_AT_A_TIME),
    ("import 64MiB pieces, 2 queues, released at end", "import:piece=64MiB,queues=2,release=at_end", None),
    ("import 256MiB pieces, 2 importers, 2 queues, released at end",
     "import:piece=256MiB,queues=2,importers=2,release=at_end", None),
    *[(f"hybrid: import {share:.0%} in 256MiB pieces released at end, stream the rest (same ring)",
       f"hybrid:share={share},imported=import(piece=256MiB,release=at_end),"
       "streamed=streaming(chunk=16MiB,slots=16,readers=12,queues=2)", None) for share in (0.2, 0.3, 0.4, 0.5)],
    ("hybrid: import 20% in 256MiB pieces, stream 80% (16MiB x16, 10 readers, 2 queues)",
     "hybrid:share=0.2,imported=import(piece=256MiB),streamed=streaming(chunk=16MiB,slots=16,readers=10,queues=2)",
     None),
]
# (label, policy, environment, which host memory holds the file)
HOST_MEMORY = [
    ("host memory, 4 KiB pages: streaming 16MiB x16, 12 readers", "streaming:chunk=16MiB,slots=16,readers=12,queues=2",
     None, "pages"),
    ("host memory, 4 KiB pages: import 256MiB pieces, 2 importers", "import:piece=256MiB,queues=2,importers=2", None,
     "pages"),
    ("host memory, huge pages: import 256MiB pieces, 1 importer", "import:piece=256MiB,queues=2", None, "huge"),
    ("host memory, huge pages: import 256MiB pieces, 2 importers", "import:piece=256MiB,queues=2,importers=2", None,
     "huge"),
    ("host memory, huge pages: import 1GiB pieces, 2 importers", "import:piece=1GiB,queues=2,importers=2", None, "huge"),
    ("host memory, huge pages: streaming 16MiB x16, 12 readers", "streaming:chunk=16MiB,slots=16,readers=12,queues=2",
     None, "huge"),
    ("pinned host memory: import 1GiB pieces, 2 queues", "import:piece=1GiB,queues=2", None, "pinned"),
    ("pinned host memory: import 1GiB pieces, 2 queues, into existing buffers", "import:piece=1GiB,queues=2", None,
     "pinned-into"),
    ("pinned host memory: import as one window, 1 queue, into existing buffers", "import:piece=16GiB,queues=1", None,
     "pinned-into"),
    ("pinned host memory: import as one window, 3 queues, into existing buffers", "import:piece=16GiB,queues=3", None,
     "pinned-into"),
]


# ----- the file ------------------------------------------------------------------------------------


def llama_like(layers: int) -> Workload:
    full = load_workload("llama-3-8b")
    keep = []
    for t in full.tensors:
        if t.name.startswith("model.layers."):
            if int(t.name.split(".")[2]) >= layers:
                continue
        keep.append(t)
    return Workload(name=f"llama-3-8b-{layers}-layers", dtype=full.dtype, tensors=tuple(keep),
                    description=f"Llama 3 8B with its first {layers} decoder layers", source=full.source)


def make_file(folder: Path, layers: int):
    workload = llama_like(layers)
    path = folder / workload.file_name
    want = workload.index()
    if path.exists() and path.stat().st_size == want.file_length:
        try:
            if [(t.name, t.offset) for t in read_index(path).tensors] == [(t.name, t.offset) for t in want.tensors]:
                return path, read_index(path)
        except Exception:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    index = workload.write(path, "pattern")
    print(f"wrote {path} ({format_size(index.file_length)}) in {time.perf_counter() - start:.1f} s", flush=True)
    return path, index


def sequential_read(path: Path, block: int = 64 * MiB) -> float:
    """Seconds to read the whole file once, in order, on one thread."""
    buffer = bytearray(block)
    view = memoryview(buffer)
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(view):
            pass
    return time.perf_counter() - start


def drop_caches() -> str:
    """'' when the page cache was dropped, else why not."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return ""
    except OSError as err:
        return f"cannot drop the page cache: {err.strerror or err}"


# ----- measuring ------------------------------------------------------------------------------------


class PeakRss:
    """Peak resident set size of this process, resettable through /proc/self/clear_refs."""

    def __init__(self):
        self.resettable = self.reset()

    def reset(self) -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5\n")
            return True
        except OSError:
            return False

    def peak(self) -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sample_check(upload, index, span: int = 64 * 1024) -> None:
    """Compare the first, middle and last bytes of every tensor with the file's pattern."""
    buffers = upload.buffers()
    for t in index.tensors:
        if not t.nbytes:
            continue
        buffer = buffers[t.name]
        for at in sorted({0, max(0, t.nbytes // 2 - span // 2), max(0, t.nbytes - span)}):
            n = min(span, t.nbytes - at)
            if buffer.read_range(at, n) != pattern_bytes(t.offset + at, n).tobytes():
                raise RuntimeError(f"{t.name}: bytes at +{at} differ from the file")


def transfer_seconds(trace) -> float:
    spans = getattr(trace, "spans", None) or []
    if not spans:
        return float("nan")
    return max(s.end for s in spans) - min(s.start for s in spans)


def pinned_ceiling(device, size: int = GiB, repeat: int = 7) -> dict:
    from halsim.backends.cuda_driver import check, cu, current

    times = []
    with current(device.info.context):
        host = check(cu.cuMemHostAlloc(size, cu.CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc")
        dev = check(cu.cuMemAlloc(size), "cuMemAlloc")
        stream = check(cu.cuStreamCreate(1), "cuStreamCreate")
        try:
            ctypes.memset(int(host), 0x5A, size)  # real bytes, not untouched pages
            for i in range(repeat + 1):
                start = time.perf_counter()
                check(cu.cuMemcpyHtoDAsync(dev, int(host), size, stream), "cuMemcpyHtoDAsync")
                check(cu.cuStreamSynchronize(stream), "cuStreamSynchronize")
                if i:
                    times.append(time.perf_counter() - start)
        finally:
            cu.cuStreamDestroy(stream)
            cu.cuMemFree(dev)
            cu.cuMemFreeHost(int(host))
    return {"bytes": size, "gb_per_s": size / statistics.median(times) / GB, "best_gb_per_s": size / min(times) / GB}


def allocation_costs(device, index, size: int = 256 * MiB, repeat: int = 3) -> dict:
    """Seconds (median) to get and give back what an upload allocates, outside any upload."""
    from halsim.backends.cuda_driver import check, cu, current

    def median_of(fn) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return round(statistics.median(times), 4)

    def host_alloc():
        ptr = check(cu.cuMemHostAlloc(size, cu.CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc")
        check(cu.cuMemFreeHost(ptr), "cuMemFreeHost")

    def host_alloc_only():
        ptr = check(cu.cuMemHostAlloc(size, cu.CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc")
        freeing.append(ptr)

    def mapped_register():
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
        mapping = mmap.mmap(-1, size, flags=flags)
        view = memoryview(mapping)
        address = np.frombuffer(view, np.uint8).ctypes.data
        check(cu.cuMemHostRegister(address, size, cu.CU_MEMHOSTREGISTER_PORTABLE), "cuMemHostRegister")
        check(cu.cuMemHostUnregister(address), "cuMemHostUnregister")
        view.release()
        mapping.close()

    def device_buffers():
        ptrs = [check(cu.cuMemAlloc(t.nbytes), "cuMemAlloc") for t in index.tensors if t.nbytes]
        for ptr in ptrs:
            check(cu.cuMemFree(ptr), "cuMemFree")

    out = {"bytes": size}
    with current(device.info.context):
        out["cuMemHostAlloc+cuMemFreeHost"] = median_of(host_alloc)
        freeing: list = []
        out["cuMemHostAlloc alone"] = median_of(host_alloc_only)
        for ptr in freeing:
            cu.cuMemFreeHost(ptr)
        out["mmap(MAP_POPULATE)+cuMemHostRegister+unregister+munmap"] = median_of(mapped_register)
        out[f"cuMemAlloc+cuMemFree of the {len(index.tensors)} tensors"] = median_of(device_buffers)
    return out


# ----- rows ------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args, device, path: Path, index):
        self.args, self.device, self.path, self.index = args, device, path, index
        self.nbytes = index.total_bytes
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.rss = PeakRss()
        self.deadline = time.monotonic() + args.budget_s
        if not self.rss.resettable:
            self.notes.append("peak RSS could not be reset between rows: it is the process's peak so far")

    def out_of_time(self, label: str) -> bool:
        if time.monotonic() > self.deadline:
            self.rows.append({"method": label, "skipped": "time budget spent"})
            print(f"  skipped {label}: time budget spent", flush=True)
            return True
        return False

    def add(self, group: str, label: str, times: list[float], **extra) -> dict:
        row = {"group": group, "method": label, "seconds": times,
               "gb_per_s": self.nbytes / statistics.median(times) / GB if times else None,
               "best_gb_per_s": self.nbytes / min(times) / GB if times else None, **extra}
        self.rows.append(row)
        shown = {k: v for k, v in extra.items() if k != "notes"}
        print(f"  {label}: {row['gb_per_s']:.2f} GB/s (best {row['best_gb_per_s']:.2f}); {shown}", flush=True)
        return row

    def halsim_row(self, group: str, label: str, policy: str, env: dict | None = None, source=None,
                   repeat: int | None = None, full_verify: bool = False, into=None) -> dict | None:
        if self.out_of_time(label):
            return None
        saved = {k: os.environ.get(k) for k in (env or {})}
        os.environ.update(env or {})
        times, xfer, engine, peaks = [], [], [], []
        staging = imported = 0
        ran, notes = "", []
        free_before = self.device.mem_info()[0]
        try:
            for r in range(repeat or self.args.repeat):
                self.rss.reset()
                start = time.perf_counter()
                done = halsim.upload(source if source is not None else self.path, self.device, policy,
                                     index=self.index, into=into)
                times.append(time.perf_counter() - start)
                peaks.append(self.rss.peak())
                try:
                    report = done.report
                    engine.append(report.seconds)
                    xfer.append(transfer_seconds(report.trace))
                    staging, imported = report.peak_staging_bytes, report.peak_imported_bytes
                    ran, notes = report.policy, report.notes
                    sample_check(done, self.index)
                    if full_verify and r == 0:
                        done.verify()
                finally:
                    done.free()
        except Exception as err:
            self.rows.append({"group": group, "method": label, "policy": policy, "error": f"{type(err).__name__}: {err}"})
            print(f"  {label}: FAILED {type(err).__name__}: {err}", flush=True)
            return None
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        leaked = free_before - self.device.mem_info()[0]
        return self.add(group, label, times, policy=policy, ran=ran, notes=list(notes),
                        engine_gb_per_s=self.nbytes / statistics.median(engine) / GB,
                        transfer_gb_per_s=self.nbytes / statistics.median(xfer) / GB,
                        staging_bytes=staging, imported_bytes=imported, peak_rss_bytes=max(peaks),
                        verified="full+sampled" if full_verify else "sampled", device_bytes_not_freed=leaked)

    def peer_row(self, label: str, load, repeat: int, staging: str) -> dict | None:
        import torch

        if self.out_of_time(label):
            return None
        times, peaks = [], []
        try:
            for _ in range(repeat):
                torch.cuda.empty_cache()
                self.rss.reset()
                start = time.perf_counter()
                tensors = load()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                peaks.append(self.rss.peak())
                self.check_torch(tensors)
                del tensors
        except Exception as err:
            self.rows.append({"group": "peer", "method": label, "error": f"{type(err).__name__}: {err}"})
            print(f"  {label}: FAILED {type(err).__name__}: {err}", flush=True)
            return None
        finally:
            torch.cuda.empty_cache()
        return self.add("peer", label, times, staging=staging, peak_rss_bytes=max(peaks))

    def check_torch(self, tensors) -> None:
        import torch

        for t in self.index.tensors[:: max(1, len(self.index.tensors) // 8)]:
            x = tensors[t.name]
            head = x.reshape(-1)[: 32768].contiguous().view(torch.uint8).cpu().numpy().tobytes()
            if head != pattern_bytes(t.offset, len(head)).tobytes():
                raise RuntimeError(f"{t.name}: bytes differ from the file")


# ----- peers ---------------------------------------------------------------------------------------------


def peers(bench: Bench) -> None:
    import torch

    path, index = bench.path, bench.index
    dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}

    def load_file():
        from safetensors.torch import load_file

        return load_file(str(path), device="cuda:0")

    def read_then_frombuffer():
        data = bytearray(index.file_length)
        view = memoryview(data)
        with open(path, "rb", buffering=0) as f:
            done = 0
            while done < len(data):
                done += f.readinto(view[done:])
        out = {}
        for t in index.tensors:
            dtype = dtypes[t.dtype]
            count = t.nbytes // torch.empty((), dtype=dtype).element_size()
            out[t.name] = torch.frombuffer(data, dtype=dtype, count=count, offset=t.offset).reshape(t.shape).cuda()
        return out

    def naive():
        out = {}
        fd = os.open(path, os.O_RDONLY)
        try:
            for t in index.tensors:
                host = np.empty(t.nbytes, np.uint8)
                got = 0
                while got < t.nbytes:
                    got += os.preadv(fd, [memoryview(host)[got:]], t.offset + got)
                out[t.name] = torch.from_numpy(host).cuda().view(dtypes[t.dtype]).reshape(t.shape)
        finally:
            os.close(fd)
        return out

    bench.peer_row("safetensors.torch.load_file(device='cuda')", load_file, 2, "library's")
    bench.peer_row("read file + torch.frombuffer(...).cuda()", read_then_frombuffer, 2, "whole file (pageable)")
    bench.peer_row("naive: read each tensor, pageable .cuda()", naive, 1, "largest tensor (pageable)")


# ----- main ------------------------------------------------------------------------------------------------


def environment(device) -> dict:
    info = {**host_facts(cuda=True), "card": device.product, "device": device.name,
            "caps": device.caps.model_dump(),
            "cufile": {"available": device.direct_storage, "detail": device.direct_detail}}
    for key, module in (("cuda_bindings", "cuda.bindings"), ("torch", "torch"), ("safetensors", "safetensors"),
                        ("numpy", "numpy")):
        try:
            info[key] = importlib.import_module(module).__version__
        except Exception:
            info[key] = None
    return info


def warm_up(device, folder: Path) -> None:
    """One small upload of each kind: module loads, cuFile set-up, first allocations."""
    small = load_workload("test-small")
    path = folder / small.file_name
    small.write(path, "pattern")
    for policy in ("streaming:queues=2", "import", "direct", "staged"):
        halsim.upload(path, device, policy, verify=True).free()
    path.unlink()


def goals(bench: Bench, ceiling: dict, cold: dict) -> dict:
    ok = [r for r in bench.rows if r.get("gb_per_s") and r.get("group") in ("page-cached", "host-memory", "cold")]
    cached = [r for r in ok if r["group"] == "page-cached" and r.get("staging_bytes", 0) <= 256 * MiB]
    best_cached = max(cached, key=lambda r: r["gb_per_s"], default=None)
    load_file = next((r for r in bench.rows if r.get("method", "").startswith("safetensors") and r.get("gb_per_s")), None)
    host = max((r for r in ok if r["group"] == "host-memory"), key=lambda r: r["gb_per_s"], default=None)
    best_cold = max((r for r in ok if r["group"] == "cold"), key=lambda r: r["gb_per_s"], default=None)
    out = {}
    if best_cached:
        out["page-cached >= 35 GB/s with staging <= 256 MiB"] = {
            "got": best_cached["gb_per_s"], "by": best_cached["method"], "met": best_cached["gb_per_s"] >= 35}
    if best_cached and load_file:
        ratio = best_cached["gb_per_s"] / load_file["gb_per_s"]
        out[">= 5x safetensors load_file"] = {"got": ratio, "met": ratio >= 5}
    if host and ceiling:
        ratio = host["gb_per_s"] / ceiling["gb_per_s"]
        out["host-memory source >= 95% of pinned ceiling"] = {"got": ratio, "by": host["method"], "met": ratio >= 0.95}
    if best_cold and cold.get("sequential_gb_per_s"):
        ratio = best_cold["gb_per_s"] / cold["sequential_gb_per_s"]
        out["cold >= 90% of plain sequential read"] = {"got": ratio, "by": best_cold["method"], "met": ratio >= 0.9}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/halsim-bench"))
    parser.add_argument("--layers", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--budget-s", type=float, default=330.0, help="skip the remaining rows after this long")
    parser.add_argument("--make-only", action="store_true")
    parser.add_argument("--no-cold", action="store_true")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated label substrings (or '|'-separated, to match "
                        "labels with commas): run only those halsim rows")
    args = parser.parse_args()

    path, index = make_file(args.dir, args.layers)
    if args.make_only:
        return
    device = halsim.get_device("cuda:0")
    env = environment(device)
    print(f"{env['card']} ({device.name}), driver {env.get('driver_version')}, cuFile: {device.direct_detail}",
          flush=True)
    warm_up(device, args.dir)
    warm = sequential_read(path)  # also puts the file in the page cache
    bench = Bench(args, device, path, index)
    print(f"file: {path} ({format_size(index.total_bytes)} in {len(index.tensors)} tensors); "
          f"page-cached sequential read {index.file_length / warm / GB:.2f} GB/s", flush=True)

    ceiling = pinned_ceiling(device)
    print(f"  ceiling (pinned cuMemcpyHtoDAsync, 1 GiB): {ceiling['gb_per_s']:.2f} GB/s", flush=True)

    costs = allocation_costs(device, index)
    print(f"  allocation costs: {costs}", flush=True)

    # Labels hold commas: with a '|' anywhere, '|' separates the substrings instead.
    wanted = [w for w in args.only.split("|" if "|" in args.only else ",") if w]

    def chosen(rows):
        return [r for r in rows if not wanted or any(w in r[0] for w in wanted)]

    best_streaming = None
    for label, policy, extra_env in chosen(PAGE_CACHED):
        full = (policy, extra_env) in (("streaming:chunk=16MiB,slots=16,readers=8,queues=2", None),
                                       ("streaming:chunk=16MiB,slots=16,readers=12,queues=2", None),
                                       ("import:piece=256MiB,queues=2", None)) or \
            policy.startswith("direct:chunk=16MiB,readers=4")
        # cuFile with O_DIRECT reads storage, not the page cache: fewer repeats.
        repeat = min(2, args.repeat) if policy.startswith("direct") else None
        row = bench.halsim_row("page-cached", label, policy, env=extra_env, full_verify=full, repeat=repeat)
        if row:
            row["env"] = extra_env or {}
        if row and row["ran"].startswith("streaming") and \
                (best_streaming is None or row["gb_per_s"] > best_streaming["gb_per_s"]):
            best_streaming = row

    # Host-memory source: the file already in host memory, three ways a loader may hold it.
    sources = HostSources(device, path, index.file_length)
    try:
        for label, policy, extra_env, kind in chosen(HOST_MEMORY):
            source = sources.get(kind)
            into = None
            if kind == "pinned-into":  # IREE's queue_read into buffers that exist: reloading weights
                into = halsim.upload(source, device, policy, index=index)
            try:
                bench.halsim_row("host-memory", label, policy, source=source, env=extra_env, into=into)
            finally:
                if into is not None:
                    into.free()
                source.close()
    finally:
        sources.close()

    if not args.no_peers:
        try:
            peers(bench)
        except ImportError as err:
            bench.notes.append(f"peers skipped: {err}")

    cold: dict = {}
    if not args.no_cold:
        why = drop_caches()
        if why:
            bench.notes.append(why + "; no cold-cache rows")
        else:
            cold["sequential_gb_per_s"] = index.file_length / sequential_read(path) / GB
            print(f"  cold sequential read (1 thread, 64 MiB blocks): {cold['sequential_gb_per_s']:.2f} GB/s", flush=True)
            cold_rows = []
            if best_streaming:
                cold_rows.append((f"cold: {best_streaming['method'].strip()} ({best_streaming['policy']})",
                                  best_streaming["policy"], best_streaming.get("env") or None))
            cold_rows.append(("cold: streaming 16MiB x16, 16 readers, 2 queues",
                              "streaming:chunk=16MiB,slots=16,readers=16,queues=2", None))
            if device.direct_storage:
                cold_rows.append(("cold: direct 16MiB, 8 readers (cuFile, O_DIRECT)", "direct:chunk=16MiB,readers=8",
                                  None))
            for label, policy, extra_env in cold_rows:
                drop_caches()
                bench.halsim_row("cold", label, policy, env=extra_env, repeat=1)
            bench.rows.append({"group": "cold-baseline", "method": "cold: plain sequential read (1 thread)",
                               "gb_per_s": cold["sequential_gb_per_s"]})

    result = {"environment": env, "file": {"path": str(path), "bytes": index.file_length,
                                           "tensor_bytes": index.total_bytes, "tensors": len(index.tensors)},
              "page_cached_sequential_read_gb_per_s": index.file_length / warm / GB,
              "ceiling": ceiling, "allocation_costs": costs, "rows": bench.rows, "cold": cold, "notes": bench.notes,
              "goals": goals(bench, ceiling, cold)}
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


class HostSources:
    """The benchmark file in host memory: pageable on 4 KiB pages, pageable on
    transparent huge pages (a large numpy array gets them), or page-locked by
    its owner (``cuMemHostAlloc``, as a pinned torch tensor is)."""

    def __init__(self, device, path: Path, length: int):
        self.device, self.path, self.length = device, path, length
        self.made: dict[str, object] = {}
        self.pinned_ptr = 0

    def get(self, kind: str) -> MemoryFile:
        kind = "pinned" if kind == "pinned-into" else kind
        if kind not in self.made:
            if kind == "pinned":
                from halsim.backends.cuda import host_view
                from halsim.backends.cuda_driver import check, cu, current

                with current(self.device.info.context):
                    self.pinned_ptr = int(check(cu.cuMemHostAlloc(self.length, cu.CU_MEMHOSTALLOC_PORTABLE),
                                                "cuMemHostAlloc"))
                memory = host_view(self.pinned_ptr, self.length)
            else:
                memory = mmap.mmap(-1, self.length)
                memory.madvise(mmap.MADV_HUGEPAGE if kind == "huge" else mmap.MADV_NOHUGEPAGE)
            with open(self.path, "rb", buffering=0) as f:
                _read_all(f, memory)
            self.made[kind] = memory
        return MemoryFile(self.made[kind], name=f"{self.path} ({kind} host memory)")

    def close(self) -> None:
        for kind, memory in self.made.items():
            if isinstance(memory, mmap.mmap):
                try:
                    memory.close()
                except BufferError:  # a view is still referenced: the mapping goes with it
                    pass
        self.made.clear()
        if self.pinned_ptr:
            from halsim.backends.cuda_driver import check, cu, current

            with current(self.device.info.context):
                check(cu.cuMemFreeHost(self.pinned_ptr), "cuMemFreeHost")
            self.pinned_ptr = 0


def _read_all(f, memory) -> None:
    view = memoryview(memory)
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            break
        done += got
    view.release()


def print_table(result: dict) -> None:
    env = result["environment"]
    print()
    print(f"{env['card']} · driver {env.get('driver_version')} · cuda-bindings {env.get('cuda_bindings')} · "
          f"torch {env.get('torch')} · {env['cpus']} CPUs · {env.get('mem_total')} · {env['date']}")
    print(f"file: {format_size(result['file']['tensor_bytes'])} of tensors ({result['file']['tensors']}), "
          f"page-cached sequential read {result['page_cached_sequential_read_gb_per_s']:.2f} GB/s; "
          f"pinned ceiling {result['ceiling']['gb_per_s']:.2f} GB/s")
    head = f"{'method':<56} {'GB/s':>6} {'best':>6} {'xfer':>6} {'staging':>9} {'pinned':>9} {'peak RSS':>9}  ran as"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        if "error" in r or "skipped" in r:
            print(f"{r['method']:<56} {'—':>6}  {r.get('error') or r.get('skipped')}")
            continue

        def size(key):
            value = r.get(key)
            return format_size(value) if isinstance(value, int) else (value or "")

        xfer = r.get("transfer_gb_per_s")
        print(f"{r['method']:<56} {r['gb_per_s']:6.2f} {r.get('best_gb_per_s') or 0:6.2f} "
              f"{xfer if xfer is not None else 0:6.2f} {size('staging_bytes') or r.get('staging', ''):>9} "
              f"{size('imported_bytes'):>9} {size('peak_rss_bytes'):>9}  {r.get('ran', '').split(',fallback=')[0]}")
    for note in result["notes"]:
        print(f"note: {note}")
    for goal, value in result["goals"].items():
        by = f" ({value['by']})" if value.get("by") else ""
        print(f"goal {goal}: {value['got']:.2f}{by} -> {'met' if value['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
