"""Plots, Perfetto traces and the explanation of what bounded a run."""

import json

import pytest

from halsim.backends.cpu import CpuDevice
from halsim.engine import Engine
from halsim.explain import bottlenecks, critical_path, explain_trace
from halsim.files import MemoryFile
from halsim.perfetto import write_perfetto
from halsim.plotting import plot_memory, plot_trace
from halsim.policies import parse_policy
from halsim.request import SourceInfo, request_from_tensors
from halsim.sim import simulate

from sim_helpers import MiB, iree_request, make_request, toy_platform


@pytest.fixture(scope="module")
def streaming():
    return simulate(iree_request(), "dgpu-pcie4", "streaming:chunk=64MiB,slots=1,readers=1")


def test_plot_writes_a_small_png(streaming, tmp_path):
    path = plot_trace(streaming.trace, tmp_path / "run.png", title="IREE streaming")
    body = path.read_bytes()
    assert body.startswith(b"\x89PNG") and len(body) < 300_000
    assert streaming.plot(tmp_path / "via-report.png").exists()


def test_memory_comparison_plot(streaming, tmp_path):
    staged = simulate(iree_request(), "dgpu-pcie4", "staged")
    path = plot_memory({"staged": staged.trace, "streaming": streaming.trace}, tmp_path / "memory.png")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_perfetto_has_a_track_per_lane_and_memory_counters(streaming, tmp_path):
    path = write_perfetto({"run": streaming.trace}, tmp_path / "trace.json")
    events = json.loads(path.read_text())["traceEvents"]
    names = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert set(streaming.trace.lanes) <= names
    slices = [e for e in events if e["ph"] == "X"]
    assert len(slices) == len(streaming.trace.spans)
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in slices)
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert {"memory staging", "memory device/0"} <= counters
    # Slices on one track never overlap (tracks must nest).
    by_track = {}
    for e in slices:
        by_track.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_track.values():
        spans.sort()
        assert all(b[0] >= a[1] - 1e-6 for a, b in zip(spans, spans[1:]))
    assert streaming.to_perfetto(tmp_path / "via-report.json").exists()


def test_overlapping_spans_get_extra_tracks(tmp_path):
    r = simulate(make_request([8 * MiB] * 4), "h100-pcie5", "direct:chunk=8MiB,readers=4")
    events = json.loads(write_perfetto(r.trace, tmp_path / "t.json").read_text())["traceEvents"]
    names = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert {"direct/d0", "direct/d0 #2"} <= names


def test_explain_shares_add_up_and_name_the_bound(streaming):
    shares = bottlenecks(streaming.trace, streaming.plan)
    assert sum(shares.values()) == pytest.approx(1.0)
    # Serial IREE streaming on PCIe 4: reading the page cache dominates, then the link.
    names = list(shares)
    assert names[0] == "page cache (one thread)" and "link/d0/h2d" in names
    text = explain_trace(streaming.trace, streaming.plan)
    assert text.startswith("page cache (one thread)") and "%" in text
    assert streaming.explain().startswith("page cache")


def test_explain_finds_the_drive_on_a_cold_file():
    r = simulate(iree_request(page_cached=False), "h100-pcie5", "streaming:chunk=16MiB,slots=4,readers=4")
    assert next(iter(bottlenecks(r.trace, r.plan))) == "storage"


def test_explain_finds_the_link_when_reads_are_fast():
    r = simulate(make_request([16 * MiB] * 16), toy_platform(), "streaming:chunk=16MiB,slots=8,readers=4")
    assert next(iter(bottlenecks(r.trace, r.plan))) == "link/d0/h2d"


def test_critical_path_runs_back_to_back(streaming):
    path = critical_path(streaming.trace, streaming.plan)
    assert path[-1].end == pytest.approx(streaming.trace.end)
    for a, b in zip(path, path[1:]):
        assert b.start >= a.end - 1e-12


def test_explain_works_on_real_traces():
    data = bytes(range(256)) * 4096
    file = MemoryFile(data)
    request = request_from_tensors(SourceInfo.of(file), [type("T", (), dict(
        name="a", offset=0, nbytes=len(data), dtype="U8", shape=(len(data),)))()])
    device = CpuDevice()
    plan = parse_policy("streaming:chunk=64KiB,slots=2,readers=1").plan(request, device.caps)
    result = Engine().run(plan, file, [device])
    shares = bottlenecks(result.trace, plan)
    assert shares and sum(shares.values()) == pytest.approx(1.0)
    assert set(shares) <= {"file read", "copy to device", "idle (between steps)", "device buffer allocation"}
    result.free()


def test_explain_of_nothing():
    from halsim.trace import Trace

    assert explain_trace(Trace()) == "nothing ran"
