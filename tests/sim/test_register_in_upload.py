"""Registering inside an upload, copies streaming, costs more than alone
(HostMemory.register_upload_factor; calibration fits it from registrations timed inside an import upload)."""

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


@pytest.mark.parametrize("factor", [1.2, 1.0])
def test_calibration_gives_the_factor_back(factor):
    from halsim.calibrate import Config, calibrate
    from halsim.platform import load_platform

    base = load_platform("h100-pcie5")
    host = base.host.model_copy(update={"register_upload_factor": factor})
    result = calibrate(Simulator(base.model_copy(update={"host": host})).device(0), Config.quick())
    fitted = result.parameter("host.register_upload_factor")
    assert fitted.measured and fitted.value == pytest.approx(factor, rel=0.02)
    assert result.platform.host.register_upload_factor == pytest.approx(factor, rel=0.02)


@pytest.mark.parametrize("name, asked", [("igpu-unified", False), ("h100-pcie5", True)])
def test_only_a_device_that_registers_what_it_imports_is_asked(name, asked):
    from halsim.calibrate import Config, probes
    from halsim.platform import load_platform

    caps = load_platform(name).caps(0)
    benches = {p.bench for p in probes(Config.quick(), caps, pageable=False)}
    assert ("register_in_upload" in benches) is asked


def test_round_trips_through_toml(tmp_path):
    toml_round_trip(toy_platform(host__register_upload_factor=1.2), tmp_path)
