"""Which pairs of cases the device itself orders: a sign test over their paired rounds.

``halsim compare`` runs the cases round after round, so round k of one case ran
beside round k of every other, under the same load from elsewhere. Of two cases,
the device orders them when one ran faster in so many of their shared rounds that
two cases of equal speed would do so by chance less than :data:`ORDER_ALPHA` of
the time (a two-sided sign test). A ranking is then judged on those pairs only: a
pair that changes places from round to round has no order for the simulator to
get right, and a pair that never does has one, however close the two medians
lie. The half-range overlap the comparison also reports is looser: one outlying
round widens it.

No pair is ordered below :func:`min_rounds` rounds (6 at 5 %): 5 of 5 happens
to equal cases 6 % of the time.

What it cannot tell: each of a comparison's ~120 pairs is tested alone, so two
equally fast cases come out ordered about 2 % of the time at 10 rounds (9 or 10
of 10), and a run that misorders one close pair may have met such a chance.
Where the cases run in the same order every round (``compare(shuffle=False)``,
and every stored run before the twenty-fourth session), a case that always
follows another carries that position into the test, which no simulator
predicts; ``compare`` therefore shuffles the warm cases, and the cold ones,
afresh each round. On the H100 runs 69-79 a pair one run
ordered was ordered the same way by another run in 97 % of cases and never the
opposite way; but of pairs within 10 % of each other, only 10 of 50 (the rest
unordered): close pairs a run orders are mostly that run's own state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ORDER_ALPHA = 0.05


def sign_test(wins: int, rounds: int) -> float:
    """The two-sided sign test's p-value: how likely two equally fast cases are to split ``rounds``
    rounds at least as unevenly as ``wins`` against ``rounds - wins``."""
    if not 0 <= wins <= rounds:
        raise ValueError(f"wins={wins} of rounds={rounds}: want 0 <= wins <= rounds")
    if rounds == 0:
        return 1.0
    most = max(wins, rounds - wins)
    tail = sum(math.comb(rounds, k) for k in range(most, rounds + 1)) / 2 ** rounds
    return min(1.0, 2 * tail)


def min_rounds(alpha: float = ORDER_ALPHA) -> int:
    """The fewest rounds in which a pair can be ordered: one case faster in all of them."""
    rounds = 1
    while sign_test(rounds, rounds) >= alpha:
        rounds += 1
    return rounds


@dataclass(frozen=True)
class RoundOrder:
    first_wins: int  # rounds in which the first case ran faster
    rounds: int  # rounds both ran, less those they tied
    p: float  # the sign test's p-value

    @property
    def ordered(self) -> bool:
        """The device puts one case ahead beyond chance."""
        return self.p < ORDER_ALPHA

    @property
    def first_faster(self) -> bool:
        """The first case ran faster in most rounds (meaningful where :attr:`ordered`)."""
        return 2 * self.first_wins > self.rounds


def round_order(first: Sequence[float], second: Sequence[float]) -> RoundOrder:
    """How two cases' real runs (seconds, in round order) order them, round by round."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} rounds against {len(second)}: rounds pair up only where both cases ran "
                         "every round")
    wins = sum(a < b for a, b in zip(first, second))
    rounds = sum(a != b for a, b in zip(first, second))
    return RoundOrder(wins, rounds, sign_test(wins, rounds))
