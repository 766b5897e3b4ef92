"""The noise floor of a comparison: how well a perfect model could score against a few real runs.

A comparison scores each prediction against the median of a case's few real
runs, and that median is a sample too: a model that predicted every case's
true time exactly would still miss it. Each case's spread is taken from its
real runs (the standard deviation of their logarithms); as many runs are drawn
again from a log-normal of that spread around the truth, and the truth is
scored against their median, many times over. What comes out is the median and
the worst |error| such a model would expect, and how often it would meet a
pair of targets. Three to five runs give each spread loosely, and one outlying
run widens it.

Resampling the real runs themselves (a bootstrap) was tried first: with so few
runs it puts an outlier into the median far more often than new runs would,
and on the H100 runs of 2026-12-05 it put a perfect model's worst above the
real model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseFloor:
    median: float  # a perfect model's expected median |error| over the cases
    worst: float  # its expected worst |error|
    meets: float  # the share of draws in which it meets both targets
    by_case: tuple[float, ...]  # each case's median |error| over the draws

    def describe(self) -> str:
        return f"a perfect model against these real runs: median {self.median:.1%}, worst {self.worst:.1%}"

    def to_dict(self) -> dict[str, float]:
        return {"median_abs_error": self.median, "worst_abs_error": self.worst, "meets_targets": self.meets}


def noise_floor(runs: Sequence[Sequence[float]], targets: tuple[float, float], draws: int = 4000,
                seed: int = 0, rounds: int | None = None) -> NoiseFloor | None:
    """A perfect model's expected scores against each case's real run times (seconds, all positive);
    ``targets``: the median and worst |error| it is checked against. ``rounds``: score against
    medians of that many runs a case at each case's measured spread instead of as many as it ran
    (what more rounds would buy). None where no case ran twice, so no spread is known."""
    if not any(len(times) > 1 for times in runs):
        return None
    if any(not times or min(times) <= 0 for times in runs):
        raise ValueError("every case needs positive real run times")
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds={rounds}: want at least one run a case")
    rng = np.random.default_rng(seed)
    errors = np.empty((draws, len(runs)))
    for j, times in enumerate(runs):
        logs = np.log(np.asarray(times, dtype=float))
        spread = float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0
        drawn = np.median(rng.normal(0.0, spread, size=(draws, rounds or len(logs))), axis=1)
        errors[:, j] = np.abs(np.expm1(-drawn))  # truth / measured median, less one
    medians, worsts = np.median(errors, axis=1), errors.max(axis=1)
    return NoiseFloor(float(medians.mean()), float(worsts.mean()),
                      float(np.mean((medians <= targets[0]) & (worsts <= targets[1]))),
                      tuple(float(e) for e in np.median(errors, axis=0)))
