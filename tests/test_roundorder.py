"""halsim.roundorder: which pairs the device orders, round by round."""

import math

import pytest

from halsim.roundorder import ORDER_ALPHA, min_rounds, round_order, sign_test


def test_sign_test_matches_the_binomial_tail():
    assert sign_test(10, 10) == pytest.approx(2 / 1024)
    assert sign_test(0, 10) == sign_test(10, 10)  # two-sided
    assert sign_test(9, 10) == pytest.approx(2 * 11 / 1024)
    assert sign_test(5, 10) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(66, 90) == pytest.approx(2 * sum(math.comb(90, k) for k in range(66, 91)) / 2 ** 90)
    with pytest.raises(ValueError, match="wins=11 of rounds=10"):
        sign_test(11, 10)


def test_six_rounds_are_the_fewest_that_order_a_pair():
    assert min_rounds() == 6
    assert sign_test(5, 5) >= ORDER_ALPHA > sign_test(6, 6)
    assert min_rounds(0.01) == 8


def test_rounds_pair_up_by_index():
    # The medians lie 2 % apart, yet b ran faster in every round: the device orders the pair.
    a = [1.00, 1.20, 0.90, 1.10, 1.02, 0.95]
    b = [x * 0.98 for x in a]
    order = round_order(a, b)
    assert (order.first_wins, order.rounds, order.ordered, order.first_faster) == (0, 6, True, False)
    # The same times shuffled against each other: no order.
    assert not round_order(a, b[1:] + b[:1]).ordered
    # Tied rounds count for neither.
    assert round_order([1.0, 2.0], [1.0, 3.0]).rounds == 1
    with pytest.raises(ValueError, match="3 rounds against 2"):
        round_order([1.0, 2.0, 3.0], [1.0, 2.0])
