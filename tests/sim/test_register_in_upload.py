"""Registering inside an upload, copies streaming, costs more than alone
(HostMemory.register_upload_factor, set by hand: calibration does not fit it)."""

import pytest

from halsim.calibrate import Probe, predict
from halsim.engine import Engine
from halsim.policies import ImportPolicy
from halsim.sim import Simulator

from sim_helpers import MiB, make_request, toml_round_trip, toy_platform


def registration_spans(platform):
    sim = Simulator(platform)
    device = sim.device(0)
    plan = ImportPolicy(piece=64 * MiB).plan(make_request([256 * MiB]), device.caps)
    result = Engine("serial").run(plan, None, [device])
    return ([s.seconds for s in result.trace.spans if s.lane.startswith("import/") and s.op == "import"],
            [s.seconds for s in result.trace.spans if s.lane.startswith("import/") and s.op == "unimport"])


def test_an_upload_registers_and_releases_factor_times_slower():
    costs = {"host__register_bandwidth": "10GB/s", "host__unregister_bandwidth": "40GB/s",
             "host__register_per_call": "100us"}
    plain = registration_spans(toy_platform(**costs))
    slow = registration_spans(toy_platform(host__register_upload_factor=1.25, **costs))
    for alone, inside in zip(plain, slow):
        assert all(b == pytest.approx(1.25 * a, rel=1e-6) for a, b in zip(alone, inside))


def test_registering_alone_is_not_slowed():
    # The calibration's import probe: windows imported and released one after the other, no copies.
    platform = toy_platform(host__register_upload_factor=2.0)
    alone = predict(platform, Probe("import", 16 * MiB, 4), 64 * MiB)
    plain = predict(toy_platform(), Probe("import", 16 * MiB, 4), 64 * MiB)
    assert alone == pytest.approx(plain)


def test_round_trips_through_toml(tmp_path):
    toml_round_trip(toy_platform(host__register_upload_factor=1.2), tmp_path)
