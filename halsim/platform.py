"""Hardware descriptions for the simulator: the pydantic ``Platform`` schema.

A platform is data, like a policy: storage, host memory, link kinds, PCIe
switches and GPUs. Humans write sizes, rates and durations as strings
("64MiB", "54.5GB/s", "20us"); inside they are ints (bytes) and floats
(bytes per second, seconds). Named platforms live in ``models/platforms/``
(installed as ``halsim.models``); :func:`load_platform` reads one by name or
from any ``.toml`` path, and :meth:`Platform.to_toml` writes one back.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import tomllib
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from halsim.caps import DeviceCaps
from halsim.errors import PlatformError
from halsim.units import parse_duration, parse_rate, parse_size


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _rates(*names: str):
    return field_validator(*names, mode="before")(lambda cls, v: None if v is None else parse_rate(v))


def _sizes(*names: str):
    return field_validator(*names, mode="before")(lambda cls, v: parse_size(v))


def _durations(*names: str):
    return field_validator(*names, mode="before")(lambda cls, v: parse_duration(v))


def interpolate(curve: tuple[tuple[int, float], ...], x: float, scale: Callable[[float], float] = float) -> float:
    """The value of a measured (key, value) curve at ``x``, linear in ``scale(key)``
    between its points, held flat past either end."""
    if x <= curve[0][0]:
        return curve[0][1]
    for (k0, v0), (k1, v1) in zip(curve, curve[1:]):
        if x <= k1:
            t = (scale(x) - scale(k0)) / (scale(k1) - scale(k0))
            return v0 + t * (v1 - v0)
    return curve[-1][1]


def log_interpolate(curve: tuple[tuple[int, float], ...], x: float) -> float:
    """The value of a measured (size, value) curve at ``x``, linear in log size between its points."""
    return interpolate(curve, x, math.log)


def _increasing_keys(name: str, keys: list[int], what: str) -> None:
    """A measured curve's keys: each at least 1, each once, in increasing order (``what`` names them)."""
    if any(k < 1 for k in keys) or keys != sorted(set(keys)):
        raise ValueError(f"{name} needs {what}, each once, in increasing order")


def near_read_speedup(near_bytes: int, speedup: float, one_slot_share: float, slots: int,
                      staging_bytes: int, curve: tuple[tuple[int, float], ...] = (), readers: int = 1,
                      ring_curve: tuple[tuple[int, float], ...] = ()) -> float:
    """A ring's page-cache read speedup (Storage.page_cache_near_*), from the values alone:
    the simulator's rings and calibration's probes both go through here. With a measured
    ``curve`` of (staging bytes, speedup) it is read off the curve; else it is ``speedup``
    up to ``near_bytes`` and none beyond. A ring of several ``readers`` with a measured
    ``ring_curve`` reads it from that curve's first footprint up, and one reader's below it."""
    if staging_bytes <= 0:
        return 1.0
    if readers > 1 and ring_curve:
        one_reader = curve or (((near_bytes, speedup),) if near_bytes else ())
        curve = tuple(pt for pt in one_reader if pt[0] < ring_curve[0][0]) + ring_curve
    if curve:
        base = log_interpolate(curve, staging_bytes)
    elif staging_bytes <= near_bytes:
        base = speedup
    else:
        return 1.0
    share = one_slot_share if slots == 1 else 1.0
    return 1.0 + share * (base - 1.0)


