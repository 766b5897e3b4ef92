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
from halsim.policies import ImportPolicy
from halsim.sim import Simulator

from sim_helpers import MiB, make_request, toml_round_trip, toy_platform

PER_COPY = 200e-6


def lane_gaps(platform, tensors_a_window: int) -> list[float]:
    """The import lane's gaps in an import upload of four 64 MiB windows of ``tensors_a_window`` tensors."""
    sizes = [64 * MiB // tensors_a_window] * (4 * tensors_a_window)
    device = Simulator(platform).device(0)
    plan = ImportPolicy(piece=64 * MiB).plan(make_request(sizes), device.caps)
    result = Engine("overlapped").run(plan, None, [device])
    result.free()
    lane = sorted((s for s in result.trace.spans if s.lane.startswith("import/") and s.op in ("import", "unimport")),
                  key=lambda s: s.start)
    return [b.start - a.end for a, b in zip(lane, lane[1:])]


def with_handover(per_copy: float):
    # Copies far faster than registrations: the lane never waits on them, only on its hand-overs.
    return toy_platform(host__import_handover_per_copy=per_copy, host__step_overhead="20us", links__h2d="1TB/s")


def test_each_further_copy_in_a_window_delays_the_lane():
    plain = lane_gaps(with_handover(0.0), 4)
    slow = lane_gaps(with_handover(PER_COPY), 4)
    assert len(plain) == len(slow) > 4
    # Every registration and release of a window of four copies waits three times the cost first
    # (a step that queued behind the window's copies for its dispatch now waits that meanwhile).
    assert all(gap >= 3 * PER_COPY for gap in slow)
    assert statistics.median(slow) - statistics.median(plain) == pytest.approx(3 * PER_COPY, abs=1e-9)


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
