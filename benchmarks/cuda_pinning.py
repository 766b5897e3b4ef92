"""What page-locking host memory costs on this machine, every way halsim could do it.

Issue 5's throughput goals hinge on it: an 8 GiB upload at 35 GB/s lasts
0.25 s, and pinning a 256 MiB staging pool took 0.16 s in earlier runs. This
times, on the GPU machine, in one run:

* a 256 MiB staging pool: one ``cuMemHostAlloc``; 16 slots of 16 MiB, one after
  another and on several threads; an anonymous mapping registered with
  ``cuMemHostRegister`` with and without transparent huge pages;
* a pageable host-memory source (4 GiB, already written): registering it whole
  and in pieces on several threads, 4 KiB pages and huge pages, and the DMA
  from it afterwards;
* a page-cached file mapping: registering it as is, after ``MAP_POPULATE``,
  and after prefaulting its page tables on several threads;
* (``--only-cache-state``) registering a page-cached file by how its pages came
  into the cache: just written, read back by ``pread`` of several sizes and
  threads, faulted in through a mapping, ``posix_fadvise(WILLNEED)``;

and prints one table (JSON with ``--json``). Nothing here changes GPU settings.

    python3 benchmarks/cuda_pinning.py [--json out.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import mmap
import ctypes
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MiB, GiB = 1 << 20, 1 << 30
MADV_POPULATE_READ, MADV_POPULATE_WRITE = 22, 23  # Linux 5.14+


def timed(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def thp_setting() -> str:
    try:
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError as err:
        return f"unknown ({err.strerror})"


class Pinning:
    def __init__(self):
        from halsim.backends.cuda_driver import check, cu, device_info, set_current

        self.cu, self.check = cu, check
        self.info = device_info(0)
        self.set_current = lambda: set_current(self.info.context, "cuda:0")
        self.set_current()
        self.stream = check(cu.cuStreamCreate(1), "cuStreamCreate")
        self.device = check(cu.cuMemAlloc(4 * GiB), "cuMemAlloc")

    # ----- pieces ---------------------------------------------------------------
    def host_alloc(self, size: int) -> int:
        return int(self.check(self.cu.cuMemHostAlloc(size, self.cu.CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc"))

    def free_host(self, ptr: int) -> None:
        self.check(self.cu.cuMemFreeHost(ptr), "cuMemFreeHost")

    def register(self, address: int, size: int, read_only: bool = False) -> None:
        flags = self.cu.CU_MEMHOSTREGISTER_PORTABLE | (self.cu.CU_MEMHOSTREGISTER_READ_ONLY if read_only else 0)
        self.check(self.cu.cuMemHostRegister(address, size, flags), "cuMemHostRegister")

    def unregister(self, address: int) -> None:
        self.check(self.cu.cuMemHostUnregister(address), "cuMemHostUnregister")

    def dma(self, address: int, size: int) -> float:
        start = time.perf_counter()
        done = 0
        while done < size:  # the device buffer is 4 GiB
            n = min(size - done, 4 * GiB)
            self.check(self.cu.cuMemcpyHtoDAsync(self.device, address + done, n, self.stream), "cuMemcpyHtoDAsync")
            done += n
        self.check(self.cu.cuStreamSynchronize(self.stream), "cuStreamSynchronize")
        return time.perf_counter() - start

    def pool(self, threads: int, fn, items):
        def run(item):
            self.set_current()
            return fn(item)
        with cf.ThreadPoolExecutor(threads) as pool:
            return list(pool.map(run, items))


def anonymous(size: int, huge: bool | None, touch: bool = True) -> tuple[mmap.mmap, int]:
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge is not None:
        mapping.madvise(mmap.MADV_HUGEPAGE if huge else mmap.MADV_NOHUGEPAGE)
    if touch:
        try:
            mapping.madvise(MADV_POPULATE_WRITE)
        except OSError:
            np.frombuffer(mapping, np.uint8)[:: mmap.PAGESIZE] = 1
    view = memoryview(mapping)
    address = np.frombuffer(view, np.uint8).ctypes.data
    view.release()
    return mapping, address


def staging_rows(p: Pinning) -> list[dict]:
    rows = []
    total, slot = 256 * MiB, 16 * MiB

    def one_block():
        ptr = p.host_alloc(total)
        p.free_host(ptr)
    rows.append(("staging 256 MiB: one cuMemHostAlloc (+free)", timed(one_block)))

    def block_alloc_only():
        ptr = p.host_alloc(total)
        held.append(ptr)
    held: list[int] = []
    rows.append(("staging 256 MiB: one cuMemHostAlloc (alloc alone)", timed(block_alloc_only)))
    for ptr in held:
        p.free_host(ptr)

    for threads in (1, 4, 8, 16):
        def slots_on_threads(threads=threads):
            ptrs = p.pool(threads, lambda _: p.host_alloc(slot), range(total // slot))
            for ptr in ptrs:
                p.free_host(ptr)
        rows.append((f"staging 16 x 16 MiB cuMemHostAlloc on {threads} thread(s) (+free)", timed(slots_on_threads)))

    for huge in (False, True):
        def mapped_register(huge=huge):
            mapping, address = anonymous(total, huge)
            p.register(address, total)
            p.unregister(address)
            mapping.close()
        rows.append((f"staging 256 MiB: mmap+populate+register ({'huge' if huge else '4 KiB'} pages)",
                     timed(mapped_register)))

    for threads in (4, 16):
        def slot_register(threads=threads):
            def one(_):
                mapping, address = anonymous(slot, True)
                p.register(address, slot)
                return mapping, address
            made = p.pool(threads, one, range(total // slot))
            for mapping, address in made:
                p.unregister(address)
                mapping.close()
        rows.append((f"staging 16 x 16 MiB mmap(huge)+register on {threads} threads", timed(slot_register)))
    return [{"what": w, "seconds": round(s, 4), "gb_per_s": round(total / s / 1e9, 2)} for w, s in rows]


def host_memory_rows(p: Pinning, size: int) -> list[dict]:
    rows = []
    for huge in (False, True):
        mapping, address = anonymous(size, huge)
        kind = "huge pages" if huge else "4 KiB pages"
        start = time.perf_counter()
        p.register(address, size)
        reg = time.perf_counter() - start
        dma = min(p.dma(address, size) for _ in range(3))
        start = time.perf_counter()
        p.unregister(address)
        unreg = time.perf_counter() - start
        rows.append({"what": f"host memory {size // GiB} GiB ({kind}): register whole", "seconds": round(reg, 4),
                     "gb_per_s": round(size / reg / 1e9, 2), "dma_gb_per_s": round(size / dma / 1e9, 2),
                     "unregister_s": round(unreg, 4)})
        for threads, piece in ((4, 256 * MiB), (8, 256 * MiB), (8, 64 * MiB)):
            pieces = [address + k for k in range(0, size, piece)]
            start = time.perf_counter()
            p.pool(threads, lambda a: p.register(a, piece), pieces)
            reg = time.perf_counter() - start
            for a in pieces:
                p.unregister(a)
            rows.append({"what": f"host memory ({kind}): register {piece // MiB} MiB pieces on {threads} threads",
                         "seconds": round(reg, 4), "gb_per_s": round(size / reg / 1e9, 2)})
        mapping.close()
    # numpy's own allocation: what a user's array is
    array = np.ones(size, np.uint8)
    address = array.ctypes.data
    base = address - address % mmap.PAGESIZE
    length = -(-(address + size - base) // mmap.PAGESIZE) * mmap.PAGESIZE
    start = time.perf_counter()
    p.register(base, length)
    reg = time.perf_counter() - start
    p.unregister(base)
    rows.append({"what": f"numpy array {size // GiB} GiB: register whole", "seconds": round(reg, 4),
                 "gb_per_s": round(size / reg / 1e9, 2)})
    del array
    return rows


def file_rows(p: Pinning, path: Path, size: int) -> list[dict]:
    rows = []
    with open(path, "rb") as f:
        fd = f.fileno()

        def fresh(populate=False):
            flags = mmap.MAP_SHARED | (getattr(mmap, "MAP_POPULATE", 0) if populate else 0)
            mapping = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ)
            view = memoryview(mapping)
            address = np.frombuffer(view, np.uint8).ctypes.data
            view.release()
            return mapping, address

        def measure(label, prepare, read_only=True):
            times = []
            for _ in range(2):
                mapping, address = fresh(populate=prepare == "populate")
                start = time.perf_counter()
                if callable(prepare):
                    prepare(mapping)
                prepared = time.perf_counter()
                p.register(address, size, read_only=read_only)
                registered = time.perf_counter()
                p.unregister(address)
                mapping.close()
                times.append((prepared - start, registered - prepared))
            prep, reg = min(times, key=lambda t: t[0] + t[1])
            rows.append({"what": label, "prepare_s": round(prep, 4), "register_s": round(reg, 4),
                         "gb_per_s": round(size / (prep + reg) / 1e9, 2)})

        measure(f"file mapping {size // GiB} GiB, page-cached: register (read-only)", None)
        measure("file mapping: MAP_POPULATE at mmap, then register", "populate")

        def prefault(threads):
            def run(mapping):
                piece = 64 * MiB
                def one(offset):
                    mapping.madvise(MADV_POPULATE_READ, offset, min(piece, size - offset))
                with cf.ThreadPoolExecutor(threads) as pool:
                    list(pool.map(one, range(0, size, piece)))
            return run
        for threads in (1, 8):
            try:
                measure(f"file mapping: MADV_POPULATE_READ on {threads} thread(s), then register", prefault(threads))
            except OSError as err:
                rows.append({"what": f"file mapping: MADV_POPULATE_READ on {threads} thread(s)",
                             "error": err.strerror})
                break
        # registering pieces of one mapping on several threads
        for threads in (1, 8):
            mapping, address = fresh()
            piece = 128 * MiB
            pieces = [address + k for k in range(0, size, piece)]
            start = time.perf_counter()
            p.pool(threads, lambda a: p.register(a, piece, read_only=True), pieces)
            reg = time.perf_counter() - start
            for a in pieces:
                p.unregister(a)
            mapping.close()
            rows.append({"what": f"file mapping: register 128 MiB pieces on {threads} thread(s)",
                         "register_s": round(reg, 4), "gb_per_s": round(size / reg / 1e9, 2)})
    return rows


def reader_rows(p: Pinning, path: Path, size: int) -> list[dict]:
    """Page cache -> pinned slots by N reader threads, no GPU (the ring's upper bound),
    then with the DMA running; each by ``pread`` and by a memcpy out of the file's
    mapping (prefaulted with MADV_POPULATE_READ, timed apart)."""
    with contextlib.ExitStack() as held:  # everything let go in reverse, however it ends
        return _reader_rows(p, path, size, held)


def _reader_rows(p: Pinning, path: Path, size: int, held: contextlib.ExitStack) -> list[dict]:
    rows = []
    slot, slots = 16 * MiB, 32
    base = p.host_alloc(slot * slots)
    held.callback(p.free_host, base)
    views = [memoryview((ctypes.c_ubyte * slot).from_address(base + k * slot)).cast("B")
             for k in range(slots)]
    held.callback(lambda: [v.release() for v in views])
    fd = os.open(path, os.O_RDONLY)
    held.callback(os.close, fd)
    mapping = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
    held.callback(mapping.close)
    arrays = {"targets": [np.frombuffer(v, np.uint8) for v in views]}
    held.callback(arrays.clear)  # first: the views and the mapping close only once nothing points in
    start = time.perf_counter()
    try:
        mapping.madvise(MADV_POPULATE_READ)
    except OSError:
        pass
    rows.append({"what": f"map {size >> 20} MiB of the page-cached file and prefault it (MADV_POPULATE_READ)",
                 "seconds": round(time.perf_counter() - start, 4)})
    arrays["mapped"] = np.frombuffer(mapping, np.uint8)
    targets, mapped = arrays["targets"], arrays["mapped"]

    def by_pread(k):
        os.preadv(fd, [views[k % slots]], k * slot)

    def by_copy(k):
        np.copyto(targets[k % slots], mapped[k * slot : (k + 1) * slot])  # numpy releases the GIL

    methods = (("pread", by_pread), ("mmap copy", by_copy))
    try:
        for name, read in methods:
            for threads in (1, 4, 8, 12, 16):
                def run():
                    with cf.ThreadPoolExecutor(threads) as pool:
                        list(pool.map(read, range(size // slot)))
                seconds = timed(run)
                rows.append({"what": f"{name} page cache -> pinned 16 MiB slots, {threads} thread(s)",
                             "seconds": round(seconds, 4), "gb_per_s": round(size / seconds / 1e9, 2)})
        # The same while the GPU's DMA reads host memory at full speed: what a
        # streamed upload asks of the memory system at once.
        source = p.host_alloc(GiB)
        try:
            for name, read in methods:
                for threads in (4, 8, 12, 16):
                    stop = threading.Event()
                    moved = [0]

                    def dma_loop():
                        p.set_current()
                        while not stop.is_set():
                            p.dma(source, GiB)
                            moved[0] += GiB
                    dma = threading.Thread(target=dma_loop)
                    dma.start()
                    time.sleep(0.05)
                    start, dma_before = time.perf_counter(), moved[0]
                    rounds = 3
                    for _ in range(rounds):
                        with cf.ThreadPoolExecutor(threads) as pool:
                            list(pool.map(read, range(size // slot)))
                    seconds = time.perf_counter() - start
                    dma_bytes = moved[0] - dma_before
                    stop.set()
                    dma.join()
                    rows.append({"what": f"{name}, {threads} threads, while DMA streams pinned memory to the GPU",
                                 "seconds": round(seconds / rounds, 4),
                                 "gb_per_s": round(rounds * size / seconds / 1e9, 2),
                                 "dma_gb_per_s_meanwhile": round(dma_bytes / seconds / 1e9, 2)})
        finally:
            p.free_host(source)
    finally:
        del targets, mapped  # the stack's arrays.clear drops the last references
    return rows


def overlap_rows(p: Pinning, size: int = GiB) -> list[dict]:
    """Does a DMA already in flight go on while the host registers memory?"""
    source = p.host_alloc(size)
    mapping, address = anonymous(size, True)
    cu = p.cu

    def start_dma():
        p.check(cu.cuMemcpyHtoDAsync(p.device, source, size, p.stream), "cuMemcpyHtoDAsync")

    def finish_dma():
        p.check(cu.cuStreamSynchronize(p.stream), "cuStreamSynchronize")

    def dma_alone():
        start_dma()
        finish_dma()

    def register_alone():
        p.register(address, size)
        p.unregister(address)

    def both():
        start_dma()
        p.register(address, size)
        p.unregister(address)
        finish_dma()

    def both_then_copy():  # registering first: is the copy call held until it ends?
        p.register(address, size)
        start_dma()
        p.unregister(address)
        finish_dma()
    try:
        dma, reg, together, ordered = (timed(fn, 5) for fn in (dma_alone, register_alone, both, both_then_copy))
    finally:
        p.free_host(source)
        mapping.close()
    return [{"what": f"DMA {size >> 20} MiB from pinned memory, alone", "seconds": round(dma, 4)},
            {"what": f"register + unregister {size >> 20} MiB (huge pages), alone", "seconds": round(reg, 4)},
            {"what": "DMA issued, then register + unregister meanwhile", "seconds": round(together, 4),
             "overlap": round((dma + reg - together) / min(dma, reg), 2)},
            {"what": "register, DMA issued, unregister meanwhile", "seconds": round(ordered, 4)}]


def release_rows(p: Pinning, size: int = GiB) -> list[dict]:
    """Which copies does an unregistration wait for? A's release while a DMA from other
    memory is in flight: registered memory B, or pinned memory from cuMemHostAlloc."""
    cu = p.cu
    pinned = p.host_alloc(size)
    a_map, a = anonymous(size, True)
    b_map, b = anonymous(size, True)
    p.register(b, size)

    def release_during(source) -> tuple[float, float]:
        p.register(a, size)
        start = time.perf_counter()
        if source is not None:
            p.check(cu.cuMemcpyHtoDAsync(p.device, source, size, p.stream), "cuMemcpyHtoDAsync")
        issued = time.perf_counter()
        p.unregister(a)
        released = time.perf_counter()
        p.check(cu.cuStreamSynchronize(p.stream), "cuStreamSynchronize")
        done = time.perf_counter()
        return released - issued, done - start

    def dma(source) -> float:
        start = time.perf_counter()
        p.check(cu.cuMemcpyHtoDAsync(p.device, source, size, p.stream), "cuMemcpyHtoDAsync")
        p.check(cu.cuStreamSynchronize(p.stream), "cuStreamSynchronize")
        return time.perf_counter() - start

    rows = []
    try:
        for label, source in (("nothing in flight", None), ("a DMA from registered memory B in flight", b),
                              ("a DMA from cuMemHostAlloc memory in flight", pinned)):
            runs = [release_during(source) for _ in range(5)]
            release = statistics.median(r[0] for r in runs)
            total = statistics.median(r[1] for r in runs)
            row = {"what": f"unregister {size >> 20} MiB (A) with {label}", "release_s": round(release, 4),
                   "until_dma_done_s": round(total, 4)}
            if source is not None:
                row["dma_alone_s"] = round(statistics.median(dma(source) for _ in range(3)), 4)
            rows.append(row)
    finally:
        p.unregister(b)
        p.free_host(pinned)
        a_map.close()
        b_map.close()
    return rows


def submission_rows(p: Pinning, size: int = GiB, copy: int = 64 * MiB) -> list[dict]:
    """While one thread registers or unregisters, does another thread's copy wait?

    Times, from the copy's submission, how long ``cuMemcpyHtoDAsync`` blocks and
    when the copy is done, against the other thread's call; the simulator needs
    to know which of the two (if either) holds copies back.
    """
    source = p.host_alloc(copy)
    mapping, address = anonymous(size, True)
    cu = p.cu

    def race(before, during, after) -> dict:
        before()
        began, ended = threading.Event(), [0.0]

        def other():
            p.set_current()
            began.set()
            during()
            ended[0] = time.perf_counter()
        thread = threading.Thread(target=other)
        thread.start()
        try:
            began.wait()
            time.sleep(0.002)  # the other call is under way
            submit = time.perf_counter()
            p.check(cu.cuMemcpyHtoDAsync(p.device, source, copy, p.stream), "cuMemcpyHtoDAsync")
            returned = time.perf_counter()
            p.check(cu.cuStreamSynchronize(p.stream), "cuStreamSynchronize")
            done = time.perf_counter()
        finally:
            thread.join()  # ...and undo what it did, even when the copy failed
            after()
        return {"submit_blocked_s": returned - submit, "copy_done_s": done - submit,
                "other_call_left_s": ended[0] - submit}

    def median_of(fn, repeat: int = 5) -> dict:
        runs = [fn() for _ in range(repeat)]
        return {k: round(statistics.median(r[k] for r in runs), 5) for k in runs[0]}

    nothing = lambda: None  # noqa: E731
    try:
        alone = timed(lambda: p.dma(source, copy), 5)
        during_register = median_of(lambda: race(nothing, lambda: p.register(address, size),
                                                 lambda: p.unregister(address)))
        during_unregister = median_of(lambda: race(lambda: p.register(address, size),
                                                   lambda: p.unregister(address), nothing))
    finally:
        p.free_host(source)
        mapping.close()
    what = f"{copy >> 20} MiB copy submitted 2 ms into"
    return [{"what": f"{copy >> 20} MiB copy alone", "seconds": round(alone, 5)},
            {"what": f"{what} registering {size >> 20} MiB on another thread", **during_register},
            {"what": f"{what} unregistering {size >> 20} MiB on another thread", **during_unregister}]


def cache_state_rows(p: Pinning, folder: Path, size: int) -> list[dict]:
    """Registering a page-cached file, by how its pages came into the cache: the fidelity runs
    saw an upload's import run 1.5-2x faster on a file just written than after it was
    dropped and read back."""
    from halsim import pagecache

    path = folder / "cache-state.bin"
    block = np.random.default_rng(7).integers(0, 255, 16 * MiB, dtype=np.uint8)
    piece = 256 * MiB

    def write():
        with open(path, "wb", buffering=0) as f:
            for _ in range(size // len(block)):
                f.write(block)
            os.fsync(f.fileno())

    def pread_by(request: int, threads: int = 1):
        def fill():
            pagecache.drop(path)
            fd = os.open(path, os.O_RDONLY)
            try:
                def part(k):
                    buffer = bytearray(request)
                    for offset in range(k * request, size, threads * request):
                        os.preadv(fd, [buffer], offset)
                with cf.ThreadPoolExecutor(threads) as pool:
                    list(pool.map(part, range(threads)))
            finally:
                os.close(fd)
        return fill

    def populate():
        pagecache.drop(path)
        with open(path, "rb") as f:
            mapping = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ)
            mapping.madvise(MADV_POPULATE_READ)
            mapping.close()

    def willneed():
        pagecache.drop(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, size, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)
        deadline = time.time() + 5
        while pagecache.resident_fraction(path) < 0.999 and time.time() < deadline:
            time.sleep(0.05)

    def register_all() -> float:
        """Map afresh and register the file in 256 MiB pieces, read-only, as the CUDA backend does."""
        with open(path, "rb") as f:
            mapping = mmap.mmap(f.fileno(), size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        view = memoryview(mapping)
        base = np.frombuffer(view, np.uint8).ctypes.data
        view.release()
        start = time.perf_counter()
        for offset in range(0, size, piece):
            p.register(base + offset, piece, read_only=True)
        took = time.perf_counter() - start
        for offset in range(0, size, piece):
            p.unregister(base + offset)
        mapping.close()
        return took

    def meminfo() -> str:
        try:
            lines = Path("/proc/meminfo").read_text().splitlines()
        except OSError:
            return ""
        return " ".join(l.split()[0] + l.split()[1] for l in lines if l.startswith(("FileHugePages", "FilePmdMapped")))

    states = [("just written (16 MiB writes, fsync)", write),
              ("dropped, read back by pread 16 MiB (pagecache.warm)", pread_by(16 * MiB)),
              ("dropped, read back by pread 128 KiB", pread_by(128 * 1024)),
              ("dropped, read back by 4 threads, pread 16 MiB (a ring)", pread_by(16 * MiB, 4)),
              ("dropped, faulted in through a mapping (MADV_POPULATE_READ)", populate),
              ("dropped, posix_fadvise(WILLNEED)", willneed),
              ("dropped, faulted in by registering the cold mapping (a cold import)",
               lambda: (pagecache.drop(path), register_all())),
              ("written again", write)]
    rows = []
    try:
        for label, fill in states:
            start = time.perf_counter()
            fill()
            filled = time.perf_counter() - start
            resident = pagecache.resident_fraction(path)
            times = [register_all() for _ in range(3)]
            best = min(times)
            rows.append({"what": label, "fill_s": round(filled, 3), "resident": round(resident, 3),
                         "register_s": round(statistics.median(times), 4), "gb_per_s": round(size / best / 1e9, 1),
                         "meminfo": meminfo()})
    finally:
        path.unlink(missing_ok=True)
    return rows


def make_file(folder: Path, size: int) -> Path:
    path = folder / "pinning.bin"
    block = np.random.default_rng(5).integers(0, 255, 64 * MiB, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
    with open(path, "rb") as f:  # into the page cache
        while f.read(64 * MiB):
            pass
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--host-gib", type=int, default=4)
    parser.add_argument("--file-gib", type=int, default=2)
    parser.add_argument("--only-overlap", action="store_true", help="only whether registration and copies overlap")
    parser.add_argument("--only-readers", action="store_true", help="only page cache -> pinned slots, pread and mmap")
    parser.add_argument("--only-release", action="store_true",
                        help="only: which copies in flight an unregistration waits for")
    parser.add_argument("--only-cache-state", action="store_true",
                        help="only: registering a page-cached file, by how its pages came into the cache")
    args = parser.parse_args()

    p = Pinning()
    result = {"card": p.info.name, "kernel": platform.release(), "cpus": os.cpu_count(), "thp": thp_setting(),
              "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(result, flush=True)

    def show(group: str, rows: list[dict]) -> None:
        result[group] = rows
        print(f"\n{group}")
        for row in rows:
            rest = "  ".join(f"{k}={v}" for k, v in row.items() if k != "what")
            print(f"  {row['what']:<72} {rest}", flush=True)
        if args.json:  # after each group: a later failure keeps what was measured
            args.json.write_text(json.dumps(result, indent=1))

    if args.only_cache_state:
        show("cache_state", cache_state_rows(p, args.dir, args.file_gib * GiB))
        return
    if args.only_release:
        show("release", release_rows(p))
        return
    if not args.only_readers:
        show("overlap", overlap_rows(p))
        show("submission", submission_rows(p))
    if args.only_overlap:
        return
    if args.only_readers:
        path = make_file(args.dir, args.file_gib * GiB)
        try:
            show("readers", reader_rows(p, path, args.file_gib * GiB))
        finally:
            path.unlink()
        return
    show("staging", staging_rows(p))
    show("host_memory", host_memory_rows(p, args.host_gib * GiB))
    path = make_file(args.dir, args.file_gib * GiB)
    try:
        show("file", file_rows(p, path, args.file_gib * GiB))
        show("readers", reader_rows(p, path, args.file_gib * GiB))
    finally:
        path.unlink()


if __name__ == "__main__":
    main()