class Storage(_Part):
    """The drive the weights file lives on, and the kernel's page cache in front of it."""

    name: str = "nvme"
    bandwidth: float = Field(description="sequential read bandwidth of the drive, bytes/s")
    write_bandwidth: float | None = Field(None, description="sequential write bandwidth; defaults to bandwidth")
    latency: float = Field(0.0, ge=0, description="per request, seconds, before the first byte")
    queue_depth: int = Field(32, ge=1, description="requests the drive serves at once; more wait")
    page_cache_bandwidth: float = Field(description="read from the page cache by one thread, bytes/s")
    page_cache_hit_rate: float = Field(1.0, ge=0, le=1, description="fraction of a warm file found in the cache")
    o_direct: bool = Field(False, description="reads bypass the page cache (DMA from the drive into the buffer)")
    page_cache_curve: tuple[tuple[int, float], ...] = Field(
        (), description="measured (request bytes, bytes/s) of one thread reading the page cache; a read of n "
        "bytes runs at the rate interpolated in log n, held flat past the ends (empty: page_cache_bandwidth "
        "at every size). On the lent H100 VM 64 MiB requests ran 26% slower than 16 MiB ones")

    fault_in_bandwidth: float | None = Field(
        None, description="a cold file's pages faulted in through a mapping (registering a cold import window), "
        "bytes/s; None: bandwidth. On the lent H100 VM a mapping faulted a cold file in at 1.66 GB/s where pread "
        "read it at 1.42-1.52")
    read_ahead: int = Field(
        128 * 1024, ge=0, description="the kernel's readahead window on the drive (its read_ahead_kb; Linux's "
        "default is 128 KiB): after a buffered read of a cold file the drive goes on reading up to this many bytes "
        "past it while the reader is away, and the read that starts there finds them in the page cache (0: the "
        "drive reads only what is asked). The lent H200 VM's drive has 8 MiB: one reader's 4 ms pauses after "
        "each 64 MiB request cost it nothing")
    page_cache_near_bytes: int = Field(
        0, ge=0, description="a ring whose staging (slots x chunk) is at most this many bytes reads the page cache "
        "page_cache_near_speedup times faster: its slots stay in the CPU's cache (0: no ring does). On the lent "
        "H100 VM reads into 16 MiB of slots ran about 30% faster than into 64 MiB or more")
    page_cache_near_speedup: float = Field(1.0, ge=1.0, description="see page_cache_near_bytes")
    page_cache_near_one_slot: float = Field(
        0.5, ge=0.0, le=1.0, description="the share of page_cache_near_speedup a ring of one slot gets: it "
        "waits for each copy, and the DMA reading the slot between two reads takes part of the cache's benefit. "
        "On the lent H100 VM a 16 MiB x 1 ring read 16% faster than 16 MiB x 4, where a 4 MiB x 4 ring read 29% "
        "faster than 4 MiB x 16; the whole speedup predicted the one-slot ring 11-29% fast in five of fidelity runs 17-24")
    page_cache_near_curve: tuple[tuple[int, float], ...] = Field(
        (), description="measured (staging bytes, speedup): a ring whose slots total n bytes reads the page cache "
        "this many times faster, linear in log n between the points, flat past the ends (calibration ends it "
        "with its large-ring reads at 1.0); overrides page_cache_near_bytes/speedup. On the lent H200 VM one "
        "reader's 4 MiB requests, every slot reused, ran 1.76x faster into 16 MiB of slots than into 256 MiB, "
        "1.50x into 32 MiB and 1.15x into 128 MiB (fidelity run 31)")
    page_cache_ring_curve: tuple[tuple[int, float], ...] = Field(
        (), description="measured (staging bytes, speedup) for rings of several readers: from its first point up "
        "it replaces page_cache_near_curve (one reader's) for them, linear in log bytes, flat past its last point "
        "(calibration ends it at its read probes' 256 MiB with 1.0). On the lent H200 VM (300 MiB of L3) eight "
        "readers read 1.1-1.6x faster into 128 MiB of slots than into 256 MiB, where one reader read no faster")

    _r = _rates("bandwidth", "write_bandwidth", "page_cache_bandwidth", "fault_in_bandwidth")
    _d = _durations("latency")
    _s = _sizes("page_cache_near_bytes", "read_ahead")

    @field_validator("page_cache_curve", "page_cache_near_curve", "page_cache_ring_curve", mode="before")
    @classmethod
    def _curves(cls, v, info):
        # page_cache_curve: (request bytes, rate above 0); the near and ring curves: (staging bytes, speedup >= 1)
        rates = info.field_name == "page_cache_curve"
        points = tuple((parse_size(size), parse_rate(value) if rates else float(value)) for size, value in (v or ()))
        _increasing_keys(info.field_name, [size for size, _ in points], "sizes above 0")
        if any(value <= 0 if rates else value < 1.0 for _, value in points):
            raise ValueError(f"{info.field_name} {'rates must be above 0' if rates else 'speedups must be at least 1'}")
        return points

    @property
    def write_rate(self) -> float:
        return self.write_bandwidth or self.bandwidth

    def near_speedup(self, slots: int, staging_bytes: int, readers: int = 1) -> float:
        """How much faster a ring of ``slots`` slots, ``staging_bytes`` in all, read by ``readers``
        threads, reads the page cache."""
        return near_read_speedup(self.page_cache_near_bytes, self.page_cache_near_speedup,
                                 self.page_cache_near_one_slot, slots, staging_bytes, self.page_cache_near_curve,
                                 readers, self.page_cache_ring_curve)

    def page_cache_rate(self, nbytes: int) -> float:
        """One thread's rate reading ``nbytes`` from the page cache in one request."""
        curve = self.page_cache_curve
        return log_interpolate(curve, nbytes) if curve else self.page_cache_bandwidth


