"""The import lane waits longer between windows that hand the engine more copies
(HostMemory.import_handover_per_copy; calibration fits it from the import upload run with
several tensors a window against one)."""

import dataclasses
import statistics

import pytest

from halsim.calibrate import Config, SimTarget, calibrate, measure
from halsim.engine import Engine
from halsim.errors import PlatformError
from halsim.fit import fit_platform
from halsim.platform import load_platform
from halsim.plan import Op
from halsim.policies import ImportPolicy
from halsim.request import BufferSpec, SourceInfo, Transfer, UploadRequest
from halsim.sim import Simulator

from sim_helpers import MiB, make_request, toml_round_trip, toy_platform

PER_COPY = 200e-6


def lane_gaps(platform, tensors_a_window: int) -> list[float]:
    """The import lane's gaps in an import upload of four 64 MiB windows of ``tensors_a_window`` tensors."""
    steps, _ = lane_steps(platform, make_request([64 * MiB // tensors_a_window] * (4 * tensors_a_window)))
    return [gap for *_, gap in steps[1:]]


def lane_steps(platform, request, release: str = "rolling") -> tuple[list[tuple[str, int, float]], int]:
    """The import lane's steps in order as (op, window, gap before it), and the plan's in-place copies."""
    device = Simulator(platform).device(0)
    plan = ImportPolicy(piece=64 * MiB, release=release).plan(request, device.caps)
    result = Engine("overlapped").run(plan, None, [device])
    result.free()
    lane = sorted((s for s in result.trace.spans if s.lane.startswith("import/") and s.op in ("import", "unimport")),
                  key=lambda s: s.start)
    steps = [(s.op, plan.steps[s.step].window, s.start - (before.end if before else 0.0))
             for before, s in zip([None] + lane, lane)]
    in_place_copies = sum(1 for s in plan.steps if s.op is Op.COPY_IMPORTED and plan.windows[s.window].in_place)
    return steps, in_place_copies


def with_handover(per_copy: float):
    # Copies far faster than registrations: the lane never waits on them, only on its hand-overs.
    return toy_platform(host__import_handover_per_copy=per_copy, host__step_overhead="20us", links__h2d="1TB/s")


def test_each_further_copy_in_a_window_delays_the_lane():
    plain = lane_gaps(with_handover(0.0), 4)
    slow = lane_gaps(with_handover(PER_COPY), 4)
    assert len(plain) == len(slow) > 4
    # Every registration and release after the first registration waits three times the cost first
    # (a step that queued behind the copies for its dispatch now waits that meanwhile) ...
    assert all(gap >= 3 * PER_COPY for gap in slow[:-1])
    assert statistics.median(slow) - statistics.median(plain) == pytest.approx(3 * PER_COPY, abs=1e-9)
    # ... but the last release, after every copy has run, has no copies to wait on.
    assert slow[-1] < PER_COPY


def test_the_wait_follows_the_copies_out_of_the_window_registered_last():
    # Windows of one tensor and of four in turn: a step waits 3 x the cost only after the lane
    # registered a window of four (whose copies then stream), not because of its own window.
    steps, _ = lane_steps(with_handover(PER_COPY), make_request(([64 * MiB] + [16 * MiB] * 4) * 2))
    registered_last = None
    checked = set()
    for op, window, gap in steps[1:]:
        four_streaming = registered_last in (1, 3)
        assert (gap >= 3 * PER_COPY) == four_streaming or (op == "unimport" and window == 3), (op, window, gap)
        checked.add(four_streaming)
        if op == "import":
            registered_last = window
    assert checked == {True, False}


def test_releases_after_the_last_copy_do_not_wait():
    # Released at the end: every copy has run, so there is nothing left to hand over.
    steps, _ = lane_steps(with_handover(PER_COPY), make_request([16 * MiB] * 16), release="at_end")
    imports = [gap for op, _, gap in steps[1:] if op == "import"]
    releases = [gap for op, _, gap in steps if op == "unimport"]
    assert len(imports) == 3 and all(gap >= 3 * PER_COPY for gap in imports)
    assert len(releases) == 4 and all(gap < PER_COPY for gap in releases)


def test_windows_imported_in_place_do_not_wait():
    # An integrated GPU maps its windows, one per contiguous run of the file (here four runs of four
    # tensors, a page apart); tensors filled in two pieces are copies out of them.
    half, group = 8 * MiB, 8 * 8 * MiB + 4096
    buffers = tuple(BufferSpec(f"t{i}", 2 * half) for i in range(16))
    transfers = tuple(Transfer(i // 4 * group + (i % 4 * 2 + k) * half, i, k * half, half)
                      for i in range(16) for k in (0, 1))
    request = UploadRequest(SourceInfo("split.bin", 4 * group, 4096, True), buffers, transfers)
    platform = toy_platform(kind="integrated", host__import_handover_per_copy=PER_COPY, host__step_overhead="20us")
    steps, in_place_copies = lane_steps(platform, request)
    plain, _ = lane_steps(toy_platform(kind="integrated", host__step_overhead="20us"), request)
    assert in_place_copies > 4 and len({window for _, window, _ in steps}) == 4
    assert [gap for *_, gap in steps] == pytest.approx([gap for *_, gap in plain], abs=1e-12)


def test_a_window_of_one_tensor_is_not_delayed():
    assert lane_gaps(with_handover(PER_COPY), 1) == pytest.approx(lane_gaps(with_handover(0.0), 1), abs=1e-12)


@pytest.mark.parametrize("per_copy", [30e-6, 0.0])
def test_calibration_gives_the_hand_over_back(per_copy):
    base = load_platform("h100-pcie5")
    host = base.host.model_copy(update={"import_handover_per_copy": per_copy})
    result = calibrate(Simulator(base.model_copy(update={"host": host})).device(0), Config.quick())
    fitted = result.parameter("host.import_handover_per_copy")
    assert fitted.measured and "4 tensors" in fitted.source
    assert fitted.value == pytest.approx(per_copy, rel=0.02, abs=1e-7)
    assert result.platform.host.import_handover_per_copy == pytest.approx(per_copy, rel=0.02, abs=1e-7)


def test_without_several_tensors_a_window_it_is_not_measured():
    base = load_platform("h100-pcie5")
    host = base.host.model_copy(update={"import_handover_per_copy": 30e-6})
    measured = measure(SimTarget.of(base.model_copy(update={"host": host})), Config.quick())
    one_tensor = [pt for pt in measured.points if not (pt.probe.bench == "register_in_upload" and pt.probe.width > 1)]
    assert len(one_tensor) < len(measured.points)
    fitted = fit_platform(dataclasses.replace(measured, points=one_tensor)).parameter("host.import_handover_per_copy")
    assert not fitted.measured and fitted.value == 0.0 and "several tensors" in fitted.note


def test_round_trips_through_toml(tmp_path):
    toml_round_trip(with_handover(45e-6), tmp_path)


def test_a_negative_hand_over_is_refused():
    with pytest.raises(PlatformError, match="toy: host.import_handover_per_copy: duration must not be negative"):
        with_handover(-1e-6)
