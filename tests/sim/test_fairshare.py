"""Max-min fair rates: closed forms and the defining properties."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from halsim.sim.fairshare import max_min_rates


def test_two_equal_flows_on_one_link_each_get_half():
    rates, bound = max_min_rates([10.0], [[(0, 1.0)], [(0, 1.0)]], [math.inf, math.inf])
    assert rates == [5.0, 5.0] and bound == [0, 0]


def test_a_capped_flow_leaves_the_rest_to_the_other():
    rates, bound = max_min_rates([10.0], [[(0, 1.0)], [(0, 1.0)]], [2.0, math.inf])
    assert rates == pytest.approx([2.0, 8.0])
    assert bound == [-1, 0]


def test_weights_count_traffic():
    # A memcpy (weight 2) and a DMA (weight 1) on 9 units of memory bandwidth: each moves 3.
    rates, _ = max_min_rates([9.0], [[(0, 2.0)], [(0, 1.0)]], [math.inf, math.inf])
    assert rates == pytest.approx([3.0, 3.0])


def test_bottleneck_moves_to_the_narrowest_resource():
    # Flow 0 crosses A (4) and B (10); flow 1 only B. A binds flow 0 at 4, flow 1 takes B's rest.
    rates, bound = max_min_rates([4.0, 10.0], [[(0, 1.0), (1, 1.0)], [(1, 1.0)]], [math.inf, math.inf])
    assert rates == pytest.approx([4.0, 6.0])
    assert bound == [0, 1]


def test_no_flows():
    assert max_min_rates([1.0], [], []) == ([], [])


flows = st.lists(
    st.tuples(
        st.lists(st.tuples(st.integers(0, 3), st.sampled_from([0.5, 1.0, 2.0, 3.0])), min_size=1, max_size=3,
                 unique_by=lambda p: p[0]),
        st.one_of(st.just(math.inf), st.floats(0.1, 50.0)),
    ),
    min_size=1, max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(capacities=st.lists(st.floats(0.5, 100.0), min_size=4, max_size=4), flows=flows)
def test_allocation_is_feasible_and_max_min_fair(capacities, flows):
    uses = [u for u, _ in flows]
    caps = [c for _, c in flows]
    rates, bound = max_min_rates(capacities, uses, caps)
    load = [0.0] * len(capacities)
    for f, rate in enumerate(rates):
        assert 0 < rate <= caps[f] * (1 + 1e-9)
        for r, w in uses[f]:
            load[r] += w * rate
    for r, used in enumerate(load):
        assert used <= capacities[r] * (1 + 1e-9)
    # Each flow has a bottleneck: its own cap, or a full resource on which no flow is faster.
    for f, rate in enumerate(rates):
        if bound[f] < 0:
            assert rate == pytest.approx(caps[f])
            continue
        r = bound[f]
        assert load[r] == pytest.approx(capacities[r], rel=1e-9)
        others = [rates[g] for g in range(len(rates)) if any(x == r for x, _ in uses[g])]
        assert rate >= max(others) * (1 - 1e-9)