class HostMemory(_Part):
    """Host DRAM: copy bandwidth per thread, a total traffic cap, capacity, pinning costs;
    and the host thread that dispatches the plan's steps.

    ``total_bandwidth`` counts memory traffic (reads plus writes): a memcpy of
    n bytes moves 2n, a DMA read or write of host memory n. Every thread and
    every DMA engine touching host memory shares it.
    """

    memcpy_per_thread: float = Field(description="memcpy by one thread, bytes/s")
    total_bandwidth: float = Field(description="read+write traffic of the whole memory system, bytes/s")
    capacity: int = Field(description="bytes of host memory")
    pin_bandwidth: float = Field(description="bytes per second of pinned (page-locked) allocation; where "
                                 "unpin_* are not given, of allocating and freeing together, charged at allocation")
    pin_per_call: float = Field(0.0, ge=0, description="seconds per pinned allocation call (per staging slot)")
    unpin_per_call: float = Field(
        0.0, ge=0, description="seconds per staging slot freed (cuMemHostUnregister and unmapping), charged when the "
        "upload releases its staging, after its last step (a real ring frees its slots then: charged at allocation, "
        "the freeing would hold the first reads back)")
    unpin_bandwidth: float | None = Field(
        None, description="bytes per second of freeing pinned staging; empty: freeing costs only unpin_per_call")
    register_bandwidth: float = Field(description="bytes per second of registering existing memory for DMA")
    register_per_call: float = Field(0.0, ge=0, description="seconds per register (and per unregister) call")
    unregister_bandwidth: float | None = Field(
        None, description="bytes per second of unregistering (unpinning) memory; empty: a release costs only "
        "its call (a hand-written platform may then fold its cost into register_bandwidth; calibration fits both)")
    register_upload_factor: float = Field(
        1.0, ge=1.0, description="registering and releasing an import window inside an upload (copies streaming, "
        "the engine's threads at work) take this many times what they take alone; on the lent H100 VM 1.05-1.25 "
        "(benchmarks/registration_context.py). Calibration fits it from registrations timed one by one inside "
        "an import upload of its scratch file, against the import probe's lone ones (the fifth session's fit "
        "from the whole upload's time gave 1.41 and 1.06 on two runs, too noisy to use)")
    import_handover_per_copy: float = Field(
        0.0, ge=0, description="seconds the import lane waits before it registers or releases a window, for each "
        "copy beyond the first out of the window it registered last, while copies remain (most likely the engine's "
        "thread handing those copies over and handling their completions while the lane's worker waits for the "
        "interpreter; in-place windows never wait). On the lent H100 VM the "
        "lane's median gap grew from 0.09-0.13 ms with one tensor a 64 MiB window to 0.16-0.21 ms with four, "
        "19-32 us a further copy (fidelity runs 75-77), where the simulator's stayed at one dispatch. Calibration "
        "fits it from the import upload run with several tensors a window against the one-tensor run (0: none)")
    thread_contention: float = Field(
        0.0, ge=0, description="how much each further CPU thread copying host memory at once (page-cache "
        "reads, memcpy, the driver's pageable bounce) slows every such thread: k of them copy at "
        "rate / (1 + thread_contention * (k - 1)) each, before total_bandwidth binds (0: not at all)")
    dma_weight: float = Field(
        1.0, ge=0.0, le=4.0, description="host-memory traffic per byte a dedicated GPU's DMA engine reads or "
        "writes (1: every byte crosses DRAM once). Less where the DMA's reads compete with the CPU's copies for "
        "less than their bytes: on the lent H200 VM eight readers with copies streaming moved 73 GB/s of traffic "
        "by that count, where eight readers alone moved 58 and eight memcpy threads 45 (fidelity run 33)")
    staging_write_curve: tuple[tuple[int, float], ...] = Field(
        (), description="measured (staging bytes, share): of what a page-cache read writes into a ring's slots, the "
        "share that reaches host memory when the ring's slots fill this many bytes; the rest stays in the CPU's "
        "last-level cache. Linear in log bytes between the points, flat past the ends (empty: all of it). Apart "
        "from page_cache_near_*, which is one thread's rate: this is the traffic many readers share. On the lent "
        "H200 VM (300 MiB of L3) eight readers of 16 MiB, every slot pinned, streamed 1.06-1.13x faster through 8 "
        "slots than through 16; calibration fitted 0.60 at 128 MiB (fidelity run 55)")
    step_overhead: float = Field(
        0.0, ge=0, description="seconds of the engine's dispatcher per plan step: the one host thread that "
        "submits every step and handles its completion; serial, shared by every GPU (0: free)")
    step_overhead_curve: tuple[tuple[int, float], ...] = Field(
        (), description="measured (threads, seconds): the dispatcher's cost per step when a plan runs this many "
        "host threads at once (readers, copy threads, import lanes and the engine's own), linear in the thread "
        "count between the points, flat past the ends; overrides step_overhead. Each further thread contends for "
        "the interpreter's lock: on the lent H200 VM a ring of 1 MiB chunks cost 66-141 us a step with 8 readers, "
        "4-25% more than with 4 (fidelity runs 27-31)")
    pin_in_background: bool = Field(
        False, description="staging slots are pinned one at a time on a background thread while the first "
        "ones already stream (the CUDA backend's default); false: the whole pool is pinned before the first step")
    cpus: int | None = Field(None, ge=1, description="the host's CPU threads, which reader threads share "
                             "(auto sizes its readers by them); empty: unknown")
    register_stalls_copies: bool = Field(
        False, description="pinning, registering and unregistering host memory hold the driver's lock: a copy "
        "queued meanwhile waits for it to end (one queued before runs on), and an unregistration first waits "
        "for the GPU's copies in flight (CUDA on the lent H100)")

    _r = _rates("memcpy_per_thread", "total_bandwidth", "pin_bandwidth", "unpin_bandwidth", "register_bandwidth",
                "unregister_bandwidth")
    _s = _sizes("capacity")
    _d = _durations("pin_per_call", "unpin_per_call", "register_per_call", "step_overhead",
                   "import_handover_per_copy")

    @field_validator("step_overhead_curve", mode="before")
    @classmethod
    def _step_curve(cls, v):
        points = tuple((int(threads), parse_duration(cost)) for threads, cost in (v or ()))  # never negative
        _increasing_keys("step_overhead_curve", [n for n, _ in points], "thread counts of at least 1")
        return points

    @field_validator("staging_write_curve", mode="before")
    @classmethod
    def _write_curve(cls, v):
        points = tuple((parse_size(size), float(share)) for size, share in (v or ()))
        _increasing_keys("staging_write_curve", [size for size, _ in points], "sizes above 0")
        if any(not 0.0 <= share <= 1.0 for _, share in points):
            raise ValueError("staging_write_curve shares must be between 0 and 1")
        return points

    def staging_write_share(self, staging_bytes: int) -> float:
        """The share of a page-cache read's writes into ``staging_bytes`` of ring slots that reach host memory."""
        curve = self.staging_write_curve
        return log_interpolate(curve, staging_bytes) if curve and staging_bytes > 0 else 1.0

    def step_cost(self, threads: int) -> float:
        """Seconds of the dispatcher per step while a plan runs ``threads`` host threads at once."""
        curve = self.step_overhead_curve
        return interpolate(curve, threads) if curve else self.step_overhead

    @property
    def dispatches(self) -> bool:
        """Whether steps cost the dispatcher anything at all."""
        return self.step_overhead > 0 or any(cost > 0 for _, cost in self.step_overhead_curve)


