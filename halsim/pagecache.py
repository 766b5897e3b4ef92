"""The kernel's page cache for one file: how much of it is resident, drop it, fill it.

Cold-read measurements (``halsim calibrate``, ``halsim compare`` with cold
cases) need the file out of the cache before each run. :func:`drop` asks for
that with ``posix_fadvise(DONTNEED)``, which needs no root and touches only
this file; if pages stay resident (some file systems ignore the advice) and we
are root, it falls back to ``/proc/sys/vm/drop_caches``, which empties the
whole machine's cache. :func:`resident_fraction` checks the result with
``mincore``, so a "cold" run that was really warm is reported, not timed.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os

import numpy as np

from halsim.errors import HalsimError


class ColdUnavailable(HalsimError):
    """The file's pages could not be dropped from the page cache here."""


def resident_fraction(path: "str | os.PathLike") -> float:
    """Fraction of the file's pages in the page cache now (``mincore``)."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        length = os.fstat(fd).st_size
        if length == 0:
            return 1.0
        mapping = mmap.mmap(fd, length, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        view = np.frombuffer(mapping, np.uint8)
        pages = -(-length // mmap.PAGESIZE)
        flags = (ctypes.c_ubyte * pages)()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        if libc.mincore(ctypes.c_void_p(view.ctypes.data), ctypes.c_size_t(length), flags) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        del view
        return float((np.frombuffer(flags, np.uint8) & 1).mean())
    finally:
        mapping.close()


def drop(path: "str | os.PathLike", tolerance: float = 0.02) -> str:
    """Evict the file from the page cache; returns how ("fadvise" or "drop_caches").

    Raises :class:`ColdUnavailable` when more than ``tolerance`` of it stays resident.
    """
    name = os.fspath(path)
    gc.collect()  # a mapping kept alive by a stale view pins its pages
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages are never dropped: write them back first
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    left = resident_fraction(name)
    if left <= tolerance:
        return "fadvise"
    if os.geteuid() == 0 and os.path.exists("/proc/sys/vm/drop_caches"):
        os.sync()
        try:
            with open("/proc/sys/vm/drop_caches", "w") as control:
                control.write("1\n")
        except OSError as err:
            raise ColdUnavailable(f"{name}: {left:.0%} stays cached after fadvise, and drop_caches failed: "
                                  f"{err.strerror}") from None
        left = resident_fraction(name)
        if left <= tolerance:
            return "drop_caches"
    raise ColdUnavailable(f"{name}: {left:.0%} of the file stays in the page cache after "
                          "posix_fadvise(DONTNEED)" + ("" if os.geteuid() == 0 else " (not root: no drop_caches)"))


def warm(path: "str | os.PathLike", piece: int = 16 << 20, fresh: bool = False) -> None:
    """Read the whole file once, sequentially on one thread, so it sits in the page cache.

    ``fresh``: drop it first, so all of it comes in as one sequential read brings it. How
    pages came in matters: on the lent H100 VM a sequential read (or a write) brought
    them in as 2 MiB pages, which the GPU driver registered at 44-55 GB/s, while a cold
    read by four threads at once (a streaming ring) left 4 KiB pages, registered at
    15 GB/s (docs/benchmarks/cuda.md). Without ``fresh``, what is cached stays as it came.
    """
    if fresh:
        try:
            drop(path)
        except ColdUnavailable:
            pass  # what stays cached stays as it came; the read below brings in the rest
    buffer = bytearray(piece)
    with open(os.fspath(path), "rb", buffering=0) as f:
        while f.readinto(buffer):
            pass


def read_ahead_bytes(path: "str | os.PathLike") -> int | None:
    """The readahead window of the block device ``path`` lives on (its ``read_ahead_kb``, the whole disk's for a
    partition), in bytes; None where sysfs does not say (not Linux, a network or overlay file system)."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return None
    base = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    for knob in (f"{base}/queue/read_ahead_kb", f"{base}/../queue/read_ahead_kb"):
        try:
            with open(knob) as f:
                return int(f.read().strip()) * 1024
        except (OSError, ValueError):
            continue
    return None
