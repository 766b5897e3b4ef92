"""Bytes in = bytes out on every lane; memory counters never negative and back to zero; determinism."""

from hypothesis import given, settings
from hypothesis import strategies as st

from halsim.engine import Engine
from halsim.policies import parse_policy
from halsim.sim import Simulator
from halsim.sim.readahead import READ_AHEAD_OP
from halsim.trace import Trace

from sim_helpers import MiB, make_request

KiB = 1 << 10


def run(platform, request, spec, mode="overlapped"):
    sim = Simulator(platform)
    targets = [sim.device(i) for i in request.devices]
    plan = parse_policy(spec).plan(request, [d.caps for d in targets])
    result = Engine(mode).run(plan, None, targets)
    result.free()
    return result.trace


def lane_bytes(trace: Trace, prefix: str, op: str | None = None) -> int:
    return sum(s.nbytes for s in trace.spans if s.lane.startswith(prefix) and (op is None or s.op == op))


def check_counters(trace: Trace) -> None:
    for name, series in trace.counters.items():
        assert all(level >= 0 for _, level in series), name
        assert series[-1][1] == 0, name
        times = [t for t, _ in series]
        assert times == sorted(times), name


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 3 * MiB), min_size=1, max_size=12),
    chunk=st.sampled_from([4 * KiB, 100_000, 1 * MiB, 4 * MiB]),
    slots=st.integers(1, 6),
    readers=st.integers(1, 4),
    queues=st.integers(1, 3),
    platform=st.sampled_from(["h100-pcie5", "dgpu-pcie4", "igpu-unified"]),
    page_cached=st.booleans(),
    mode=st.sampled_from(["overlapped", "serial"]),
)
def test_streaming_conserves_bytes(sizes, chunk, slots, readers, queues, platform, page_cached, mode):
    request = make_request(sizes, page_cached=page_cached, host_alignment=0)
    spec = f"streaming:chunk={chunk},slots={slots},readers={readers},queues={queues}"
    trace = run(platform, request, spec, mode)
    total = request.total_bytes
    assert lane_bytes(trace, "read/", "read") == total
    assert lane_bytes(trace, "copy/") == total
    assert lane_bytes(trace, "link/") == total
    # The drive's own reads, and what the kernel read ahead of them (copied out of the page cache if used).
    ahead = lane_bytes(trace, "storage", READ_AHEAD_OP)
    assert lane_bytes(trace, "memcpy") + lane_bytes(trace, "storage") - ahead == total
    if not page_cached:
        assert lane_bytes(trace, "memcpy") <= ahead
    else:
        assert ahead == 0
    assert trace.peak("staging") <= slots * chunk
    check_counters(trace)


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 2 * MiB), min_size=1, max_size=8),
    spec=st.sampled_from(["staged:chunk=1MiB", "import:piece=1MiB", "direct:chunk=512KiB,readers=2",
                          "import:piece=64KiB,queues=2"]),
    platform=st.sampled_from(["h100-pcie5", "igpu-unified", "dgx-h100"]),
)
def test_other_policies_conserve_bytes(sizes, spec, platform):
    request = make_request(sizes, start=4096)
    trace = run(platform, request, spec)
    total = request.total_bytes
    delivered = sum(s.nbytes for s in trace.spans
                    if s.op in ("copy", "copy_imported", "bind", "direct") and not s.lane.startswith(("link", "storage")))
    assert delivered == total
    check_counters(trace)


def test_same_inputs_give_the_same_trace():
    request = make_request([3 * MiB, 5 * MiB, 7 * MiB] * 5)
    spec = "streaming:chunk=1MiB,slots=3,readers=3,queues=2"
    a = run("h100-pcie5", request, spec)
    b = run("h100-pcie5", request, spec)
    assert a.spans == b.spans
    assert a.counters == b.counters
    assert a.meta["sim_bound"] == b.meta["sim_bound"]


def test_downloads_conserve_bytes_too():
    request = make_request([3 * MiB, 1 * MiB, 2 * MiB]).reversed()
    trace = run("dgpu-pcie4", request, "streaming:chunk=1MiB,slots=2,readers=2")
    assert lane_bytes(trace, "read/", "write") == request.total_bytes
    assert lane_bytes(trace, "link/d0/d2h") == request.total_bytes
    check_counters(trace)