class Link(_Part):
    """A kind of host<->GPU link. Each GPU naming it gets its own (links are point to point)."""

    name: str
    generation: int | None = Field(None, description="PCIe generation (informational)")
    lanes: int | None = Field(None, description="PCIe lanes (informational)")
    h2d: float = Field(description="host to device, pinned source, bytes/s")
    d2h: float = Field(description="device to host, pinned destination, bytes/s")
    overhead: float = Field(0.0, ge=0, description="fixed cost of one transfer, seconds")
    pageable: float | None = Field(
        None, description="bytes/s from pageable host memory (driver bounce copy); default: one memcpy thread")

    _r = _rates("h2d", "d2h", "pageable")
    _d = _durations("overhead")


class Switch(_Part):
    """A PCIe switch: its uplink to the host is shared by every GPU behind it."""

    name: str
    h2d: float = Field(description="uplink host to switch, bytes/s")
    d2h: float = Field(description="uplink switch to host, bytes/s")

    _r = _rates("h2d", "d2h")


class Gpu(_Part):
    name: str
    kind: Literal["dedicated", "integrated"] = "dedicated"
    memory: int = Field(description="bytes of device memory (integrated: the share of host memory it may use)")
    copy_engines: int = Field(1, ge=1, description="DMA engines; copies on one run in order")
    import_alignment: int = Field(4096, ge=1, description="host import needs this address alignment")
    can_import: bool = Field(True, description="can map host memory for DMA (or use it in place)")
    direct_storage: bool = Field(False, description="storage can DMA straight into device memory")
    direct_buffered: bool = Field(
        False, description="direct reads go through the page cache (a buffered read, as the CPU device does): a "
        "warm file then comes from the cache; false: storage DMA that bypasses it (GPUDirect Storage)")
    lazy_import: bool = Field(
        False, description="an in-place import only maps the file: its pages are read when first used, after the "
        "upload (the CPU device, lavapipe); false: importing pins the pages, reading a cold file in first")
    link: str = Field(description="name of an entry of links")
    switch: str | None = Field(None, description="name of an entry of switches, if behind one")
    alloc_per_call: float = Field(
        0.0, ge=0, description="seconds per device buffer an upload allocates (cuMemAlloc), before its first step: "
        "on the lent H200 VM a 48-tensor 4 GiB upload spent 3-7 ms allocating before it pinned or read anything")
    alloc_bandwidth: float | None = Field(
        None, description="bytes per second of allocating device buffers; empty: an allocation costs only its call")

    _s = _sizes("memory", "import_alignment")
    _r = _rates("alloc_bandwidth")
    _d = _durations("alloc_per_call")


