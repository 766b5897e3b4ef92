"""Calibration: microbenchmarks run through a device's own backend, fitted into a Platform.

Every microbenchmark that the device trait can express is a small hand-built
:class:`~halsim.plan.Plan` run by the one :class:`~halsim.engine.Engine` on the
device, and timed from the spans of its Trace — so the same code measures the
CPU, CUDA and Vulkan devices and :class:`~halsim.sim.SimDevice`:

* ``h2d`` / ``d2h`` — COPY / COPY_BACK steps between a pinned staging slot and
  a buffer, one at a time, by chunk size (the copy step's span; and the gap
  between one copy's end and the next one's start: the engine's cost per step);
* ``pageable`` — the same copies from ordinary host memory (CPU and CUDA only:
  a Vulkan copy always goes through its own mapped memory);
* ``copies`` — copies on every copy queue at once: do they overlap?
* ``read`` / ``cold`` — READ steps into staging, warm and cold, by request
  size (one reader) and by reader count;
* ``stream`` — reads and copies at once (a streaming ring by reader count):
  how reads, copies and DMA share the host, which the fit's "sharing" needs;
  and rings of 1 MiB chunks by reader count, whose every step the engine's
  thread dispatches: what a step costs it with that many threads at work;
* ``tight`` — the widest ``stream`` ring again with one slot per reader: how
  much less of what many readers write reaches host memory when the slots fit
  in the CPU's cache (the fit's ``staging_write_curve``), and with the smaller
  ``stream`` rings, how much faster several readers read into fewer bytes of
  slots (its ``page_cache_ring_curve``);
* ``pin`` — allocating and freeing a staging pool of ``slots`` x ``bytes``;
* ``import`` — IMPORT / UNIMPORT of windows of a mapped file, by window size.

What the trait has no step for is measured on the host directly: ``memcpy``
by thread count. A simulated device gets a simulated host
(:class:`SimTarget`), so calibrating the simulator against itself runs the
very same benchmarks — that is how :mod:`halsim.fit` is tested.

Real runs go over every point ``Config.repeats`` times, round after round
(after one discarded warm-up run per benchmark), and keep every sample, so the
fit can take medians and report the spread. :func:`calibrate` measures and
fits in one call; :func:`predict` runs one point on a simulated platform.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform as _platform
import statistics
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from halsim.caps import DeviceCaps
from halsim.compare import relative_spread
from halsim.device import Device
from halsim.engine import Engine
from halsim.files import HalFile, MappedFile
from halsim.plan import ImportWindow, Limits, Op, Plan, StagingPool, Step
from halsim.policies import ImportPolicy, StreamingPolicy
from halsim.request import BufferSpec, Direction, SourceInfo, Transfer, UploadRequest
from halsim.trace import Trace
from halsim.units import format_size

if TYPE_CHECKING:
    from halsim.fit import Fitted
    from halsim.platform import Platform

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
ProgressFn = Callable[[int, int, str], None]  # (runs done, runs in all, what runs now)


# ---------------------------------------------------------------- what to measure


@dataclass(frozen=True)
class Config:
    """Sizes, counts and repeats of the microbenchmarks."""

    scratch: int  # bytes of the scratch file the read and import benchmarks use
    copy_chunks: tuple[int, ...]
    read_sizes: tuple[int, ...]  # warm, one reader
    cold_sizes: tuple[int, ...]  # cold, one reader
    threads: tuple[int, ...]  # memcpy threads, and readers of the multi-reader and streaming runs
    thread_chunk: int  # request size of the multi-reader runs
    memcpy_bytes: int  # per memcpy thread
    pin_slots: tuple[int, ...]
    pin_bytes: tuple[int, ...]  # slot sizes of the pinning benchmark
    import_pieces: tuple[int, ...]
    run_bytes: int  # aim for this many bytes per run of one size ...
    max_steps: int  # ... with at least 4 and at most this many steps
    repeats: int
    # Device buffers of each size, this many at a time (none: a run stored before they were measured).
    alloc_sizes: tuple[int, ...] = ()
    alloc_counts: tuple[int, ...] = ()

    @classmethod
    def quick(cls) -> "Config":
        """Seconds on a laptop: small sizes, three repeats."""
        return cls(scratch=32 * MiB, copy_chunks=(64 * KiB, 256 * KiB, MiB, 4 * MiB),
                   read_sizes=(64 * KiB, 256 * KiB, MiB, 4 * MiB), cold_sizes=(256 * KiB, MiB, 4 * MiB),
                   threads=(1, 2, 4), thread_chunk=2 * MiB, memcpy_bytes=16 * MiB, pin_slots=(1, 2, 4),
                   pin_bytes=(MiB, 4 * MiB, 16 * MiB), import_pieces=(MiB, 4 * MiB, 16 * MiB),
                   run_bytes=8 * MiB, max_steps=64, repeats=3, alloc_sizes=(MiB, 16 * MiB), alloc_counts=(1, 4))

    @classmethod
    def full(cls) -> "Config":
        """Sizes up to what an upload uses (64 MiB chunks, 1 GiB scratch), five repeats."""
        return cls(scratch=GiB, copy_chunks=(64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB, 64 * MiB),
                   read_sizes=(64 * KiB, 256 * KiB, MiB, 4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB),
                   cold_sizes=(256 * KiB, MiB, 4 * MiB, 16 * MiB, 64 * MiB), threads=(1, 2, 4, 8),
                   thread_chunk=16 * MiB, memcpy_bytes=128 * MiB, pin_slots=(1, 2, 4, 8),
                   pin_bytes=(4 * MiB, 16 * MiB, 64 * MiB), import_pieces=(4 * MiB, 16 * MiB, 64 * MiB, 256 * MiB),
                   run_bytes=256 * MiB, max_steps=128, repeats=5, alloc_sizes=(MiB, 256 * MiB), alloc_counts=(1, 4))

    def steps(self, size: int, within: int | None = None) -> int:
        """How many steps of ``size`` bytes one run takes, in at most ``within`` bytes (default: the scratch file)."""
        count = max(4, min(self.max_steps, self.run_bytes // max(size, 1)))
        return max(1, min(count, (within or self.scratch) // max(size, 1)))


@dataclass(frozen=True)
class Probe:
    """One point of one microbenchmark.

    ``bench`` is ``h2d``, ``d2h``, ``pageable``, ``copies``, ``read``, ``near`` (one
    reader's requests into a small set of slots, taken in turn), ``cold``, ``stream``, ``pin``, ``import``,
    ``tight`` (the widest streaming ring again with one slot per reader: a smaller footprint, the same readers),
    ``fault`` (importing windows of a cold file), ``register_in_upload`` (the same
    registrations inside an import upload of the scratch file, copies streaming),
    ``memcpy`` or ``alloc`` (device buffers); ``size`` the chunk, request, slot,
    window or buffer size; ``count`` how many of them; ``width`` the readers, queues,
    slots (``pin``, ``near``), memcpy threads, buffers (``alloc``) or tensors a window
    (``register_in_upload``).
    """

    bench: str
    size: int
    count: int
    width: int = 1

    @property
    def label(self) -> str:
        what = {"copies": "queues", "pin": "slots", "near": "slots", "memcpy": "threads",
                "alloc": "buffers", "register_in_upload": "tensors"}.get(self.bench, "readers")
        return f"{self.bench} {format_size(self.size)}" + (f" x{self.width} {what}" if self.width != 1 else "")

    @property
    def readings(self) -> tuple[str, ...]:
        """The names of what one run of it reads off (the first is its value)."""
        return _READINGS.get(self.bench, (self.bench,))


# Every microbenchmark this version measures (a stored run may hold others, from before).
BENCHES = frozenset({"h2d", "d2h", "pageable", "copies", "read", "near", "cold", "stream", "tight", "pin", "import",
                     "fault", "register_in_upload", "memcpy", "alloc"})

# A serial copy run also reads off the ``gap``: the median time from one copy's end to
# the next one's start, i.e. what a step costs beyond its own span (the engine's dispatch).
# An import upload also reads off its ``handover``, the median time from one step's end to the
# next one's start on the import lane (registrations and releases: on the H100 VM 0.075-0.13 ms
# with one tensor a window, about as the simulator has it; the run of several tensors a window sets
# host.import_handover_per_copy from it), and its whole ``upload``: recorded, not fitted.
_READINGS = {"import": ("import", "unimport"), "pin": ("pin", "unpin"), "copies": ("copies", "overlap"),
             "h2d": ("h2d", "gap"), "d2h": ("d2h", "gap"), "pageable": ("pageable", "gap"),
             "register_in_upload": ("register_in_upload", "handover", "upload")}


def probes(config: Config, caps: DeviceCaps, pageable: bool) -> list[Probe]:
    """Every point to measure on a device with ``caps``, in the order they run."""
    out = [Probe("memcpy", config.memcpy_bytes, 1, t) for t in config.threads]
    for bench in ("h2d", "d2h") + (("pageable",) if pageable else ()):
        out += [Probe(bench, c, config.steps(c, within=1 << 62)) for c in config.copy_chunks]  # no file involved
    if caps.copy_queues > 1:
        # At least 16 MiB: a copy must outlast the engine's dispatch of the next one, or the
        # copies run one after the other however many engines there are.
        chunk = max(config.copy_chunks[-1], 16 * MiB)
        out.append(Probe("copies", chunk, 4 * caps.copy_queues, caps.copy_queues))
    out += [Probe("pin", 0, 0, 0)]  # the cost of a run with no staging: the intercept
    out += [Probe("pin", b, 1, s) for s in config.pin_slots for b in config.pin_bytes]
    out += [Probe("alloc", b, 1, n) for n in config.alloc_counts for b in config.alloc_sizes]
    if caps.can_import_host:
        out += [Probe("import", p, max(2, min(16, config.scratch // p)))
                for p in config.import_pieces if p <= config.scratch and p % caps.import_alignment == 0]
    out += [Probe("read", s, config.steps(s)) for s in config.read_sizes]
    out += near_probes(config)
    out += [Probe("read", config.thread_chunk, config.scratch // config.thread_chunk, n)
            for n in config.threads if n > 1]
    out += [Probe("stream", config.thread_chunk, config.scratch // config.thread_chunk, n) for n in config.threads]
    if max(config.threads) > 1:
        # The widest ring over the scratch file LONG_PASSES times, and again into half the slots: less of
        # what they write reaches host memory when the slots stay in the CPU's cache. On the H200 VM
        # (300 MiB of L3), pinned first, 8 x 16 MiB ran 1.06-1.13x faster than 16 x 16 MiB over 4 GiB
        # (fidelity run 55, ring_footprint.py) and no faster over 1 GiB (run 54).
        long = LONG_PASSES * (config.scratch // config.thread_chunk)
        out += [Probe(bench, config.thread_chunk, long, max(config.threads)) for bench in ("stream", "tight")]
    # Rings of small chunks: many steps, so the engine's dispatch of each one bounds them;
    # by reader count, since every further thread makes each step cost more (the GIL).
    small = min(MiB, config.thread_chunk // 2)
    out += [Probe("stream", small, min(1024, config.scratch // small), n)
            for n in config.threads if n > 1 or len(config.threads) == 1]
    if caps.can_import_host and not caps.import_in_place:
        pieces = [p for p in config.import_pieces if p <= config.scratch and p % caps.import_alignment == 0]
        if pieces:
            # Registering a cold window faults its pages in (an in-place import only maps them).
            out.append(Probe("fault", pieces[-1], max(2, min(16, config.scratch // pieces[-1]))))
            # Registrations inside an upload, copies streaming, cost more than alone (the H100
            # VM: 5-25 %): timed span by span, against the ``import`` probe of the same size.
            inside = max((p for p in pieces if p <= INSIDE_PIECE), default=pieces[0])
            windows = max(2, min(16, config.scratch // inside))
            out.append(Probe("register_in_upload", inside, windows))
            if inside % (INSIDE_TENSORS * caps.import_alignment) == 0:
                # The same upload with several tensors a window, as a model file has: the import lane's
                # longer gaps set host.import_handover_per_copy.
                out.append(Probe("register_in_upload", inside, windows, INSIDE_TENSORS))
    out += [Probe("cold", s, config.steps(s)) for s in config.cold_sizes]
    out += [Probe("cold", config.thread_chunk, config.scratch // config.thread_chunk, n)
            for n in config.threads if n > 1]
    return out


# ---------------------------------------------------------------- plans: pure data
#
# Timing plans, not uploads: a copy benchmark copies whatever its slot holds and
# a read benchmark delivers nothing, so only the pool and import plans keep the
# upload invariants of halsim.invariants. Each step's operands are in range.


def _bench_source(length: int) -> SourceInfo:
    return SourceInfo("calibration", length, 0, True)


def copy_plan(probe: Probe) -> Plan:
    """``count`` copies of ``size`` bytes between staging and one buffer, dealt over ``width`` queues."""
    size, count, queues = probe.size, probe.count, probe.width
    total = size * count
    download = probe.bench == "d2h"
    request = UploadRequest(_bench_source(total), (BufferSpec("calibration", total),), (Transfer(0, 0, 0, total),),
                            Direction.DOWNLOAD if download else Direction.UPLOAD)
    op = Op.COPY_BACK if download else Op.COPY
    steps = tuple(Step(k, op, 0, size, file_offset=k * size, buffer=0, buffer_offset=k * size,
                       slot=k % queues, queue=k % queues) for k in range(count))
    policy = StreamingPolicy(chunk=size, slots=queues, readers=1, queues=queues)
    return Plan(policy, policy, request, steps, (StagingPool(0, queues, size),), (), Limits(readers=1, queues=queues))


LONG_PASSES = 4  # the long rings read the scratch file this many times over
READ_FOOTPRINT = 256 * MiB  # bytes of slots the reads go to, as in a ring (a real one's default budget)
# Windows of the ``register_in_upload`` probe: 16 of them in the default 1 GiB scratch file.
INSIDE_PIECE = 64 * MiB
# Its second run cuts each window into this many tensors, one copy each. On the H100 VM the import
# lane's hand-overs ran 0.09-0.13 ms with one tensor a window and 0.16-0.21 ms with four (fidelity
# runs 75-77; the fidelity file's 1.7 copies a window, 0.11-0.19 ms), where the simulator gave one
# dispatch for both: the fit sets host.import_handover_per_copy from the pair. The registrations'
# upload factor comes from the one-tensor run only (width 1).
INSIDE_TENSORS = 4
# The ``near`` probes: 4 MiB reads by one reader into 16..128 MiB of slots, taken in turn as a
# ring takes them, against the ``read`` probe's 256 MiB. On the H100 VM (benchmarks/read_footprint.py)
# reads into 16 MiB of slots ran about 30% faster than into 64 MiB or more, and a real ring of
# 4 MiB x 4 slots 29% faster than one of 4 MiB x 16; on the H200 VM a one-reader ring of
# 2 x 16 MiB still read 1.4x faster (fidelity runs 27-28), so the gain is measured by footprint
# (run 31: 1.76x into 16 MiB, 1.50x into 32, 1.17x into 64, 1.15x into 128).
NEAR_FOOTPRINT = 16 * MiB  # the smallest; a record from before the curve (width 1) had only this one
NEAR_FOOTPRINTS = (16 * MiB, 32 * MiB, 64 * MiB, 128 * MiB)
NEAR_REQUEST = 4 * MiB
# Each probe reads the whole scratch file (at most this many requests), so every slot is
# read into many times, as a ring's are: on the H200 VM 4 MiB reads into 16 MiB of slots ran
# 1.58-1.69x faster than into 256 MiB with 16 reads a slot (fidelity runs 27-28), 1.17-1.36x
# with 4 (runs 29-30).
NEAR_READS = 256


def near_probes(config: Config) -> list[Probe]:
    """One ``near`` probe a footprint, where the scratch file holds enough requests to use
    each slot at least twice and the footprint is under the ``read`` probe's of that size."""
    if NEAR_REQUEST not in config.read_sizes:
        return []
    far = read_footprint(Probe("read", NEAR_REQUEST, config.steps(NEAR_REQUEST)))
    count = min(NEAR_READS, config.scratch // NEAR_REQUEST)
    return [Probe("near", NEAR_REQUEST, count, footprint // NEAR_REQUEST) for footprint in NEAR_FOOTPRINTS
            if footprint < far and count >= 2 * (footprint // NEAR_REQUEST)]


def _read_slots(probe: Probe) -> int:
    if probe.bench == "near":  # one reader; ``width`` slots
        return probe.width if probe.width > 1 else max(1, NEAR_FOOTPRINT // max(probe.size, 1))
    wanted = min(probe.count, -(-READ_FOOTPRINT // max(probe.size, 1)))
    return probe.width * max(1, -(-wanted // probe.width))  # a multiple of readers: step k + slots comes after k


def _readers(probe: Probe) -> int:
    return 1 if probe.bench == "near" else probe.width


def read_footprint(probe: Probe) -> int:
    """Bytes of slots a read probe's requests go to."""
    return _read_slots(probe) * probe.size


def read_plan(probe: Probe, source: SourceInfo) -> Plan:
    """``count`` reads of ``size`` bytes from the start of the file, ``width`` at a time,
    into slots taken in turn. There are enough slots to hold up to ``READ_FOOTPRINT``
    bytes: reads into one slot that stays in the CPU's cache ran 20-40% faster than a
    ring's reads on the H100 VM (fidelity run 6), so the probe writes where a ring would.
    ``near`` probes write to 16..128 MiB of slots (``NEAR_FOOTPRINTS``): what smaller rings gain."""
    return ring_read_plan(source, probe.size, probe.count, _readers(probe), _read_slots(probe))


def ring_read_plan(source: SourceInfo, size: int, count: int, readers: int, slots: int) -> Plan:
    """``count`` reads of ``size`` bytes from the start of the file, ``readers`` at a time, into
    slot k % ``slots``; a slot is written again only after the read before it there is done
    (through the deps chain, when ``slots`` is a multiple of ``readers``)."""
    steps = tuple(Step(k, Op.READ, 0, size, file_offset=k * size, slot=k % slots,
                       deps=(k - readers,) if k >= readers else ()) for k in range(count))
    policy = StreamingPolicy(chunk=size, slots=slots, readers=readers, queues=1)
    return Plan(policy, policy, UploadRequest(source, (), ()), steps, (StagingPool(0, slots, size),), (),
                Limits(readers=readers))


def import_upload_plan(probe: Probe, source: SourceInfo, caps: DeviceCaps) -> Plan:
    """An upload of ``count`` windows of ``size`` bytes with the ``import`` policy: each
    window registered while the copies out of the one before stream; ``width`` tensors a
    window, each its own buffer and copy."""
    tensor = probe.size // probe.width
    tensors = probe.count * probe.width
    request = UploadRequest(source, tuple(BufferSpec(f"calibration.{k}", tensor) for k in range(tensors)),
                            tuple(Transfer(k * tensor, k, 0, tensor) for k in range(tensors)))
    return ImportPolicy(piece=probe.size).plan(request, caps)


def import_plan(probe: Probe, source: SourceInfo, in_place: bool) -> Plan:
    """Import and release ``count`` windows of ``size`` bytes, one after the other."""
    size, count = probe.size, probe.count
    windows = tuple(ImportWindow(k, 0, k * size, size, in_place) for k in range(count))
    steps: list[Step] = []
    for k in range(count):
        steps.append(Step(2 * k, Op.IMPORT, 0, size, file_offset=k * size, window=k,
                          deps=(2 * k - 1,) if k else ()))
        steps.append(Step(2 * k + 1, Op.UNIMPORT, 0, size, file_offset=k * size, window=k, deps=(2 * k,)))
    policy = ImportPolicy(piece=size)
    return Plan(policy, policy, UploadRequest(source, (), ()), tuple(steps), (), windows, Limits())


def stream_plan(probe: Probe, source: SourceInfo, caps: DeviceCaps) -> Plan:
    """An upload of ``count`` chunks of ``size`` bytes through a ring of 2 x ``width`` slots (``tight``: one
    a reader), ``width`` readers; more than the file holds reads it again from the start."""
    total = probe.size * probe.count
    passes = range(0, total, source.length)
    request = UploadRequest(source, (BufferSpec("calibration", total),),
                            tuple(Transfer(0, 0, start, min(source.length, total - start)) for start in passes))
    # One queue: the plan must not depend on how many copy queues the candidate platforms have.
    return StreamingPolicy(chunk=probe.size, slots=_stream_slots(probe), readers=probe.width,
                           queues=1).plan(request, caps)


def _stream_slots(probe: Probe) -> int:
    return probe.width if probe.bench == "tight" else 2 * probe.width


def stream_footprint(probe: Probe) -> int:
    """Bytes of slots a ``stream`` or ``tight`` probe's ring holds."""
    return _stream_slots(probe) * probe.size


def stream_threads(probe: Probe, caps: DeviceCaps) -> int:
    """Host threads a ``stream`` probe's ring keeps working at once (its readers, its copy thread, the engine)."""
    return stream_plan(probe, _bench_source(probe.size * probe.count), caps).threads_at_once()


def buffers_plan(probe: Probe) -> Plan:
    """Nothing but ``width`` device buffers of ``size`` bytes."""
    buffers = tuple(BufferSpec(f"calibration.{k}", probe.size) for k in range(probe.width))
    policy = StreamingPolicy(chunk=max(probe.size, 1), slots=1)
    return Plan(policy, policy, UploadRequest(_bench_source(0), buffers, ()), (), (), (), Limits())


def pool_plan(probe: Probe) -> Plan:
    """Nothing but a staging pool of ``width`` slots of ``size`` bytes (none for the baseline)."""
    pools = (StagingPool(0, probe.width, probe.size),) if probe.width else ()
    policy = StreamingPolicy(chunk=max(probe.size, 1), slots=max(probe.width, 1))
    return Plan(policy, policy, UploadRequest(_bench_source(0), (), ()), (), pools, (), Limits())


# ---------------------------------------------------------------- devices to measure


class Target(ABC):
    """A device to calibrate, with the host and the scratch file beside it."""

    device: Device
    simulated: bool

    @abstractmethod
    def pageable(self) -> Device | None:
        """The device with its staging in ordinary (pageable) host memory, if it has such a path."""

    @abstractmethod
    def memcpy(self, threads: int, nbytes: int) -> float:
        """Seconds for ``threads`` threads to each copy ``nbytes`` at once."""

    @abstractmethod
    def host_capacity(self) -> int: ...

    @abstractmethod
    def source(self, cold: bool):
        """A context manager: the scratch file (in or out of the page cache, as asked) and its SourceInfo."""

    def read_ahead(self) -> int | None:
        """The kernel's readahead window on the scratch file's drive, bytes (None: unknown)."""
        return None

    def open(self, scratch: int) -> None:
        """Make the scratch file (``scratch`` bytes)."""

    def close(self) -> None:
        """Remove the scratch file."""


class SimTarget(Target):
    """A simulated GPU: its host and its file are simulated too."""

    simulated = True

    def __init__(self, device, scratch: int = GiB):
        self.device = device
        self.platform = device.simulator.platform
        self.scratch = scratch

    @classmethod
    def of(cls, platform: "Platform", scratch: int = GiB) -> "SimTarget":
        from halsim.sim import Simulator

        return cls(Simulator(platform).device(0), scratch)

    def open(self, scratch: int) -> None:
        self.scratch = scratch

    def read_ahead(self) -> int:
        return self.platform.storage.read_ahead

    def pageable(self) -> Device:
        from halsim.sim import Simulator

        return Simulator(self.platform, pinned_staging=False).device(self.device.gpu)

    def memcpy(self, threads: int, nbytes: int) -> float:
        # The simulator's own model of a memcpy: one flow per thread, at most one
        # thread's rate each, reading and writing host memory (weight 2).
        from halsim.sim.machine import Machine

        machine = Machine(self.platform)
        net = machine.net
        kind = machine.memcpy_class()
        for _ in range(threads):
            net.start(kind, nbytes)
        net.run()
        return machine.env.now

    def host_capacity(self) -> int:
        return self.platform.host.capacity

    @contextmanager
    def source(self, cold: bool) -> Iterator[tuple[None, SourceInfo]]:
        # A mapped file's base is page-aligned: the simulated device may import it.
        yield None, SourceInfo("scratch", self.scratch, 4096, not cold)


def scratch_file(directory: "str | os.PathLike", nbytes: int, prefix: str) -> Path:
    """A new file of ``nbytes`` in ``directory``, written through to the drive (and so in the page cache)."""
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".bin", dir=directory)
    path = Path(name)
    try:
        # Fresh random bytes throughout: nothing below us can compress or deduplicate them.
        bits = np.random.default_rng(0).bit_generator
        with os.fdopen(fd, "wb", buffering=0) as f:
            for offset in range(0, nbytes, 16 * MiB):
                block = bits.random_raw(2 * MiB).view(np.uint8)  # 16 MiB of raw 64-bit draws
                f.write(memoryview(block)[: min(len(block), nbytes - offset)])
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


class DeviceTarget(Target):
    """A real device; the scratch file lives in ``directory`` (put it on the drive your weights are on)."""

    simulated = False

    def __init__(self, device: Device, directory: "str | os.PathLike | None" = None):
        self.device = device
        self.directory = Path(directory) if directory is not None else Path(tempfile.gettempdir())
        self.path: Path | None = None
        self._cached = False  # the scratch file is known to be in the page cache

    def open(self, scratch: int) -> None:
        self.path = scratch_file(self.directory, scratch, "halsim-calibrate-")
        self._cached = True

    def read_ahead(self) -> int | None:
        from halsim.pagecache import read_ahead_bytes

        return read_ahead_bytes(self.directory)

    def close(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None

    def pageable(self) -> Device | None:
        # CPU and CUDA copies take any host address; Vulkan copies only from its own mapped memory.
        backend = type(self.device).__module__.rsplit(".", 1)[-1]
        return PageableStaging(self.device) if backend in ("cpu", "cuda") else None

    def memcpy(self, threads: int, nbytes: int) -> float:
        pairs = [(np.ones(nbytes, np.uint8), np.ones(nbytes, np.uint8)) for _ in range(threads)]  # touched
        start = threading.Barrier(threads + 1)

        def copy(src, dst):
            start.wait()
            np.copyto(dst, src)  # releases the GIL

        workers = [threading.Thread(target=copy, args=pair) for pair in pairs]
        for w in workers:
            w.start()
        start.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        return time.perf_counter() - t0

    def host_capacity(self) -> int:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")

    @contextmanager
    def source(self, cold: bool) -> Iterator[tuple[HalFile, SourceInfo]]:
        from halsim import pagecache

        if self.path is None:
            raise RuntimeError("open() the target before measuring files")
        if cold:
            pagecache.drop(self.path)
            self._cached = False
        elif not self._cached:
            pagecache.warm(self.path, fresh=True)  # after cold probes: as one sequential read brings it
            self._cached = True
        # A fresh mapping each run: an upload maps its file afresh, page faults and all.
        file = MappedFile(self.path)
        try:
            yield file, SourceInfo.of(file, page_cached=not cold)
        finally:
            file.close()


class PageableStaging(Device):
    """A host-driven device whose staging slots are ordinary numpy memory instead of pinned memory."""

    def __init__(self, inner: Device):
        self.inner = inner
        self.name = inner.name
        self.caps = inner.caps

    def now(self) -> float:
        return self.inner.now()

    def wait(self, pending, timeout=None):
        return self.inner.wait(pending, timeout)

    def open(self, plan, file, trace, index=0, faults=None):
        execution = self.inner.open(plan, file, trace, index, faults)
        held: list[np.ndarray] = []

        def alloc_staging(slots: int, slot_bytes: int) -> list[memoryview]:
            held[:] = [np.ones(slot_bytes, np.uint8) for _ in range(slots)]  # touched: no first-use faults
            return [memoryview(a) for a in held]

        execution.alloc_staging = alloc_staging
        execution.free_staging = held.clear
        return execution


def target_for(device: "str | Device", directory: "str | os.PathLike | None" = None) -> Target:
    """The target that measures ``device`` (a name such as ``cpu`` or ``sim:h100-pcie5``, or a Device)."""
    from halsim.registry import get_device
    from halsim.sim import SimDevice

    if isinstance(device, str):
        device = get_device(device)
    return SimTarget(device) if isinstance(device, SimDevice) else DeviceTarget(device, directory)


# ---------------------------------------------------------------- running one probe


def _spans(trace: Trace, lane: str, op: str) -> list:
    return [s for s in trace.spans if s.lane.startswith(lane) and s.op == op]


def _wall(spans) -> float:
    return max(s.end for s in spans) - min(s.start for s in spans)


def _median_gap(spans) -> float:
    """The median time from one span's end to the next one's start, in order of start (0: fewer than two)."""
    ordered = sorted(spans, key=lambda s: s.start)
    gaps = [max(b.start - a.end, 0.0) for a, b in zip(ordered, ordered[1:])]
    return statistics.median(gaps) if gaps else 0.0


def _overlap(spans) -> float:
    """The concurrency actually reached: over the spans, the median of how many ran at each one's midpoint."""
    counts = [sum(1 for o in spans if o.start < (s.start + s.end) / 2 < o.end) for s in spans]
    return float(statistics.median(counts))


def _engine_run(plan: Plan, file, device: Device, mode: str) -> Trace:
    # The staging is pinned before the first step: these benchmarks time reads and
    # copies; what pinning costs (in the background or not) the ``pin`` benchmark fits.
    result = Engine(mode).run(plan, file, [device], staging_first=True)
    result.free()
    return result.trace


def run_probe(target: Target, probe: Probe) -> dict[str, float]:
    """Run ``probe`` once on ``target``; its readings in seconds (``overlap``: a count)."""
    bench = probe.bench
    if bench == "memcpy":
        return {"memcpy": target.memcpy(probe.width, probe.size)}
    if bench in ("h2d", "d2h", "pageable"):
        device = target.pageable() if bench == "pageable" else target.device
        trace = _engine_run(copy_plan(probe), None, device, "serial")
        op = "copy_back" if bench == "d2h" else "copy"
        spans = _spans(trace, "copy/", op)
        # One step at a time: between one copy's end and the next one's start the engine
        # handled the completion and handed the next step over — its dispatch cost.
        return {bench: statistics.median(s.seconds for s in spans), "gap": _median_gap(spans)}
    if bench == "copies":
        spans = _spans(_engine_run(copy_plan(probe), None, target.device, "overlapped"), "copy/", "copy")
        return {"copies": _wall(spans), "overlap": _overlap(spans)}
    if bench == "alloc":
        # The device buffers an upload allocates before anything else: what a call costs, and a byte.
        device = target.device
        execution = device.open(buffers_plan(probe), None, Trace(), 0)
        start = device.now()
        try:
            execution.allocate()
            return {"alloc": device.now() - start}
        finally:
            execution.release(keep_buffers=False)
    if bench == "pin":
        # Allocating and freeing, each timed: a real upload pays both, the first before
        # its slots can take reads, the second after its last step.
        device = target.device
        execution = device.open(pool_plan(probe), None, Trace(), 0)
        start = device.now()
        execution.allocate()
        try:
            execution.staging_ready()
        finally:
            pinned = device.now()
            execution.release(keep_buffers=False)
        return {"pin": pinned - start, "unpin": device.now() - pinned}
    if bench in ("import", "fault"):
        with target.source(cold=bench == "fault") as (file, source):
            in_place = target.device.caps.import_in_place
            trace = _engine_run(import_plan(probe, source, in_place), file, target.device, "serial")
        if bench == "fault":  # the mean, as for cold reads: what a run pays per window
            return {"fault": statistics.fmean(s.seconds for s in _spans(trace, "import/", "import"))}
        return {op: statistics.median(s.seconds for s in _spans(trace, "import/", op)) for op in ("import", "unimport")}
    if bench == "register_in_upload":
        with target.source(cold=False) as (file, source):
            trace = _engine_run(import_upload_plan(probe, source, target.device.caps), file, target.device,
                                "overlapped")
        lane = [s for s in trace.spans if s.lane.startswith("import/")]
        return {bench: statistics.median(s.seconds for s in lane if s.op == "import"), "handover": _median_gap(lane),
                "upload": _wall([s for s in trace.spans if s.lane.startswith(("import/", "copy/"))])}
    if bench in ("stream", "tight"):
        with target.source(cold=False) as (file, source):
            trace = _engine_run(stream_plan(probe, source, target.device.caps), file, target.device, "overlapped")
        return {bench: _wall([s for s in trace.spans if s.lane.startswith(("read/", "copy/"))])}
    if bench in ("read", "near", "cold"):
        with target.source(cold=bench == "cold") as (file, source):
            mode = "serial" if _readers(probe) == 1 else "overlapped"
            spans = _spans(_engine_run(read_plan(probe, source), file, target.device, mode), "read/", "read")
        if _readers(probe) > 1:
            return {bench: _wall(spans)}  # several readers: how long reading it all took
        # One reader: the time of one request. Cold requests are uneven (readahead serves some
        # while others wait for the drive), so the mean — what a run pays per request — not the median.
        times = [s.seconds for s in spans]
        return {bench: statistics.fmean(times) if bench == "cold" else statistics.median(times)}
    raise ValueError(f"unknown benchmark {bench!r}")


# ---------------------------------------------------------------- measuring


@dataclass
class Measurement:
    """Every sample of one probe: ``samples[reading]`` holds one value per repeat."""

    probe: Probe
    samples: dict[str, list[float]]

    def value(self, reading: str | None = None) -> float:
        return statistics.median(self.samples[reading or self.probe.readings[0]])

    def spread(self, reading: str | None = None) -> float:
        """Half the range of the repeats, relative to their median (0 for one sample)."""
        return relative_spread(self.samples[reading or self.probe.readings[0]])


@dataclass
class Measurements:
    """What :func:`measure` saw on one device; :func:`halsim.fit.fit_platform` turns it into a Platform."""

    device: str
    caps: DeviceCaps
    host_capacity: int
    simulated: bool
    config: Config
    points: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    host: str = ""  # machine and CPU, for the record
    when: str = ""
    # How the backend pins and imports (HOST_BEHAVIOUR, GPU_BEHAVIOUR): what
    # the device says of itself, not fitted.
    behaviour: dict[str, bool] = field(default_factory=dict)
    read_ahead: int | None = None  # the drive's readahead window (read_ahead_kb), bytes; None: not known

    def of(self, bench: str) -> list[Measurement]:
        return [m for m in self.points if m.probe.bench == bench]

    @classmethod
    def pooled(cls, parts: "Sequence[Measurements]") -> "Measurements":
        """Rounds of the same probes measured apart (interleaved with other work), as one:
        each probe's samples from every round, in round order."""
        if not parts:
            raise ValueError("nothing to pool")
        first = parts[0]
        samples: dict[Probe, dict[str, list[float]]] = {}
        for part in parts:
            if part.device != first.device:
                raise ValueError(f"cannot pool measurements of {first.device} and {part.device}")
            for m in part.points:
                into = samples.setdefault(m.probe, {})
                for reading, values in m.samples.items():
                    into.setdefault(reading, []).extend(values)
        config = dataclasses.replace(first.config, repeats=sum(p.config.repeats for p in parts))
        return cls(first.device, first.caps, first.host_capacity, first.simulated, config,
                   [Measurement(probe, got) for probe, got in samples.items()],
                   list(dict.fromkeys(n for p in parts for n in p.notes)), first.host, first.when,
                   dict(first.behaviour), first.read_ahead)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "caps": self.caps.model_dump(), "host_capacity": self.host_capacity,
                "simulated": self.simulated, "config": dataclasses.asdict(self.config), "host": self.host,
                "when": self.when, "notes": list(self.notes), "behaviour": dict(self.behaviour),
                "read_ahead": self.read_ahead,
                "points": [{"probe": dataclasses.asdict(m.probe), "samples": m.samples} for m in self.points]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Measurements":
        """What :meth:`to_dict` wrote (a calibration's JSON), to fit again."""
        config = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["config"].items()})
        return cls(data["device"], DeviceCaps.model_validate(data["caps"]), data["host_capacity"], data["simulated"],
                   config, [Measurement(Probe(**p["probe"]), p["samples"]) for p in data["points"]],
                   list(data.get("notes", [])), data.get("host", ""), data.get("when", ""),
                   dict(data.get("behaviour", {})), data.get("read_ahead"))


# What a device says of how it works (not fitted): platform field -> the device's attribute.
HOST_BEHAVIOUR = {"pin_in_background": "pins_staging_in_background",
                  "register_stalls_copies": "registration_stalls_copies"}
GPU_BEHAVIOUR = {"direct_buffered": "direct_reads_buffered", "lazy_import": "imports_lazily"}


def device_behaviour(device: Any) -> dict[str, bool]:
    """How ``device`` pins and imports: each HostMemory and Gpu behaviour field, from the device."""
    return {field: bool(getattr(device, attribute, False))
            for field, attribute in {**HOST_BEHAVIOUR, **GPU_BEHAVIOUR}.items()}


def host_description() -> str:
    cpu = _platform.processor() or _platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{_platform.node()}: {cpu}, {os.cpu_count()} cores"


def measure(target: Target, config: Config | None = None, progress: ProgressFn | None = None) -> Measurements:
    """Run every probe on ``target`` (``Config.quick()`` unless told); repeats only on real devices."""
    from halsim.pagecache import ColdUnavailable

    config = config or Config.quick()
    caps = target.device.caps
    todo = list(dict.fromkeys(probes(config, caps, pageable=target.pageable() is not None)))
    repeats = 1 if target.simulated else config.repeats
    result = Measurements(target.device.name, caps, target.host_capacity(), target.simulated, config,
                          host="simulated" if target.simulated else host_description(),
                          when=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                          behaviour=device_behaviour(target.device), read_ahead=target.read_ahead())
    total = len(todo) * repeats
    samples: dict[Probe, dict[str, list[float]]] = {probe: {} for probe in todo}
    skip: set[str] = set()
    done = 0
    target.open(config.scratch)
    try:
        # Round after round over every probe, not one probe repeated: a burst of load from
        # elsewhere then spoils one sample of many probes, and the medians drop it.
        for round_ in range(repeats):
            warmed: set[str] = set()
            for probe in todo:
                done += 1
                if probe.bench in skip:
                    continue
                if progress:
                    progress(done - 1, total, probe.label)
                try:
                    if round_ == 0 and not target.simulated and probe.bench not in warmed:
                        run_probe(target, probe)  # first runs pay for threads, code paths, lazy driver setup
                        warmed.add(probe.bench)
                    for name, value in run_probe(target, probe).items():
                        samples[probe].setdefault(name, []).append(value)
                except ColdUnavailable as err:
                    result.notes.append(f"cold reads not measured: {err}")
                    skip.add(probe.bench)
    finally:
        target.close()
    result.points = [Measurement(probe, got) for probe, got in samples.items() if got and probe.bench not in skip]
    if progress:
        progress(total, total, "done")
    return result


def predict(platform: "Platform", probe: Probe, scratch: int) -> dict[str, float]:
    """What the simulator, on ``platform``, reads off ``probe``."""
    return run_probe(SimTarget.of(platform, scratch), probe)


# ---------------------------------------------------------------- measure and fit


@dataclass(frozen=True)
class Check:
    """One microbenchmark: measured (median of the repeats) and what the fitted platform predicts."""

    probe: Probe
    measured: float
    spread: float
    predicted: float

    @property
    def error(self) -> float:
        return (self.predicted - self.measured) / self.measured if self.measured else 0.0


def headline(probe: Probe, readings: "dict[str, float] | Measurement") -> float:
    """The one number a probe is judged by: an import is judged with its release (they share a lane), and
    a staging pool with its freeing (a run stored before the freeing was timed apart holds the pair in ``pin``)."""
    value = readings.value if isinstance(readings, Measurement) else readings.__getitem__
    if probe.bench == "import":
        return value("import") + value("unimport")
    if probe.bench == "pin":
        has = readings.samples if isinstance(readings, Measurement) else readings
        return value("pin") + (value("unpin") if "unpin" in has else 0.0)
    return value(probe.readings[0])


@dataclass
class Calibration:
    """A fitted platform, each parameter with its error, and how well it reproduces every microbenchmark."""

    platform: "Platform"
    fitted: list["Fitted"]
    checks: list[Check]  # every microbenchmark against the fitted platform's prediction of it
    measurements: Measurements
    notes: list[str] = field(default_factory=list)

    def parameter(self, path: str) -> "Fitted":
        return next(f for f in self.fitted if f.path == path)

    def to_toml(self) -> str:
        """The platform as TOML, each fitted value annotated with its error."""
        from halsim.fit import annotate_toml

        m = self.measurements
        header = [f"# Calibrated by `halsim calibrate` on {m.device} ({m.host}), {m.when}.",
                  "# Each value: +- its standard error where a fit gives one; 'residual' is the rms error",
                  "# of the simulator, with these values, on the microbenchmarks that set it."]
        header += [f"# note: {n}" for n in self.notes]
        return "\n".join(header) + "\n" + annotate_toml(self.platform.to_toml(), self.fitted)

    def save(self, path: "str | os.PathLike") -> Path:
        path = Path(path)
        path.write_text(self.to_toml())
        return path

    def table(self, sources: bool = True):
        """A rich Table: parameter, value, error, residual (and, with ``sources``, what set it)."""
        from halsim.fit import fitted_table

        return fitted_table(self.fitted, title=f"calibrated {self.platform.name}", sources=sources)

    def to_dict(self) -> dict[str, Any]:
        return {"platform": self.platform.model_dump(), "toml": self.to_toml(),
                "fitted": [dataclasses.asdict(f) for f in self.fitted],
                "checks": [{"probe": c.probe.label, "measured": c.measured, "spread": c.spread,
                            "predicted": c.predicted} for c in self.checks],
                "measurements": self.measurements.to_dict(), "notes": list(self.notes)}


def calibrate(device: "str | Device", config: Config | None = None, *, progress: ProgressFn | None = None,
              scratch_dir: "str | os.PathLike | None" = None, name: str | None = None) -> Calibration:
    """Measure ``device`` and fit a Platform to it."""
    from halsim.fit import fit_platform

    target = target_for(device, scratch_dir)
    measured = measure(target, config, progress)
    return fit_platform(measured, name=name)


__all__ = ["Config", "Probe", "probes", "Target", "SimTarget", "DeviceTarget", "PageableStaging", "target_for",
           "run_probe", "Measurement", "Measurements", "measure", "predict", "Check", "headline", "Calibration",
           "calibrate", "scratch_file",
           "copy_plan", "read_plan", "import_plan", "stream_plan", "stream_threads", "pool_plan"]
