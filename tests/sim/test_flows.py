"""Flows in simpy time: exact completion times, recomputation on start and end."""

import math

import pytest
import simpy

from halsim.sim.flows import FlowNetwork


@pytest.fixture
def env():
    return simpy.Environment()


def link(env, bandwidth=2e9):
    net = FlowNetwork(env)
    net.resource("link", bandwidth)
    return net, net.flow_class([("link", 1)])


def test_one_flow_takes_bytes_over_bandwidth(env):
    net, cls = link(env)
    flow = net.start(cls, 4e9)
    ended = []
    flow.done.callbacks.append(lambda e: ended.append(env.now))
    net.run()
    assert ended == [pytest.approx(2.0)]


def test_two_equal_flows_each_get_half(env):
    net, cls = link(env)
    ended = []
    for _ in range(2):
        net.start(cls, 1e9).done.callbacks.append(lambda e: ended.append(env.now))
    net.run()
    assert ended == [pytest.approx(1.0), pytest.approx(1.0)]


def test_rates_recomputed_when_a_flow_joins_and_leaves(env):
    net, cls = link(env)
    ended = {}

    def later():
        yield env.timeout(0.5)  # the first flow has moved 1 GB alone by now
        f = net.start(cls, 1e9)
        f.done.callbacks.append(lambda e: ended.setdefault("second", env.now))

    first = net.start(cls, 3e9)
    first.done.callbacks.append(lambda e: ended.setdefault("first", env.now))
    env.process(later())
    net.run()
    # From 0.5 s both move at 1 GB/s: the second's 1 GB ends at 1.5 s, the first has 1 GB left then, alone at 2 GB/s.
    assert ended["second"] == pytest.approx(1.5)
    assert ended["first"] == pytest.approx(2.0)


def test_a_flow_records_what_bound_it(env):
    net = FlowNetwork(env)
    net.resource("host", 10e9)
    net.resource("link", 2e9)
    thread = net.flow_class([("host", 2)], cap=1e9, label="thread")
    dma = net.flow_class([("host", 1), ("link", 1)])
    a, b = net.start(thread, 1e9), net.start(dma, 1e9)
    net.run()
    assert a.bound == {"thread": pytest.approx(1.0)}
    assert b.bound == {"link": pytest.approx(0.5)}
    assert net.solo_rate(thread) == 1e9 and net.solo_rate(dma) == 2e9


def test_bytes_are_conserved_per_resource(env):
    net = FlowNetwork(env)
    net.resource("host", 5e9)
    memcpy = net.flow_class([("host", 2)])
    dma = net.flow_class([("host", 1)])
    for n in (3e8, 7e8, 1e9):
        net.start(memcpy, n)
        net.start(dma, n)
    net.run()
    assert net.bytes_through[0] == pytest.approx(3 * 2e9)
    assert not net.flows


def test_zero_byte_flow_is_done_at_once(env):
    net, cls = link(env)
    flow = net.start(cls, 0)
    assert flow.done.triggered


def test_run_until_stops_midway(env):
    net, cls = link(env)
    flow = net.start(cls, 4e9)
    net.run(until=1.0)
    assert env.now == pytest.approx(1.0)
    assert not flow.done.processed
    net.run()
    assert env.now == pytest.approx(2.0)


def test_bad_network_definitions(env):
    net = FlowNetwork(env)
    with pytest.raises(ValueError):
        net.resource("zero", 0)
    with pytest.raises(ValueError):
        net.flow_class([], cap=math.inf)


def test_a_stopped_flow_ends_with_the_bytes_it_moved_and_frees_its_share(env):
    net, cls = link(env)
    first, second = net.start(cls, 4e9), net.start(cls, 4e9)
    ended = {}
    second.done.callbacks.append(lambda e: ended.setdefault("second", env.now))
    net.run(until=1.0)  # both at 1 GB/s: 1e9 each so far
    assert net.stop(first) == pytest.approx(1e9)
    assert first.done.triggered and net.stop(first) == pytest.approx(1e9)  # stopping again changes nothing
    net.run()
    assert ended["second"] == pytest.approx(1.0 + 3e9 / 2e9)  # the rest at the whole link
    assert net.bytes_through == [pytest.approx(5e9)]
