"""The engine's dispatcher: one serial host thread, ``host.step_overhead`` per step, shared by every GPU."""

import pytest

from halsim.engine import Engine
from halsim.explain import bottlenecks, explain_trace
from halsim.invariants import check_trace
from halsim.plan import Limits, Op, Plan, Step
from halsim.platform import load_platform
from halsim.policies import StreamingPolicy, parse_policy
from halsim.request import BufferSpec, SourceInfo, UploadRequest
from halsim.sim import Simulator
from halsim.sim.dispatch import ENGINE_LANE

from sim_helpers import MiB, make_request, toy_platform

US = 1e-6


def empty_reads(n: int, devices: int = 1) -> Plan:
    """``n`` reads of zero bytes per device, all ready at once, nothing else to wait for."""
    buffers = tuple(BufferSpec(f"b{d}", 0, d) for d in range(devices))
    request = UploadRequest(SourceInfo("empty", 0, 4096, True), buffers, ())
    steps = tuple(Step(k, Op.READ, k % devices, 0, file_offset=0) for k in range(n * devices))
    policy = StreamingPolicy(chunk=1, slots=1)
    return Plan(policy, policy, request, steps, (), (), Limits(readers=n * devices))


def run(platform, plan, devices: int = 1, mode: str = "overlapped"):
    sim = Simulator(platform)
    result = Engine(mode).run(plan, None, [sim.device(d) for d in range(devices)])
    return sim, result


def engine_spans(result):
    return sorted((s for s in result.trace.spans if s.lane == ENGINE_LANE), key=lambda s: s.start)


def test_platforms_read_the_overhead_as_a_duration():
    p = toy_platform(host__step_overhead="80us")
    assert p.host.step_overhead == pytest.approx(80 * US)
    assert toy_platform().host.step_overhead == 0.0  # the default: free
    assert 'step_overhead = "80us"' in p.to_toml()


@pytest.mark.parametrize("mode", ["overlapped", "serial"])
def test_steps_of_no_bytes_take_n_times_the_overhead(mode):
    n = 50
    _, result = run(toy_platform(host__step_overhead="80us"), empty_reads(n), mode=mode)
    assert result.seconds == pytest.approx(n * 80 * US, rel=1e-9)
    spans = engine_spans(result)
    assert len(spans) == n and all(s.seconds == pytest.approx(80 * US) for s in spans)
    assert all(a.end == pytest.approx(b.start, abs=1e-12) for a, b in zip(spans, spans[1:]))  # back to back


def test_steps_queue_for_the_dispatcher_in_submission_order():
    _, result = run(toy_platform(host__step_overhead="10us"), empty_reads(20))
    assert [s.step for s in engine_spans(result)] == list(range(20))  # the engine submits lowest id first
    starts = {s.step: s.start for s in result.trace.spans if s.lane.startswith("read/")}
    for span in engine_spans(result):
        assert starts[span.step] == pytest.approx(span.end)  # each step starts as its dispatch ends


def test_two_gpus_share_one_dispatcher():
    n = 30
    p = toy_platform(gpus=2, host__step_overhead="50us")
    sim, result = run(p, empty_reads(n, devices=2), devices=2)
    assert sim.device(0).simulator.dispatcher is sim.device(1).simulator.dispatcher
    assert result.seconds == pytest.approx(2 * n * 50 * US, rel=1e-9)  # not n x 50us: one thread for both
    spans = engine_spans(result)
    assert {s.device for s in spans} == {0, 1}
    assert all(a.end <= b.start + 1e-12 for a, b in zip(spans, spans[1:]))  # never two at once


def events(platform, plan):
    sim = Simulator(platform)
    first = next(sim.env._eid)
    result = Engine().run(plan, None, [sim.device(0)])
    return sim, result, next(sim.env._eid) - first - 1


def test_no_overhead_no_dispatcher_no_spans_no_events():
    free_sim, free, free_events = events(toy_platform(), empty_reads(40))
    assert free_sim.dispatcher is None
    assert ENGINE_LANE not in free.trace.lanes and free.seconds == 0
    assert free_events == 0  # reads of nothing: no event at all
    _, costly, costly_events = events(toy_platform(host__step_overhead="1us"), empty_reads(40))
    assert costly_events == 40  # one timeout per step, nothing else
    assert len(engine_spans(costly)) == 40


def test_an_upload_through_the_dispatcher_keeps_the_invariants():
    p = toy_platform(host__step_overhead="200us")
    plan = parse_policy("streaming:chunk=1MiB,slots=4,readers=2").plan(make_request([8 * MiB] * 8), p.caps(0))
    sim, result, _ = events(p, plan)
    check_trace(plan, result.trace)  # a step's dispatch counts as its start: never before its dependencies
    assert len(engine_spans(result)) == len(plan.steps)