class Platform(_Part):
    name: str
    description: str = ""
    storage: Storage
    host: HostMemory
    links: tuple[Link, ...]
    switches: tuple[Switch, ...] = ()
    gpus: tuple[Gpu, ...]

    @model_validator(mode="after")
    def _references(self) -> "Platform":
        if not self.gpus:
            raise ValueError("a platform needs at least one GPU")
        for kind, items in (("link", self.links), ("switch", self.switches), ("gpu", self.gpus)):
            names = [item.name for item in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"two {kind}s are named {dupes[0]!r}")
        links = {link.name for link in self.links}
        switches = {s.name for s in self.switches}
        for gpu in self.gpus:
            if gpu.link not in links:
                raise ValueError(f"gpu {gpu.name!r} names link {gpu.link!r}; links are {sorted(links)}")
            if gpu.switch is not None and gpu.switch not in switches:
                raise ValueError(f"gpu {gpu.name!r} names switch {gpu.switch!r}; switches are {sorted(switches)}")
            if gpu.kind == "integrated" and gpu.memory > self.host.capacity:
                raise ValueError(f"integrated gpu {gpu.name!r} has more memory than the host")
        return self

    def link_of(self, gpu_index: int) -> Link:
        name = self.gpus[gpu_index].link
        return next(link for link in self.links if link.name == name)

    def switch_of(self, gpu_index: int) -> Switch | None:
        name = self.gpus[gpu_index].switch
        return next((s for s in self.switches if s.name == name), None)

    def caps(self, gpu_index: int = 0) -> DeviceCaps:
        """What a policy may know of GPU ``gpu_index``."""
        if not 0 <= gpu_index < len(self.gpus):
            raise PlatformError(f"platform {self.name!r} has {len(self.gpus)} GPU(s); no GPU {gpu_index}")
        gpu = self.gpus[gpu_index]
        return DeviceCaps(
            kind=gpu.kind,
            unified_memory=gpu.kind == "integrated",
            can_import_host=gpu.can_import,
            import_alignment=gpu.import_alignment,
            direct_storage=gpu.direct_storage,
            copy_queues=gpu.copy_engines,
            memory_bytes=gpu.memory,
            max_allocation=gpu.memory,
            host_threads=self.host.cpus,
        )

    def all_caps(self) -> list[DeviceCaps]:
        return [self.caps(i) for i in range(len(self.gpus))]

    def to_toml(self) -> str:
        """TOML that :func:`load_platform` reads back to an equal Platform."""
        return _to_toml(self)


