"""The noise floor of a comparison: how well a perfect model could score against a few real runs.

A comparison scores each prediction against the median of a case's few real
runs, and that median is a sample too: a model that predicted every case's
true time exactly would still miss it. Each case's spread is taken from its
real runs (the standard deviation of their logarithms); as many runs are drawn
again from a log-normal of that spread around the truth, and the truth is
scored against their median, many times over. What comes out is the median and
the worst |error| such a model would expect, how often it would meet a pair of
targets, and how often the drawn medians would put the cases in their true
order (the ranking a perfect model predicts), where cases whose times lie close
together swap as often as their spreads let them. Three to five runs give each
spread loosely, and one outlying run widens it.

Resampling the real runs themselves (a bootstrap) was tried first: with so few
runs it puts an outlier into the median far more often than new runs would,
and on the H100 runs of 2026-12-05 it put a perfect model's worst above the
real model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Predictions closer than this (relative) are a tie: neither the simulator nor a perfect model
# orders the pair (halsim.compare.rank counts ties so).
TIE = 0.005


@dataclass(frozen=True)
class NoiseFloor:
    median: float  # a perfect model's expected median |error| over the cases
    worst: float  # its expected worst |error|
    meets: float  # the share of draws in which it meets both targets
    by_case: tuple[float, ...]  # each case's median |error| over the draws
    same_order: float = 1.0  # the share of draws whose medians order every pair as the truths do
    tau: float = 1.0  # the mean Kendall tau-b between the truths and the drawn medians
    swaps: tuple[tuple[int, int, float], ...] = ()  # (case, case, share of draws swapping them), most first

    def describe(self) -> str:
        return (f"a perfect model against these real runs: median {self.median:.1%}, worst {self.worst:.1%}, "
                f"the same order in {self.same_order:.0%} of them (tau-b {self.tau:.2f})")

    def to_dict(self) -> dict[str, float]:
        return {"median_abs_error": self.median, "worst_abs_error": self.worst, "meets_targets": self.meets,
                "same_order": self.same_order, "kendall_tau": self.tau}


def noise_floor(runs: Sequence[Sequence[float]], targets: tuple[float, float], draws: int = 4000,
                seed: int = 0, rounds: int | None = None, tie: float = TIE) -> NoiseFloor | None:
    """A perfect model's expected scores against each case's real run times (seconds, all positive);
    ``targets``: the median and worst |error| it is checked against. ``rounds``: score against
    medians of that many runs a case at each case's measured spread instead of as many as it ran
    (what more rounds would buy). Each case's truth, for the ranking, is the median of its runs;
    truths closer than ``tie`` (relative) are a tie, which a perfect model does not order, and
    always a pass (where :func:`halsim.compare.rank` fails a predicted tie the device tells apart
    beyond the runs' spread: at a 0.5 % tie, a case too rare to draw). None where no case ran
    twice, so no spread is known."""
    if not any(len(times) > 1 for times in runs):
        return None
    if any(not times or min(times) <= 0 for times in runs):
        raise ValueError("every case needs positive real run times")
    if rounds is not None and rounds < 1:
        raise ValueError(f"rounds={rounds}: want at least one run a case")
    rng = np.random.default_rng(seed)
    drawn = np.empty((draws, len(runs)))  # the log of each drawn median over its truth
    for j, times in enumerate(runs):
        logs = np.log(np.asarray(times, dtype=float))
        spread = float(np.std(logs, ddof=1)) if len(logs) > 1 else 0.0
        drawn[:, j] = np.median(rng.normal(0.0, spread, size=(draws, rounds or len(logs))), axis=1)
    errors = np.abs(np.expm1(-drawn))  # truth / measured median, less one
    medians, worsts = np.median(errors, axis=1), errors.max(axis=1)
    same_order, tau, swaps = _ranking_floor([float(np.median(t)) for t in runs], drawn, tie)
    return NoiseFloor(float(medians.mean()), float(worsts.mean()),
                      float(np.mean((medians <= targets[0]) & (worsts <= targets[1]))),
                      tuple(float(e) for e in np.median(errors, axis=0)), same_order, tau, swaps)


def _ranking_floor(truths: list[float], drawn: np.ndarray,
                   tie: float) -> tuple[float, float, tuple[tuple[int, int, float], ...]]:
    """How often medians drawn around ``truths`` (``drawn``: their logs over the truths, a row a draw)
    order every pair the truths tell apart as the truths do, the mean Kendall tau-b, and how often
    each pair swaps."""
    a, b = np.triu_indices(len(truths), k=1)
    true = np.asarray(truths)
    apart = np.abs(true[a] - true[b]) > tie * np.maximum(true[a], true[b])
    measured = np.log(true) + drawn
    agree = np.sign(true[a] - true[b])[apart] * np.sign(measured[:, a] - measured[:, b])[:, apart]
    swapped = (agree < 0).sum(axis=1)
    # tau-b as rank() counts it: the truths' ties are the predicted ties; drawn medians do not tie.
    scale = float(np.sqrt(apart.sum() * len(a)))
    tau = ((agree > 0).sum(axis=1) - swapped) / scale if scale else np.ones(len(drawn))
    by_pair = (agree < 0).mean(axis=0)
    swaps = sorted(((int(i), int(j), float(share)) for i, j, share in zip(a[apart], b[apart], by_pair) if share > 0),
                   key=lambda pair: -pair[2])
    return float(np.mean(swapped == 0)), float(np.mean(tau)), tuple(swaps)