def test_hardware_and_dispatch_overlap():
    """The dispatcher hands the next step over while earlier ones move bytes: the run takes
    about the longer of the two, not their sum."""
    request = make_request([64 * MiB] * 4)
    spec = "streaming:chunk=4MiB,slots=4,readers=2"
    _, free = run(toy_platform(), parse_policy(spec).plan(request, toy_platform().caps(0)))
    steps = len(free.plan.steps)
    small = toy_platform(host__step_overhead="1us")
    _, cheap = run(small, parse_policy(spec).plan(request, small.caps(0)))
    # Mostly hidden under the bytes: only hand-overs on the critical path show.
    assert free.seconds < cheap.seconds < free.seconds + 0.5 * steps * US
    big = toy_platform(host__step_overhead="10ms")
    _, slow = run(big, parse_policy(spec).plan(request, big.caps(0)))
    assert steps * 10e-3 <= slow.seconds < steps * 10e-3 + free.seconds


def test_explain_names_the_engine_when_it_dominates():
    request = make_request([16 * MiB] * 4)
    p = toy_platform(host__step_overhead="500us")  # a 1 MiB step moves in 1 ms at 1 GB/s; 128 steps
    _, result = run(p, parse_policy("streaming:chunk=1MiB,slots=8,readers=4").plan(request, p.caps(0)))
    shares = bottlenecks(result.trace, result.plan)
    assert next(iter(shares)) == "engine dispatch"
    assert explain_trace(result.trace, result.plan).startswith("engine dispatch")
    assert sum(shares.values()) == pytest.approx(1.0)
    # A cheap dispatcher is not named at all.
    cheap = toy_platform(host__step_overhead="1us")
    _, quick = run(cheap, parse_policy("streaming:chunk=1MiB,slots=8,readers=4").plan(request, cheap.caps(0)))
    assert bottlenecks(quick.trace, quick.plan).get("engine dispatch", 0.0) < 0.05


def test_the_h100_small_chunk_run_is_dispatch_bound():
    """h100-pcie5's 76us per step: 1 MiB chunks are bound by the engine, 16 MiB ones by the hardware."""
    p = load_platform("h100-pcie5")
    assert p.host.step_overhead == pytest.approx(76 * US)
    request = make_request([64 * MiB] * 16)
    for spec, engine_bound in (("streaming:chunk=1MiB,slots=8,readers=4", True),
                               ("streaming:chunk=16MiB,slots=8,readers=4", False)):
        _, result = run(p, parse_policy(spec).plan(request, p.caps(0)))
        share = bottlenecks(result.trace, result.plan).get("engine dispatch", 0.0)
        assert (share > 0.9) if engine_bound else (share < 0.2), (spec, share)


# ---------------------------------------------------------------- a cost by threads at once

CURVE = [[2, "20us"], [6, "60us"], [10, "100us"]]


def test_a_step_costs_more_with_more_threads_at_once():
    host = toy_platform(host__step_overhead="20us", host__step_overhead_curve=CURVE).host
    assert host.step_overhead_curve == ((2, pytest.approx(20 * US)), (6, pytest.approx(60 * US)),
                                        (10, pytest.approx(100 * US)))
    assert host.step_cost(1) == pytest.approx(20 * US)  # flat past the ends
    assert host.step_cost(4) == pytest.approx(40 * US)  # linear in the thread count between points
    assert host.step_cost(8) == pytest.approx(80 * US)
    assert host.step_cost(64) == pytest.approx(100 * US)
    assert toy_platform(host__step_overhead="30us").host.step_cost(64) == pytest.approx(30 * US)  # no curve


def test_a_curve_alone_makes_a_dispatcher():
    p = toy_platform(host__step_overhead_curve=[[2, "0us"], [4, "10us"]])
    assert p.host.step_overhead == 0 and p.host.dispatches and Simulator(p).dispatcher is not None
    assert not toy_platform(host__step_overhead_curve=[[2, 0], [4, 0]]).host.dispatches


@pytest.mark.parametrize("curve, problem", [
    ([[4, "10us"], [2, "20us"]], "increasing order"), ([[2, "10us"], [2, "20us"]], "each once"),
    ([[0, "10us"]], "at least 1"), ([[2, -1e-6]], "must not be negative")])
def test_a_bad_curve_is_refused_by_name(curve, problem):
    with pytest.raises(Exception, match=problem):
        toy_platform(host__step_overhead_curve=curve)


def test_the_curve_survives_toml(tmp_path):
    p = toy_platform(host__step_overhead="100us", host__step_overhead_curve=CURVE)
    path = tmp_path / "p.toml"
    path.write_text(p.to_toml())
    assert load_platform(path) == p


@pytest.mark.parametrize("readers", [1, 4, 8])
def test_each_step_of_a_plan_costs_what_its_threads_at_once_cost(readers):
    p = toy_platform(host__step_overhead_curve=CURVE)
    plan = parse_policy(f"streaming:chunk=1MiB,slots={2 * readers},readers={readers}").plan(
        make_request([8 * MiB] * 4), p.caps(0))
    threads = plan.threads_at_once()
    assert threads == readers + 1 + 1  # the readers, the queue's copy thread, the engine
    _, result = run(p, plan)
    spans = engine_spans(result)
    assert len(spans) == len(plan.steps)
    assert all(s.seconds == pytest.approx(p.host.step_cost(threads)) for s in spans)