# ---------------------------------------------------------------- TOML writing

_RATE_FIELDS = {"bandwidth", "write_bandwidth", "page_cache_bandwidth", "fault_in_bandwidth", "memcpy_per_thread",
                "total_bandwidth", "pin_bandwidth", "unpin_bandwidth", "register_bandwidth", "unregister_bandwidth",
                "h2d", "d2h", "pageable", "alloc_bandwidth"}
_SIZE_FIELDS = {"capacity", "memory", "import_alignment", "page_cache_near_bytes"}
_DURATION_FIELDS = {"latency", "pin_per_call", "unpin_per_call", "register_per_call", "overhead", "step_overhead",
                    "alloc_per_call", "import_handover_per_copy"}


def _human(key: str, value: Any) -> Any:
    """A readable string when it parses back to exactly ``value``; else the number."""
    if key in _RATE_FIELDS and isinstance(value, float):
        for scale, unit in ((1e9, "GB/s"), (1e6, "MB/s")):
            text = f"{value / scale:.12g}{unit}"
            if parse_rate(text) == value:
                return text
    if key in _SIZE_FIELDS and isinstance(value, int):
        for scale, unit in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value and value % scale == 0:
                return f"{value // scale}{unit}"
    if key in _DURATION_FIELDS and isinstance(value, float):
        for scale, unit in ((1e-6, "us"), (1e-3, "ms"), (1.0, "s")):
            text = f"{value / scale:.12g}{unit}"
            if "e" not in text and parse_duration(text) == value:
                return text
    return value


def _value(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise PlatformError(f"cannot write {value} to TOML")
    return json.dumps(value)


def _table(data: dict[str, Any]) -> list[str]:
    return [f"{k} = {_value(_human(k, v))}" for k, v in data.items() if v is not None]


def _to_toml(platform: Platform) -> str:
    data = platform.model_dump()
    lines = [f"name = {_value(data['name'])}"]
    if data["description"]:
        lines.append(f"description = {_value(data['description'])}")
    for section in ("storage", "host"):
        lines += ["", f"[{section}]"] + _table(data[section])
    for section in ("links", "switches", "gpus"):
        for item in data[section]:
            lines += ["", f"[[{section}]]"] + _table(item)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- loading


def _catalogue_dir() -> Path | None:
    try:
        root = importlib.resources.files("halsim.models") / "platforms"
        if root.is_dir():
            return Path(str(root))
    except (ModuleNotFoundError, TypeError):
        pass
    # Not installed: the repository keeps models/ next to halsim/.
    local = Path(__file__).resolve().parent.parent / "models" / "platforms"
    return local if local.is_dir() else None


def list_platforms() -> list[str]:
    """Names of the platforms in the catalogue."""
    root = _catalogue_dir()
    return sorted(p.stem for p in root.glob("*.toml")) if root else []


def platform_from_dict(data: dict[str, Any], source: str = "platform") -> Platform:
    try:
        return Platform.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {msg}" if where else msg)
        raise PlatformError(f"{source}: {'; '.join(problems)}") from None


def load_platform(name_or_path: "str | Path | Platform") -> Platform:
    """A platform by catalogue name (``"h100-pcie5"``) or from a ``.toml`` path."""
    if isinstance(name_or_path, Platform):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix == ".toml" or path.exists()):
        root = _catalogue_dir()
        candidate = root / f"{text}.toml" if root else None
        if candidate is None or not candidate.is_file():
            known = ", ".join(list_platforms()) or "(none installed)"
            raise PlatformError(f"unknown platform {text!r}; known platforms: {known}")
        path = candidate
    try:
        body = path.read_text()
    except OSError as err:
        known = ", ".join(list_platforms())
        raise PlatformError(f"{path}: cannot read platform file: {err.strerror}; known platforms: {known}") from None
    try:
        data = tomllib.loads(body)
    except tomllib.TOMLDecodeError as err:
        raise PlatformError(f"{path}: not valid TOML: {err}") from None
    return platform_from_dict(data, source=str(path))


__all__ = ["Storage", "HostMemory", "Link", "Switch", "Gpu", "Platform", "load_platform", "list_platforms",
           "platform_from_dict"]
