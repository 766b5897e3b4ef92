"""halsim.noise: how well a perfect model could score against a few real runs of each case."""

from __future__ import annotations

import numpy as np
import pytest

from halsim.noise import noise_floor

TARGETS = (0.05, 0.15)


def test_runs_that_never_vary_leave_a_perfect_model_nothing_to_miss():
    got = noise_floor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0, 2.0]], TARGETS, draws=500)
    assert got is not None and got.median == 0.0 and got.worst == 0.0 and got.meets == 1.0


def test_the_floor_grows_with_the_spread_and_shrinks_with_more_runs():
    steady = [[1.0, 1.01, 0.99]] * 15
    calm = noise_floor(steady, TARGETS, draws=2000)
    noisy = noise_floor(steady + [[1.0, 1.3, 0.75]], TARGETS, draws=2000)
    assert noisy.worst > calm.worst * 3 and noisy.meets < calm.meets
    assert max(noisy.by_case) == noisy.by_case[-1]  # the wild case misses most
    # The same spread measured by five runs instead of three: the median of five lies nearer the truth.
    three, five = [0.9, 1.0, 1.1], [0.9, 0.9, 1.0, 1.1, 1.1]
    by3 = noise_floor([three], TARGETS, draws=4000).median / np.std(np.log(three), ddof=1)
    by5 = noise_floor([five], TARGETS, draws=4000).median / np.std(np.log(five), ddof=1)
    assert by5 < by3


def test_a_floor_is_repeatable_and_needs_a_spread_and_positive_times():
    runs = [[0.5, 0.55, 0.6], [1.0, 1.2, 0.9]]
    assert noise_floor(runs, TARGETS, seed=3) == noise_floor(runs, TARGETS, seed=3)
    assert noise_floor([[1.0], [2.0]], TARGETS) is None  # one run a case: no spread known
    with pytest.raises(ValueError, match="positive"):
        noise_floor([[1.0, 0.0]], TARGETS)


def test_more_rounds_at_the_same_spread_lower_the_floor_and_fewer_rounds_are_refused():
    runs = [[0.9, 1.0, 1.1, 0.95, 1.05], [2.0, 2.3, 1.8, 2.1, 1.9]]
    as_run = noise_floor(runs, TARGETS, draws=3000)
    assert noise_floor(runs, TARGETS, draws=3000, rounds=5) == as_run  # as many as ran: the same draws
    ten = noise_floor(runs, TARGETS, draws=3000, rounds=10)
    assert ten.median < as_run.median and ten.worst < as_run.worst and ten.meets >= as_run.meets
    with pytest.raises(ValueError, match="rounds=0"):
        noise_floor(runs, TARGETS, rounds=0)


def test_cases_far_apart_keep_their_order_and_close_ones_swap_with_the_noise():
    apart = noise_floor([[1.0, 1.02, 0.98], [2.0, 2.04, 1.96], [4.0, 4.1, 3.9]], TARGETS, draws=2000)
    assert apart.same_order == 1.0 and apart.tau == 1.0 and apart.swaps == ()
    # Two cases 2 % apart, each spread by about 10 %: the drawn medians swap them often, never always.
    close = noise_floor([[1.0, 1.1, 0.9, 1.05, 0.95], [1.02, 1.12, 0.92, 1.07, 0.97]], TARGETS, draws=4000)
    assert 0.2 < close.same_order < 0.8 and -1.0 < close.tau < 1.0
    assert close.swaps == ((0, 1, pytest.approx(1 - close.same_order)),)
    # Within the tie a perfect model predicts them equal: no order to miss.
    tied = noise_floor([[1.0, 1.1, 0.9], [1.004, 1.1, 0.9]], TARGETS, draws=500)
    assert tied.same_order == 1.0
    more = noise_floor([[1.0, 1.1, 0.9, 1.05, 0.95], [1.02, 1.12, 0.92, 1.07, 0.97]], TARGETS, draws=4000, rounds=40)
    assert more.same_order > close.same_order  # more rounds pin the medians down
