"""Fitting a Platform to microbenchmark measurements, each parameter with its error.

Three kinds of fit:

* **Directly** the engine's cost per step (``host.step_overhead``): the median
  gap between one copy and the next in the serial copy runs of the smallest
  chunk (what a step costs beyond its own span), with the standard error of
  that median.
* **Linear** where the simulator's model is a line: a copy step takes
  ``overhead + bytes / bandwidth``, a warm read ``bytes / page_cache_bandwidth``,
  a cold read ``latency + bytes / rate``, a staging pool ``slots * pin_per_call
  + bytes / pin_bandwidth`` to allocate and ``slots * unpin_per_call + bytes /
  unpin_bandwidth`` to free, device buffers ``count * alloc_per_call + bytes /
  alloc_bandwidth``, an import
  ``register_per_call + bytes / register_bandwidth`` and its release
  ``register_per_call + bytes / unregister_bandwidth``. Weighted
  least squares on *relative* residuals (times
  span three orders of magnitude over chunk sizes; plain least squares would
  fit only the largest), with the standard error of each coefficient.
* **By simulation** where flows share a resource: ``total_bandwidth`` (host
  memory under several memcpy threads, readers, and readers with copies
  running at once — the sharing an upload depends on) and the drive's
  ``bandwidth`` (cold reads by several readers). A 1-D search picks the value
  whose simulation of those very microbenchmarks best matches the
  measurements (least squares of log time ratios).

Finally every microbenchmark is simulated on the fitted platform: a
parameter's *residual* is the rms relative error on the benchmarks that set
it — the honest measure of how well the model fits this device, where the
standard error only says how well the data pin the value down.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from halsim.calibrate import (GPU_BEHAVIOUR, HOST_BEHAVIOUR, READ_FOOTPRINT, Calibration, Check, Measurement,
                              Measurements, Probe, copy_plan, headline, predict, read_footprint, stream_footprint,
                              stream_threads)
from halsim.platform import Gpu, HostMemory, Link, Platform, Storage, near_read_speedup
from halsim.units import format_size

# A rate that stands in for "no measurable cost per byte" (1 PB/s): the model needs a number.
UNMEASURABLE_RATE = 1e15


@dataclass(frozen=True)
class Fitted:
    """One Platform parameter: ``path`` is ``section.field`` (``link.h2d``)."""

    path: str
    value: float
    error: float | None  # relative standard error of the value; None where no fit gives one
    residual: float | None  # rms relative error of the simulator on the benchmarks that set it
    source: str  # which microbenchmarks set it
    measured: bool = True  # False: nothing here constrains it; the value stands in
    note: str = ""
    lower_bound: bool = False  # the measurements only show it is at least ``value``


# ---------------------------------------------------------------- the two fits


@dataclass(frozen=True)
class LinearFit:
    coef: np.ndarray
    stderr: np.ndarray
    residual: float  # rms relative residual


def linear_fit(rows: Sequence[Sequence[float]], y: Sequence[float]) -> LinearFit:
    """Least squares of ``y ~ rows @ coef`` on relative residuals, with standard errors."""
    X = np.asarray(rows, dtype=float)
    y = np.asarray(y, dtype=float)
    # Weight 1/y; a zero time (a simulated free step) gets the weight of a small one.
    floor = max(float(np.max(np.abs(y))) * 1e-3, 1e-300)
    w = 1.0 / np.maximum(np.abs(y), floor)
    A = X * w[:, None]
    b = y * w
    # Columns in seconds, seconds per slot and seconds per byte differ by 1e8: scale them to
    # unit norm, or the covariance's pseudo-inverse drops the small ones as noise.
    norms = np.linalg.norm(A, axis=0)
    norms[norms == 0] = 1.0
    scaled = A / norms
    coef, *_ = np.linalg.lstsq(scaled, b, rcond=None)
    r = scaled @ coef - b
    n, p = A.shape
    s2 = float(r @ r) / (n - p) if n > p else 0.0
    stderr = np.sqrt(np.maximum(np.diag(s2 * np.linalg.pinv(scaled.T @ scaled)), 0.0)) / norms
    return LinearFit(coef / norms, stderr, float(np.sqrt(np.mean(r**2))) if n else 0.0)


def search_fit(loss: Callable[[float], float], lo: float, hi: float, points: int = 40,
               iterations: int = 40) -> tuple[float, bool]:
    """The ``x`` in ``[lo, hi]`` minimising ``loss``: a log-spaced grid, then golden section.

    Returns ``(x, bounded)``; ``bounded`` is False when the loss is flat from
    ``x`` up to ``hi`` (no measurement limited by ``x``: it is a lower bound).
    """
    grid = np.geomspace(lo, hi, points)
    values = [loss(float(x)) for x in grid]
    best = min(values)
    tolerance = 1e-12 + 1e-6 * best
    i = next(k for k, v in enumerate(values) if v <= best + tolerance)
    if values[-1] <= best + tolerance and i < points - 1:
        if i == 0:
            return float(grid[0]), False
        # Flat from here up: the data say only "at least this much". Find where the flat part starts.
        a, b = math.log(grid[i - 1]), math.log(grid[i])
        for _ in range(iterations):
            middle = (a + b) / 2
            a, b = (a, middle) if loss(math.exp(middle)) <= best + tolerance else (middle, b)
        return math.exp(b), False
    a, b = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, points - 1)])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = loss(math.exp(c)), loss(math.exp(d))
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = loss(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = loss(math.exp(d))
    x = math.exp((a + b) / 2)
    return (x, True) if loss(x) <= best + tolerance else (float(grid[i]), True)


def _largest_as_good(loss: Callable[[float], float], x: float, hi: float, iterations: int = 30) -> float:
    """The largest value in ``[x, hi]`` whose loss is still ``loss(x)``'s (``x`` itself where the loss rises
    at once): where a search's minimum is flat, the end the data allow that assumes the least."""
    best = loss(x)
    tolerance = 1e-12 + 1e-6 * best
    if loss(min(hi, x * 1.01)) > best + tolerance:
        return x
    lo = x
    for _ in range(iterations):
        middle = (lo + hi) / 2
        lo, hi = (middle, hi) if loss(middle) <= best + tolerance else (lo, middle)
    return lo


def search_error(loss: Callable[[float], float], x: float, n: int) -> float | None:
    """Relative standard error of a search fit's ``x`` from the loss's curvature in ``log x``.

    For least squares in logs, var(log x) ~ 2 s^2 / L'' with s^2 = L / (n - 1).
    """
    if n < 2:
        return None
    h = 0.02
    at, up, down = loss(x), loss(x * math.exp(h)), loss(x * math.exp(-h))
    curvature = (up - 2 * at + down) / h**2
    if curvature <= 0:
        return None
    return math.sqrt(2 * at / (n - 1) / curvature)


def _never_rising(points: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """The curve closest to ``points`` (least squares; by footprint, ascending) that never rises
    with the footprint and never drops under 1: pooling neighbours that break the order
    (pool-adjacent-violators) averages a noisy high point with its neighbours where a running
    maximum would carry it to every smaller footprint."""
    blocks: list[list[float]] = []  # [sum, count] of each pooled run, in footprint order
    for _, speedup in points:
        blocks.append([speedup, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    fitted = [max(total / count, 1.0) for total, count in blocks for _ in range(int(count))]
    return [(footprint, round(value, 4)) for (footprint, _), value in zip(points, fitted)]


def _log_loss(pairs: Sequence[tuple[float, float]]) -> float:
    return sum(math.log(p / m) ** 2 for p, m in pairs if p > 0 and m > 0)


# ---------------------------------------------------------------- rounding for humans


def _round_rate(value: float) -> float:
    """Four significant digits in GB/s, so the TOML says ``5.432GB/s`` and reads back exactly."""
    return float(f"{value / 1e9:.4g}") * 1000**3


def _round_seconds(value: float) -> float:
    return float(f"{value / 1e-6:.4g}") * 1e-6 if value > 0 else 0.0


# ---------------------------------------------------------------- the platform


class _Params:
    """Parameter values as they are fitted, and how each was set."""

    def __init__(self) -> None:
        self.values: dict[str, float | None] = {}
        self.info: dict[str, dict] = {}

    def set(self, path: str, value: float | None, *, error: float | None = None, source: str = "",
            measured: bool = True, note: str = "", lower_bound: bool = False,
            points: Sequence[Measurement] | None = None) -> None:
        """``points``: the measurements the fit chose to set it from, where it chooses (else ``_SETS``)."""
        if value is not None:
            value = _round_seconds(value) if path in _DURATIONS else _round_rate(value) if path in _RATES else value
        self.values[path] = value
        self.info[path] = {"error": error, "source": source, "measured": measured, "note": note,
                           "lower_bound": lower_bound,
                           "probes": None if points is None else frozenset(pt.probe for pt in points)}


_RATES = {"storage.bandwidth", "storage.fault_in_bandwidth", "storage.page_cache_bandwidth", "host.memcpy_per_thread",
          "host.total_bandwidth", "host.pin_bandwidth", "host.unpin_bandwidth", "gpu.alloc_bandwidth",
          "host.register_bandwidth", "host.unregister_bandwidth", "link.h2d", "link.d2h", "link.pageable"}
_SIZES = {"storage.page_cache_near_bytes", "storage.read_ahead"}
_DURATIONS = {"storage.latency", "host.pin_per_call", "host.unpin_per_call", "gpu.alloc_per_call",
              "host.register_per_call", "link.overhead", "host.step_overhead", "host.import_handover_per_copy"}


def _median_error(values: Sequence[float]) -> float:
    """Relative standard error of the median of ``values``, 1.2533 sigma / sqrt(n) (0 for one value)."""
    middle = statistics.median(values)
    return 1.2533 * statistics.stdev(values) / math.sqrt(len(values)) / middle if len(values) > 1 and middle else 0.0


def _reading_error(pt: Measurement) -> float:
    """Relative standard error of a probe's median headline reading."""
    return _median_error(pt.samples[pt.probe.readings[0]])


def _build(m: Measurements, v: dict[str, float | None], name: str) -> Platform:
    caps = m.caps
    link = "link"
    return Platform(
        name=name,
        description=f"calibrated from {m.device} ({m.host}) on {m.when[:10]}",
        storage=Storage(name="storage", bandwidth=v["storage.bandwidth"], latency=v["storage.latency"],
                        page_cache_bandwidth=v["storage.page_cache_bandwidth"],
                        page_cache_curve=v.get("storage.page_cache_curve") or (),
                        fault_in_bandwidth=v.get("storage.fault_in_bandwidth"),
                        page_cache_near_bytes=v.get("storage.page_cache_near_bytes") or 0,
                        page_cache_near_speedup=v.get("storage.page_cache_near_speedup") or 1.0,
                        page_cache_near_curve=v.get("storage.page_cache_near_curve") or (),
                        page_cache_ring_curve=v.get("storage.page_cache_ring_curve") or (),
                        read_ahead=v["storage.read_ahead"]),
        host=HostMemory(memcpy_per_thread=v["host.memcpy_per_thread"], total_bandwidth=v["host.total_bandwidth"],
                        capacity=m.host_capacity, pin_bandwidth=v["host.pin_bandwidth"],
                        pin_per_call=v["host.pin_per_call"], unpin_per_call=v.get("host.unpin_per_call") or 0.0,
                        unpin_bandwidth=v.get("host.unpin_bandwidth"), register_bandwidth=v["host.register_bandwidth"],
                        register_per_call=v["host.register_per_call"],
                        unregister_bandwidth=v.get("host.unregister_bandwidth"), step_overhead=v["host.step_overhead"],
                        step_overhead_curve=v.get("host.step_overhead_curve") or (),
                        staging_write_curve=v.get("host.staging_write_curve") or (),
                        thread_contention=v["host.thread_contention"], dma_weight=v.get("host.dma_weight") or 1.0,
                        register_upload_factor=v.get("host.register_upload_factor") or 1.0,
                        import_handover_per_copy=v.get("host.import_handover_per_copy") or 0.0,
                        cpus=caps.host_threads, **{k: v for k, v in m.behaviour.items() if k in HOST_BEHAVIOUR}),
        links=(Link(name=link, h2d=v["link.h2d"], d2h=v["link.d2h"], overhead=v["link.overhead"],
                    pageable=v.get("link.pageable")),),
        gpus=(Gpu(name=m.device, kind="dedicated" if caps.kind == "dedicated" else "integrated",
                  memory=min(caps.memory_bytes, m.host_capacity) if caps.kind != "dedicated" else caps.memory_bytes,
                  copy_engines=int(v["gpu.copy_engines"]), import_alignment=caps.import_alignment,
                  can_import=caps.can_import_host, direct_storage=caps.direct_storage, link=link,
                  alloc_per_call=v.get("gpu.alloc_per_call") or 0.0, alloc_bandwidth=v.get("gpu.alloc_bandwidth"),
                  **{k: v for k, v in m.behaviour.items() if k in GPU_BEHAVIOUR}),),
    )


# Turns of fitting host.total_bandwidth and host.thread_contention each with the other held;
# the search's floor for the contention, and under twice that it counts as none (0.1% per thread).
CONTENTION_ROUNDS = 4
# Turns of fitting the host's sharing and the dispatcher's cost per step, each with the other in place.
DISPATCH_ROUNDS = 3
MIN_CONTENTION = 5e-4
# Turns of fitting the drive's bandwidth and latency each with the other in place; the latency's floor.
COLD_ROUNDS = 3
MIN_LATENCY = 1e-6
MIN_DMA_WEIGHT = 0.05  # the search's floor: a DMA that costs host memory nothing is not believed
MIN_WRITE_SHARE = 0.01  # the search's floor for host.staging_write_curve (a geometric grid: above 0)
SHARE_ROUNDS = 3
RATIO_FLOOR = math.log(1.005)  # a probe the model misses by less needs no further term


def fits_already(loss: float, count: int) -> bool:
    """Whether a log loss over ``count`` probes is within RATIO_FLOOR of each, rms: a term the fit
    could add (a lighter DMA byte, a write share, a ring curve) would only fit noise or rounding."""
    return loss <= count * RATIO_FLOOR ** 2


# Provisional values for parameters not fitted yet (a later step sets each): they
# only have to let the simulator run the benchmarks of the parameter being fitted.
_PROVISIONAL = {"storage.bandwidth": 1e9, "storage.latency": 0.0, "host.total_bandwidth": 1e12,
                "host.pin_bandwidth": UNMEASURABLE_RATE, "host.pin_per_call": 0.0,
                "host.unpin_bandwidth": None, "host.unpin_per_call": 0.0,
                "gpu.alloc_per_call": 0.0, "gpu.alloc_bandwidth": None,
                "host.register_bandwidth": UNMEASURABLE_RATE, "host.register_per_call": 0.0,
                "host.unregister_bandwidth": None,
                "link.overhead": 0.0, "link.pageable": None, "gpu.copy_engines": 1, "host.step_overhead": 0.0,
                "host.thread_contention": 0.0, "host.dma_weight": 1.0}


def _rate(path: str, fit: LinearFit, k: int, p: _Params, source: str, what: str,
          extent: tuple[float, float] | None = None) -> None:
    """Set a bandwidth from the slope (seconds per byte) in ``fit.coef[k]``.

    A slope within two standard errors of zero is no measurement; with ``extent``
    (the most bytes, the longest time measured), neither is one whose bytes add
    under 5 % to the longest time — it would flip between runs and change nothing.
    """
    slope, err = float(fit.coef[k]), float(fit.stderr[k])
    felt = extent is None or slope * extent[0] >= 0.05 * extent[1]
    if slope > 0 and slope > 2 * err and felt:
        p.set(path, 1.0 / slope, error=err / slope, source=source)
    else:
        p.set(path, UNMEASURABLE_RATE, source=source, measured=False,
              note=f"{what} does not grow with size here")


def _duration(path: str, fit: LinearFit, k: int, p: _Params, source: str) -> None:
    value, err = float(fit.coef[k]), float(fit.stderr[k])
    note = "" if value >= 0 else f"fit gave {value * 1e6:.3g} us; clamped to 0"
    p.set(path, max(value, 0.0), error=err / value if value > 0 else None, source=source, note=note)


def _per_call_and_byte(p: _Params, points: Sequence[Measurement], reading: str, per_call: str, rate: str,
                       source: str, what: str, optional_rate: bool = True) -> None:
    """Fit ``width * per_call + width * size / rate`` to ``reading`` of ``points`` (pools of slots, sets of
    buffers). With ``optional_rate`` a rate the times do not show is left empty: each costs only its call."""
    times = [pt.value(reading) for pt in points]
    if max(times) <= 0:  # a simulated device may do it in no time at all
        p.set(per_call, 0.0, source=f"{source}: per call", note=f"{what} was nothing here")
        if not optional_rate:
            p.set(rate, UNMEASURABLE_RATE, measured=False, source=f"{source}: per byte",
                  note=f"{what} does not grow with size here")
    else:
        fit = linear_fit([[1.0, pt.probe.width, pt.probe.width * pt.probe.size] for pt in points], times)
        _duration(per_call, fit, 1, p, f"{source}: per call")
        _rate(rate, fit, 2, p, f"{source}: per byte", what,
              extent=(max(pt.probe.width * pt.probe.size for pt in points), max(times)))
    if optional_rate and (max(times) <= 0 or p.values[rate] == UNMEASURABLE_RATE):
        p.set(rate, None, measured=False, source=f"{source}: per byte", note="each costs only its call here")


HANDOVER_TRIAL = 50e-6  # seconds a copy: where the fit simulates the import lane's hand-overs to find their slope


def _handover_pairs(m: Measurements) -> list[tuple[Measurement, Measurement]]:
    """Each import-upload probe of several tensors a window, with the one-tensor run of its window size."""
    runs = [pt for pt in m.of("register_in_upload") if "handover" in pt.samples]
    alone = {pt.probe.size: pt for pt in runs if pt.probe.width == 1}
    return [(alone[pt.probe.size], pt) for pt in runs if pt.probe.width > 1 and pt.probe.size in alone]


def _fit_import_handover(p: _Params, m: Measurements, platform: Callable[..., Platform], imports: bool,
                         in_place: bool) -> None:
    """``host.import_handover_per_copy``: how much longer the import lane's median gap is with several
    tensors a window than with one, beyond what the simulator already gives, per further copy.

    The gap is linear in the parameter (each lane step waits (n-1) times it, n the copies out of the
    window registered last), so two simulations of each pair give the slope, and least squares over
    the pairs the value."""
    path = "host.import_handover_per_copy"
    pairs = _handover_pairs(m) if imports and not in_place else []
    if not pairs:
        note = "the device cannot import host memory" if not imports else \
            "imports in place: nothing is registered" if in_place else \
            "no import upload of several tensors a window measured"
        p.set(path, 0.0, measured=False, note=note)
        return
    base, trial = (_simulated_differences(platform(host__import_handover_per_copy=x), pairs, m.config.scratch)
                   for x in (0.0, HANDOVER_TRIAL))
    slopes = [(t - b) / HANDOVER_TRIAL for b, t in zip(base, trial)]
    sum_sq_slopes = sum(k * k for k in slopes)
    if sum_sq_slopes <= 0:
        p.set(path, 0.0, measured=False, note="the simulated gaps do not move with it here")
        return
    wanted = [several.value("handover") - one.value("handover") - b for (one, several), b in zip(pairs, base)]
    value = sum(k * w for k, w in zip(slopes, wanted)) / sum_sq_slopes
    # Each difference's standard error, from its two medians', combined as least squares combines them.
    difference_errors = [math.hypot(_median_error(one.samples["handover"]) * one.value("handover"),
                                    _median_error(several.samples["handover"]) * several.value("handover"))
                         for one, several in pairs]
    error = math.sqrt(sum((k * e) ** 2 for k, e in zip(slopes, difference_errors))) / sum_sq_slopes
    sizes = ", ".join(f"{format_size(one.probe.size)} windows of {several.probe.width} tensors"
                      for one, several in pairs)
    source = f"import lane's gaps in an import upload of {sizes}, against one tensor a window (sim fit)"
    points = [pt for pair in pairs for pt in pair]
    if value <= 0:
        p.set(path, 0.0, source=source, note=f"fit gave {value * 1e6:.3g} us; clamped to 0" if value < 0 else "",
              points=points)
    else:
        p.set(path, value, error=error / value if error else None, source=source, points=points)


def _simulated_differences(platform: Platform, pairs: Sequence[tuple[Measurement, Measurement]],
                           scratch: int) -> list[float]:
    """Per pair: the import lane's simulated gap with several tensors a window, beyond the one with one."""
    gaps = [[predict(platform, pt.probe, scratch)["handover"] for pt in pair] for pair in pairs]
    return [several - one for one, several in gaps]


def handover_checks(m: Measurements, fitted: Platform) -> list[Check]:
    """The gap of each several-tensor import upload beyond its one-tensor run's, measured against
    ``fitted``'s simulation: what host.import_handover_per_copy is fitted to."""
    pairs = _handover_pairs(m)
    return [Check(several.probe, several.value("handover") - one.value("handover"), 0.0, simulated)
            for (one, several), simulated in zip(pairs, _simulated_differences(fitted, pairs, m.config.scratch))]


def _spread_error(points: Sequence[Measurement]) -> float | None:
    spreads = [pt.spread() for pt in points]
    return max(spreads) if spreads else None


def fit_platform(m: Measurements, name: str | None = None) -> Calibration:
    """The Platform that best reproduces ``m``, each parameter with its errors."""
    name = name or "calibrated-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", m.device).strip("-")
    scratch = m.config.scratch
    p = _Params()
    for path, value in _PROVISIONAL.items():
        p.values[path] = value
    notes = list(m.notes)
    # The kernel's readahead is a setting of the drive, read, not fitted: it shapes every cold read.
    if m.read_ahead is not None:
        p.set("storage.read_ahead", m.read_ahead, source="the drive's read_ahead_kb under the scratch file")
    else:
        p.set("storage.read_ahead", Storage.model_fields["read_ahead"].default, measured=False,
              note="the drive's read_ahead_kb could not be read; Linux's default")

    def platform(**override: float) -> Platform:
        return _build(m, {**p.values, **{k.replace("__", "."): v for k, v in override.items()}}, name)

    # Host memcpy, one thread.
    one = [pt for pt in m.of("memcpy") if pt.probe.width == 1]
    p.set("host.memcpy_per_thread", one[0].probe.size / one[0].value(), error=_spread_error(one),
          source="memcpy, 1 thread")

    # Copies: one overhead, a slope per kind of copy.
    kinds = [k for k in ("h2d", "d2h", "pageable") if m.of(k)]
    rows, y = [], []
    for j, kind in enumerate(kinds):
        for pt in m.of(kind):
            rows.append([1.0] + [float(pt.probe.size) if i == j else 0.0 for i in range(len(kinds))])
            y.append(pt.value())
    copies = linear_fit(rows, y)
    _duration("link.overhead", copies, 0, p, "copies by chunk size: intercept")
    for j, kind in enumerate(kinds):
        _rate(f"link.{kind}", copies, j + 1, p, f"{kind} copies by chunk size", "copy time")
    if "pageable" not in kinds:
        p.set("link.pageable", None, source="", measured=False,
              note="this device has no pageable copy path; the simulator uses one memcpy thread's rate")

    # The engine's cost per step, before anything that runs many steps at once is fitted.
    dispatch = _dispatch_points(m)
    gaps = [g for pt in dispatch for g in pt.samples["gap"]]
    if gaps:
        step = statistics.median(gaps)
        err = _median_error(gaps) if len(gaps) > 1 and step > 0 else None
        p.set("host.step_overhead", step, error=err,
              source="serial copies, smallest chunk: median gap between one copy and the next")
    else:
        p.set("host.step_overhead", 0.0, measured=False, note="no serial copy run recorded its gaps")

    # Warm reads, one reader: the page cache, one thread.
    warm = [pt for pt in m.of("read") if pt.probe.width == 1]
    reads = linear_fit([[1.0, pt.probe.size] for pt in warm], [pt.value() for pt in warm])
    _rate("storage.page_cache_bandwidth", reads, 1, p, "warm reads by size, 1 reader", "read time")
    per_read_cost = reads.coef[0] > max(2 * reads.stderr[0], 0.02 * min(pt.value() for pt in warm))

    # Reads into fewer slots (a smaller ring) against the same requests into a ring-sized set
    # of slots, measured in the same rounds: a speedup by footprint, ended at the large
    # ring's footprint with none, and never rising with the footprint (noise aside, a
    # larger ring cannot stay in the cache better than a smaller one).
    near = sorted(m.of("near"), key=lambda pt: read_footprint(pt.probe))
    far = {pt.probe.size: pt for pt in warm}
    # Only reads into fewer bytes of slots than the read probe's (runs 37-38 also measured
    # near reads into its own 256 MiB, a reference since dropped).
    pairs = [(far[pt.probe.size], pt) for pt in near if pt.probe.size in far and pt.value() > 0
             and read_footprint(pt.probe) < read_footprint(far[pt.probe.size].probe)]
    if pairs:
        points = [(read_footprint(n.probe), f.value() / n.value()) for f, n in pairs]
        points.append((read_footprint(pairs[0][0].probe), 1.0))
        curve = _never_rising(sorted(points))
        f, n = pairs[0]
        speedup = curve[0][1]
        p.set("storage.page_cache_near_speedup", speedup,
              error=math.hypot(_reading_error(f), _reading_error(n)),
              source=f"{format_size(n.probe.size)} reads into {format_size(read_footprint(n.probe))} of slots "
                     f"against {format_size(read_footprint(f.probe))}",
              note="" if speedup > 1.0 else "no faster: reads into a small ring run as into a large one")
        p.values["storage.page_cache_near_bytes"] = read_footprint(n.probe) if speedup > 1.0 else 0
        p.values["storage.page_cache_near_curve"] = tuple(curve) if len(pairs) > 1 and speedup > 1.0 else ()
        if len(pairs) > 1:
            notes.append("one reader's requests into fewer slots read faster: " + ", ".join(
                f"{s:.3g}x into {format_size(b)}" for b, s in curve) + " of slots (the simulator reads each "
                "ring at its footprint's speedup)")
    else:
        p.set("storage.page_cache_near_speedup", 1.0, measured=False,
              note="no near probe, or no read probe of its size into more slots, to compare with")
        p.values["storage.page_cache_near_bytes"] = 0
        p.values["storage.page_cache_near_curve"] = ()

    # The rate by request size, where it departs from one rate: the simulator then reads
    # each request at its measured rate (the H100 VM read 64 MiB requests 26% slower).
    # A probe whose slots stay in the CPU's cache (small requests, few slots) counts at
    # the rate of a large ring: the simulator adds the speedup to rings that small.
    near_bytes, one_slot = p.values["storage.page_cache_near_bytes"], Storage.model_fields["page_cache_near_one_slot"].default

    def near(probe) -> float:
        footprint = read_footprint(probe)
        return near_read_speedup(near_bytes, p.values["storage.page_cache_near_speedup"], one_slot,
                                 footprint // max(probe.size, 1), footprint, p.values["storage.page_cache_near_curve"])

    by_size = sorted((pt.probe.size, pt.probe.size / pt.value() / near(pt.probe)) for pt in warm if pt.value() > 0)
    flat = p.values["storage.page_cache_bandwidth"]
    curve = len(by_size) > 1 and flat and max(abs(rate / flat - 1) for _, rate in by_size) > 0.05
    if per_read_cost and not curve:
        notes.append(f"a warm read costs {reads.coef[0] * 1e6:.3g} us beyond its bytes; the simulator has no "
                     "per-read cost for cached reads, so it predicts small requests too fast")
    if curve:
        p.values["storage.page_cache_curve"] = tuple((size, _round_rate(rate)) for size, rate in by_size)
        notes.append("one thread's page-cache reads run at " + ", ".join(
            f"{rate / 1e9:.3g} GB/s ({size >> 10} KiB)" if size < 1 << 20 else f"{rate / 1e9:.3g} GB/s ({size >> 20} MiB)"
            for size, rate in by_size) + " by request size: the simulator reads each request at its size's rate")

    # Host memory in all (memcpy threads, warm readers, readers with copies), and how much
    # threads copying at once slow one another before it is full (the H100 VM: one reader
    # alone 4.95 GB/s, each of 8 readers 2.8, far under the total): both by simulation,
    # in turns, each fitted with the other held, until neither moves.
    dispatch_rings = [pt for pt in m.of("stream") if pt.probe.size < m.config.thread_chunk]
    rings = [pt for pt in m.of("stream") if pt not in dispatch_rings and pt.probe.size * pt.probe.count <= scratch]
    # Rings of several readers into fewer bytes of slots than the read probes' may read faster by
    # their own curve (storage.page_cache_ring_curve, below), told from the host's sharing where a
    # ring of the read probes' footprint is there to compare with.
    ring_probes = [pt for pt in rings + m.of("tight") if pt.probe.width > 1
                   and stream_footprint(pt.probe) < READ_FOOTPRINT] \
        if any(stream_footprint(pt.probe) >= READ_FOOTPRINT for pt in rings) else []
    threads = [pt for pt in m.of("memcpy") if pt.probe.width > 1] + [pt for pt in m.of("read") if pt.probe.width > 1]
    shared = threads + rings

    # A dedicated GPU's DMA may weigh less on host memory than its bytes (the H200 VM: eight
    # readers with copies streaming moved more traffic than eight readers alone): fitted where
    # streaming runs and readers alone both show it.
    dma_shows = m.caps.kind == "dedicated" and any(pt.probe.bench == "stream" for pt in shared) and \
        any(pt.probe.bench == "read" for pt in shared)

    # The widest ring over the scratch file several times, with one slot per reader (``tight``) and
    # with two (a long ``stream``): of what the tight ring's readers write, the share that reaches host
    # memory, the rest staying in the CPU's cache; a curve from its footprint (the share) to the other's
    # (all of it). Fitted by simulation to the two rings' ratio, which the machine's drift cancels from.
    pairs = [(t, s) for t in m.of("tight") for s in m.of("stream")
             if (s.probe.size, s.probe.count, s.probe.width) == (t.probe.size, t.probe.count, t.probe.width)]
    tight_bytes = pairs[0][0].probe.width * pairs[0][0].probe.size if pairs else 0

    def write_curve(share: float) -> tuple[tuple[int, float], ...]:
        return ((tight_bytes, round(share, 4)), (2 * tight_bytes, 1.0)) if share < 1.0 else ()

    def write_loss(share: float, streams: Sequence[float]) -> float:
        # ``streams``: each pair's stream ring simulated; its footprint is the curve's end, so no share moves it.
        candidate = platform(host__staging_write_curve=write_curve(share))
        return _log_loss([(predict(candidate, t.probe, scratch)["tight"] / stream, t.value() / s.value())
                          for (t, s), stream in zip(pairs, streams)])

    def write_share() -> float:
        curve = p.values.get("host.staging_write_curve") or ()
        return curve[0][1] if curve else 1.0

    def host_loss(total: float, contention: float, dma: float | None = None) -> float:
        candidate = platform(host__total_bandwidth=total, host__thread_contention=contention,
                             host__dma_weight=p.values["host.dma_weight"] if dma is None else dma)
        return _log_loss([(predict(candidate, pt.probe, scratch)[pt.probe.bench], pt.value()) for pt in shared])

    def fit_host() -> None:
        if not shared:
            p.set("host.total_bandwidth", 2 * p.values["host.memcpy_per_thread"], source="", measured=False,
                  note="one thread only: assumed twice one thread's copy")
            p.set("host.thread_contention", 0.0, measured=False, note="one thread only")
            return
        peak = max(pt.probe.size * pt.probe.width / pt.value() if pt.probe.bench == "memcpy"
                   else pt.probe.size * pt.probe.count / pt.value() for pt in shared)
        contention, total, bounded = 0.0, peak, False
        for _ in range(CONTENTION_ROUNDS):
            before = (total, contention, p.values["host.dma_weight"])
            total, bounded = search_fit(lambda x: host_loss(x, contention), 0.2 * peak, 40 * peak)
            contention, felt = search_fit(lambda a: host_loss(total, a), MIN_CONTENTION, 2.0)
            if contention < 2 * MIN_CONTENTION or not felt:
                contention = 0.0  # one thread's rate holds however many run
            if dma_shows:
                dma, _ = search_fit(lambda w: host_loss(total, contention, w), MIN_DMA_WEIGHT, 2.0)
                dma = min(max(dma, MIN_DMA_WEIGHT), 2.0)  # the search may step just past its ends
                # Within a percent of a whole byte, no better than one, or a whole byte already fits every
                # probe within half a percent (host memory never bound them: any weight fits): each byte once.
                whole = host_loss(total, contention, 1.0)
                enough = whole <= host_loss(total, contention, dma) * (1 + 1e-9) or \
                    fits_already(whole, len(shared))
                p.values["host.dma_weight"] = 1.0 if abs(dma - 1.0) < 0.01 or enough else round(dma, 4)
            if abs(total / before[0] - 1) < 0.005 and abs(contention - before[1]) < 0.0005 and \
                    abs(p.values["host.dma_weight"] - before[2]) < 0.005:
                break
        p.set("host.total_bandwidth", total,
              error=search_error(lambda x: host_loss(x, contention), total, len(shared)) if bounded else None,
              source="memcpy threads, readers, streaming (sim fit)", lower_bound=not bounded,
              note="" if bounded else "no thread count saturated host memory")
        if dma_shows:
            weight = p.values["host.dma_weight"]
            p.set("host.dma_weight", weight,
                  error=search_error(lambda w: host_loss(total, contention, w), weight, len(shared))
                  if weight != 1.0 else None, source="streaming runs against readers alone (sim fit)",
                  note="" if weight != 1.0 else "each byte a DMA moves weighs one byte on host memory")
        p.set("host.thread_contention", round(contention, 4),
              error=search_error(lambda a: host_loss(total, a), contention, len(shared)) if contention else None,
              source="memcpy threads, readers, streaming (sim fit)",
              note="" if contention else "threads do not slow one another here")

    # The step overhead again, by simulation of rings of small chunks, one for each
    # reader count: under several readers and a copy thread the engine's cost per step
    # is larger than the gap between serial copies (on the H100 VM: 58 us serial, ~100 us
    # in a ring), and larger with more threads (the H200 VM: 4-25 % from 5 to 9 threads).
    serial = p.values["host.step_overhead"] or 0.0
    # The serial copies' gap is the curve's first point, at their own threads (a copy thread, the engine).
    serial_point = [(min(copy_plan(pt.probe).threads_at_once() for pt in dispatch), serial)] if serial > 0 else []

    def fit_dispatch() -> None:
        points, low = list(serial_point), max(serial, 1e-7)
        for ring in sorted(dispatch_rings, key=lambda pt: pt.probe.width):
            def dispatch_loss(x: float, ring=ring) -> float:
                candidate = platform(host__step_overhead=x, host__step_overhead_curve=())
                return _log_loss([(predict(candidate, ring.probe, scratch)["stream"], ring.value())])

            step, bounded = search_fit(dispatch_loss, 0.5 * low, max(40 * low, 1e-3))
            if bounded and dispatch_loss(step) < dispatch_loss(serial):
                points.append((stream_threads(ring.probe, m.caps), step))
        if len(points) == len(serial_point):
            return  # no ring was bound by its steps
        # Each ring's own cost, not a running ceiling: a ring of few readers is partly bound by
        # its reads, and what the fit puts on its steps is what a plan like it pays (the H200
        # VM: 2 readers 76 us a step, 4 readers 63 us, in the same calibration).
        curve = [(threads, _round_seconds(step)) for threads, step in sorted(points)]
        # One ring a point: no spread to give an error from.
        p.set("host.step_overhead", curve[-1][1],
              source=f"streaming rings of {dispatch_rings[0].probe.size // 1024} KiB chunks (sim fit)"
                     + (f"; by threads at once: {', '.join(f'{n}: {c * 1e6:.3g} us' for n, c in curve)}"
                        if len(curve) > 1 else ""))
        p.values["host.step_overhead_curve"] = tuple(curve) if len(curve) > 1 else ()

    # The two depend on each other (a ring's reads share the host; the host's rings pay
    # their steps): host first, then steps, then both again with the other's fit in place.
    def step_costs() -> list[float]:
        return [p.values["host.step_overhead"]] + [c for _, c in p.values.get("host.step_overhead_curve") or ()]

    def fit_write_share() -> None:
        p.values["host.staging_write_curve"] = ()
        if p.info["host.total_bandwidth"]["lower_bound"]:
            # Less traffic and more bandwidth are then the same thing: the share would only stand
            # in for the bandwidth the probes could not reach.
            p.set("host.staging_write_share", 1.0, measured=False,
                  note="host memory never bound the probes: a share of its traffic cannot be told from more bandwidth")
            return
        streams = [predict(platform(), s.probe, scratch)["stream"] for _, s in pairs]

        def loss(share: float) -> float:
            return write_loss(share, streams)

        share, felt = search_fit(loss, MIN_WRITE_SHARE, 1.0, points=16, iterations=20)
        share = _largest_as_good(loss, share, 1.0, iterations=12)  # a flat floor: the most traffic that fits
        # Flat up to all of it, no better than all of it, or all of it already within half a
        # percent of the two rings' ratio: none stays in the cache.
        whole = loss(1.0)
        if felt and share < 0.99 and not fits_already(whole, len(pairs)) and loss(share) < whole / 2:
            p.values["host.staging_write_curve"] = write_curve(max(share, MIN_WRITE_SHARE))
        share = write_share()
        p.set("host.staging_write_share", share,
              error=search_error(loss, share, len(pairs)) if share < 1.0 else None,
              source=f"{pairs[0][0].probe.width} readers into {format_size(tight_bytes)} of slots against "
                     f"{format_size(2 * tight_bytes)}, {format_size(pairs[0][0].probe.size * pairs[0][0].probe.count)} "
                     "each (sim fit)",
              note=f"at {format_size(tight_bytes)} of slots and less; all of it from {format_size(2 * tight_bytes)}"
              if share < 1.0 else "all of what the readers write reaches host memory")

    def fit_sharing() -> None:
        fit_host()
        for _ in range(DISPATCH_ROUNDS if dispatch_rings else 0):
            before = step_costs()
            fit_dispatch()
            after = step_costs()
            if len(after) == len(before) and all(abs(a - b) <= 0.01 * b for a, b in zip(after, before)):
                break
            fit_host()
        if pairs:
            # Once the rest is in place; then the host again, whose smaller rings the share reaches
            # too, in turns until the share holds.
            for _ in range(SHARE_ROUNDS):
                before = write_share()
                fit_write_share()
                if write_share() == 1.0:
                    break
                fit_host()
                if abs(write_share() - before) < 0.005:
                    break

    fit_sharing()

    # Rings of several readers into fewer bytes of slots than the read probes' (the short `stream`
    # rings of 2 and 4 readers, `tight`): their own speedup at each footprint, by simulation, where
    # one reader's near curve misses them (the H200 VMs: eight readers read 1.1-1.6x faster into
    # 128 MiB of slots than into 256 MiB, one reader no faster).
    def ring_loss(curve: tuple[tuple[int, float], ...], points: Sequence[Measurement]) -> float:
        candidate = platform(storage__page_cache_ring_curve=curve)
        return _log_loss([(predict(candidate, pt.probe, scratch)[pt.probe.bench], pt.value()) for pt in points])

    def fit_ring_curve() -> None:
        p.values["storage.page_cache_ring_curve"] = ()
        by_footprint: dict[int, list[Measurement]] = {}
        for pt in ring_probes:
            by_footprint.setdefault(stream_footprint(pt.probe), []).append(pt)
        points, errors = [], {}
        for footprint, group in sorted(by_footprint.items()):
            def loss(x: float, footprint=footprint, group=group) -> float:
                # At least 1 (the error's curvature looks just under the fit's floor).
                return ring_loss(((footprint, max(x, 1.0)), (READ_FOOTPRINT, 1.0)), group)

            speedup, _ = search_fit(loss, 1.0, 4.0, points=16, iterations=20)
            points.append((footprint, speedup))
            errors[footprint] = search_error(loss, speedup, len(group))
        curve = tuple(_never_rising(points + [(READ_FOOTPRINT, 1.0)]))
        # As one reader's curve already has them within half a percent, or no better by half: none.
        whole = ring_loss((), ring_probes)
        if curve[0][1] > 1.0 and not fits_already(whole, len(ring_probes)) and \
                ring_loss(curve, ring_probes) < whole / 2:
            p.values["storage.page_cache_ring_curve"] = curve
            first = curve[0][0]
            widths = sorted({pt.probe.width for pt in by_footprint[first]})
            p.set("storage.page_cache_ring_speedup", curve[0][1], error=errors[first],
                  source=f"rings of {'/'.join(map(str, widths))} readers into {format_size(first)} of slots against "
                         f"{format_size(READ_FOOTPRINT)} (sim fit)", points=ring_probes,
                  note=", ".join(f"{x:.3g}x into {format_size(b)}" for b, x in curve))
        else:
            p.set("storage.page_cache_ring_speedup", 1.0, measured=False,
                  note="rings of several readers read as one reader's near curve says")

    if ring_probes:
        fit_ring_curve()
        if p.values["storage.page_cache_ring_curve"]:
            # They read by their own curve: the host's sharing again without them, then their curve.
            shared[:] = [pt for pt in shared if pt not in ring_probes]
            fit_sharing()
            fit_ring_curve()

    # Cold reads: the drive's latency and bandwidth, each by simulation with the other in place (the
    # kernel's readahead hides part of one reader's pauses, after the latency: no line says how much),
    # starting from the latency of a line through one reader's times by size.
    # The bandwidth from the reads by several readers where there are any: they read as a cold
    # upload does. One reader's requests read 2-20 % slower on the H200 VMs, the smaller the slower,
    # which the model lacks; fitted to them too, the drive came out a median 4 % slow
    # (docs/fidelity-log.md, fifteenth session).
    cold = m.of("cold")
    if cold:
        solo = [pt for pt in cold if pt.probe.width == 1]
        several = [pt for pt in cold if pt.probe.width > 1] or cold
        line = linear_fit([[1.0, pt.probe.size] for pt in solo], [pt.value() for pt in solo])
        _duration("storage.latency", line, 0, p, "cold reads by size, 1 reader: intercept")

        def cold_loss(points: Sequence[Measurement], **override: float) -> float:
            candidate = platform(**override)
            return _log_loss([(predict(candidate, pt.probe, scratch)["cold"], pt.value()) for pt in points])

        def bandwidth_loss(x: float) -> float:
            return cold_loss(several, storage__bandwidth=x)

        def latency_loss(x: float) -> float:
            return cold_loss(cold, storage__latency=x)

        peak = max(pt.probe.size * (pt.probe.count if pt.probe.width > 1 else 1) / pt.value() for pt in several)
        shortest = min(pt.value() for pt in solo) if solo else 0.0
        for turn in range(COLD_ROUNDS):
            bandwidth, bounded = search_fit(bandwidth_loss, 0.2 * peak, 40 * peak)
            p.set("storage.bandwidth", bandwidth,
                  error=search_error(bandwidth_loss, bandwidth, len(several)) if bounded else None,
                  source=("cold reads by several readers (sim fit)" if several is not cold
                          else "cold reads by size (sim fit)"), lower_bound=not bounded,
                  note="" if bounded else "never the bottleneck of a cold read here", points=several)
            if not shortest or turn == COLD_ROUNDS - 1:
                break
            latency, _ = search_fit(latency_loss, MIN_LATENCY, shortest)
            if latency < 2 * MIN_LATENCY:
                latency = 0.0
            before = p.values["storage.latency"]
            p.set("storage.latency", latency, error=search_error(latency_loss, latency, len(solo)) if latency else None,
                  source="cold reads by size and readers (sim fit)",
                  note="" if latency else "too short to tell from the reads' own times")
            if abs(latency - before) <= 0.01 * max(before, MIN_LATENCY):
                break
    else:
        p.set("storage.latency", 0.0, measured=False, note="cold reads could not be measured")
        p.set("storage.bandwidth", p.values["storage.page_cache_bandwidth"], measured=False,
              note="cold reads could not be measured; set to the page cache's rate")

    # Pinned staging: slots * per_call + bytes / bandwidth, beyond a run's fixed cost; and its
    # freeing the same way, where the run timed it apart (else ``pin`` holds the pair).
    pins = m.of("pin")
    _per_call_and_byte(p, pins, "pin", "host.pin_per_call", "host.pin_bandwidth", "staging pools",
                       "allocation time", optional_rate=False)
    if all("unpin" in pt.samples for pt in pins):
        _per_call_and_byte(p, pins, "unpin", "host.unpin_per_call", "host.unpin_bandwidth", "staging pools freed",
                           "freeing time")
    else:
        note = "allocating and freeing were timed together: pinning's figures charge both at allocation"
        p.set("host.unpin_per_call", 0.0, measured=False, note=note)
        p.set("host.unpin_bandwidth", None, measured=False, note=note)

    # Device buffers, allocated one after another before anything else of an upload.
    if m.of("alloc"):
        _per_call_and_byte(p, m.of("alloc"), "alloc", "gpu.alloc_per_call", "gpu.alloc_bandwidth", "device buffers",
                           "allocation time")
    else:
        note = "device buffers not measured (a run from before)"
        p.set("gpu.alloc_per_call", 0.0, measured=False, note=note)
        p.set("gpu.alloc_bandwidth", None, measured=False, note=note)

    # Registration and its release, each by window size. The simulator charges an import
    # per_call + bytes / register_bandwidth and a release per_call + bytes / unregister_bandwidth:
    # where the driver's lock makes copies wait for either, when each happens matters.
    imports = m.of("import")
    in_place = m.caps.import_in_place
    if imports:
        rows = [[1.0] + ([] if in_place else [float(pt.probe.size)]) for pt in imports]
        register = linear_fit(rows, [pt.value("import") for pt in imports])
        _duration("host.register_per_call", register, 0, p, "imports: intercept")
        if in_place:
            p.set("host.register_bandwidth", UNMEASURABLE_RATE, measured=False,
                  note="imports in place: the simulator charges no per-byte cost")
            p.set("host.unregister_bandwidth", None, measured=False, note="imports in place: nothing to unpin")
        else:
            longest = max(pt.value("import") + pt.value("unimport") for pt in imports)
            extent = (max(pt.probe.size for pt in imports), longest)
            _rate("host.register_bandwidth", register, 1, p, "imports by window size: slope", "import time")
            releases = [pt.value("unimport") for pt in imports]
            if max(releases) > 0:  # a simulated release may take no time at all
                _rate("host.unregister_bandwidth", linear_fit(rows, releases), 1, p, "releases by window size: slope",
                      "release time", extent=extent)
            if max(releases) <= 0 or p.values["host.unregister_bandwidth"] == UNMEASURABLE_RATE:
                p.set("host.unregister_bandwidth", None, measured=False, source="releases by window size",
                      note="a release costs only its call here")
    else:
        for path in ("host.register_per_call", "host.register_bandwidth", "host.unregister_bandwidth"):
            p.set(path, p.values[path], measured=False, note="the device cannot import host memory")

    # Registrations inside an upload (copies streaming, the engine's threads at work) against
    # alone: a factor, by simulation of the probe's registration spans (median per window).
    inside = [pt for pt in m.of("register_in_upload") if pt.probe.width == 1]  # one tensor a window
    if inside and imports and not in_place:
        def inside_loss(x: float) -> float:
            candidate = platform(host__register_upload_factor=x)
            return _log_loss([(predict(candidate, pt.probe, scratch)["register_in_upload"], pt.value())
                              for pt in inside])

        factor, _ = search_fit(inside_loss, 1.0, 3.0)
        if factor < 1.001 or inside_loss(1.0) <= inside_loss(factor) * (1 + 1e-9):
            p.set("host.register_upload_factor", 1.0, source=f"registrations inside an import upload of "
                  f"{format_size(inside[0].probe.size)} windows", note="no slower than alone")
        else:
            p.set("host.register_upload_factor", round(factor, 4),
                  error=search_error(inside_loss, factor, len(inside)),
                  source=f"registrations inside an import upload of {format_size(inside[0].probe.size)} windows, "
                         "against alone (sim fit)")
    else:
        p.set("host.register_upload_factor", 1.0, measured=False,
              note="no registration inside an upload measured" if imports else "the device cannot import host memory")

    _fit_import_handover(p, m, platform, bool(imports), in_place)

    # Cold windows: registering one first faults its pages in, at the mapping's own rate
    # (beyond a warm window of the same size: the registration itself).
    warm_windows = {pt.probe.size: pt for pt in imports}
    faults = [(pt, warm_windows[pt.probe.size]) for pt in m.of("fault") if pt.probe.size in warm_windows]
    if faults:
        cold_window, warm_window = faults[0]
        extra = cold_window.value() - warm_window.value("import") - (p.values["storage.latency"] or 0.0)
        if extra > 0:
            error = math.hypot(_reading_error(cold_window) * cold_window.value(),
                               _median_error(warm_window.samples["import"]) * warm_window.value("import")) / extra
            p.set("storage.fault_in_bandwidth", cold_window.probe.size / extra, error=error,
                  source=f"cold imports of {format_size(cold_window.probe.size)} windows, beyond warm ones")
        else:
            p.set("storage.fault_in_bandwidth", None, measured=False,
                  note="a cold import took no longer than a warm one")
    else:
        p.set("storage.fault_in_bandwidth", None, measured=False, note="no cold import measured")

    # Copy engines: how many copies on different queues actually ran at once.
    together = m.of("copies")
    if together:
        overlap = together[0].value("overlap")
        engines = max(1, min(int(round(overlap)), m.caps.copy_queues))
        p.set("gpu.copy_engines", engines, source=f"copies on {together[0].probe.width} queues: "
              f"{overlap:g} ran at once")
    else:
        p.set("gpu.copy_engines", 1, measured=False, note="the device has one copy queue")

    fitted_platform = platform()
    checks = [Check(pt.probe, headline(pt.probe, pt), pt.spread(),
                    headline(pt.probe, predict(fitted_platform, pt.probe, scratch))) for pt in m.points]
    # The step overhead shows in the gaps between steps, not in any probe's headline.
    gap_checks = [Check(pt.probe, pt.value("gap"), pt.spread("gap"),
                        predict(fitted_platform, pt.probe, scratch)["gap"]) for pt in dispatch]
    residuals = {path: _residual(path, checks, info["probes"]) for path, info in p.info.items()}
    residuals["host.step_overhead"] = _residual_of([c for c in gap_checks if c.measured > 0])
    # ... and the import lane's hand-overs in how much its gaps grow with several tensors a window.
    if p.info["host.import_handover_per_copy"]["measured"]:
        residuals["host.import_handover_per_copy"] = _residual_of(
            [c for c in handover_checks(m, fitted_platform) if c.measured > 0])
    fitted = [Fitted(path, value, info["error"], residuals[path], info["source"], info["measured"],
                     info["note"], info["lower_bound"])
              for path, info in p.info.items() if (value := p.values[path]) is not None or not info["measured"]]
    return Calibration(fitted_platform, fitted, checks, m, notes)


# Which benchmarks set each parameter (where the fit does not choose them: ``_Params.set``'s
# ``points``): its residual is the simulator's error on them.
_SETS: dict[str, Callable[[Probe], bool]] = {
    "host.memcpy_per_thread": lambda p: p.bench == "memcpy" and p.width == 1,
    "host.total_bandwidth": lambda p: p.bench in ("memcpy", "read") and p.width > 1 or p.bench == "stream",
    "host.thread_contention": lambda p: p.bench in ("memcpy", "read") and p.width > 1,
    "host.dma_weight": lambda p: p.bench == "stream",
    "host.staging_write_share": lambda p: p.bench == "tight",
    "storage.page_cache_bandwidth": lambda p: p.bench == "read" and p.width == 1,
    "storage.page_cache_near_speedup": lambda p: p.bench == "near",
    "storage.latency": lambda p: p.bench == "cold" and p.width == 1,
    "storage.fault_in_bandwidth": lambda p: p.bench == "fault",
    "link.overhead": lambda p: p.bench in ("h2d", "d2h", "pageable"),
    "link.h2d": lambda p: p.bench == "h2d",
    "link.d2h": lambda p: p.bench == "d2h",
    "link.pageable": lambda p: p.bench == "pageable",
    "host.pin_per_call": lambda p: p.bench == "pin",
    "host.pin_bandwidth": lambda p: p.bench == "pin",
    "host.unpin_per_call": lambda p: p.bench == "pin",
    "host.unpin_bandwidth": lambda p: p.bench == "pin",
    "host.register_per_call": lambda p: p.bench == "import",
    "host.register_bandwidth": lambda p: p.bench == "import",
    "host.unregister_bandwidth": lambda p: p.bench == "import",
    "host.register_upload_factor": lambda p: p.bench == "register_in_upload" and p.width == 1,
    "gpu.copy_engines": lambda p: p.bench == "copies",
    "gpu.alloc_per_call": lambda p: p.bench == "alloc",
    "gpu.alloc_bandwidth": lambda p: p.bench == "alloc",
}


def _residual(path: str, checks: Sequence[Check], probes: frozenset[Probe] | None = None) -> float | None:
    """The simulator's error on the benchmarks that set ``path``: ``probes`` where the fit chose them."""
    chosen = _SETS.get(path) if probes is None else probes.__contains__
    return _residual_of([c for c in checks if chosen is not None and chosen(c.probe) and c.measured > 0])


def _residual_of(checks: Sequence[Check]) -> float | None:
    errors = [c.error for c in checks]
    return math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else None


def _dispatch_points(m: Measurements) -> list[Measurement]:
    """The serial copy runs of the smallest chunk of each kind that recorded their gaps.

    Their steps are the shortest, so they are the most of them per run, and the
    gap between one copy and the next — the engine handling a completion and
    handing the next step over — is all that is left of a step beyond its span.
    """
    out = []
    for kind in ("h2d", "d2h", "pageable"):
        points = [pt for pt in m.of(kind) if "gap" in pt.samples]
        if points:
            out.append(min(points, key=lambda pt: pt.probe.size))
    return out


# ---------------------------------------------------------------- showing it


def format_value(path: str, value: float | None) -> str:
    if value is None:
        return "-"
    if path in _RATES:
        return f"{value / 1e9:.4g} GB/s"
    if path in _DURATIONS:
        return f"{value * 1e6:.4g} us"
    if path in _SIZES:
        return format_size(int(value))
    return f"{value:g}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}" if value < 10 else ">999%"


def fitted_table(fitted: Sequence[Fitted], title: str = "calibrated platform", sources: bool = True):
    """A rich Table of the fitted parameters; ``sources`` adds what set each (a wide column)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    columns = ("parameter", "value", "± std err", "residual") + (("from",) if sources else ())
    for column in columns:
        table.add_column(column, justify="right" if column in ("value", "± std err", "residual") else "left",
                         no_wrap=column != "from")
    for f in fitted:
        source = f.source + (f" — {f.note}" if f.note and f.source else f.note)
        if f.measured:
            value = ("≥ " if f.lower_bound else "") + format_value(f.path, f.value)
        elif f.value is None or f.value == UNMEASURABLE_RATE:
            value = "not measured"
        else:
            value = f"{format_value(f.path, f.value)} (not measured)"
        table.add_row(f.path, value, _percent(f.error), _percent(f.residual), *((source,) if sources else ()))
    return table


def annotate_toml(text: str, fitted: Sequence[Fitted]) -> str:
    """``text`` (a Platform's TOML) with a comment after each fitted value: its errors and origin."""
    by_path = {f.path: f for f in fitted}
    section = ""
    lines = []
    for line in text.splitlines():
        header = re.match(r"^\[\[?(\w+)\]\]?$", line)
        if header:
            section = {"links": "link", "gpus": "gpu"}.get(header.group(1), header.group(1))
        key = line.split("=", 1)[0].strip() if "=" in line and not header else ""
        f = by_path.get(f"{section}.{key}")
        if f is not None:
            parts = [f"+-{_percent(f.error)}"] if f.error is not None else []
            if f.residual is not None:
                parts.append(f"residual {_percent(f.residual)}")
            parts.append(f.source if f.measured else f"not measured: {f.note}")
            if f.measured and f.note:
                parts.append(f.note)
            if f.lower_bound:
                parts.append("a lower bound")
            line = f"{line}  # {'; '.join(p for p in parts if p)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


__all__ = ["Fitted", "LinearFit", "linear_fit", "search_fit", "fit_platform", "fitted_table", "annotate_toml",
           "format_value", "UNMEASURABLE_RATE"]
