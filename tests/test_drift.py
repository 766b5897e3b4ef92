"""The machine's drift between calibration and comparison: the same probes, measured again."""

import pytest

from halsim.calibrate import Config, calibrate
from halsim.drift import drift, median_change, recheck, recheck_config
from halsim.platform import load_platform
from halsim.sim import Simulator


def test_the_recheck_measures_one_size_of_each_probe_at_every_thread_count():
    full = Config.full()
    again = recheck_config(full)
    assert again.threads == full.threads and again.scratch == full.scratch
    assert again.read_sizes == (16 << 20,) and again.cold_sizes == (16 << 20,) and again.copy_chunks == (16 << 20,)
    assert again.import_pieces == full.import_pieces[-1:] and again.repeats <= 3


def test_a_machine_that_held_still_did_not_drift():
    before = calibrate("sim:h100-pcie5", Config.quick()).measurements
    moved = recheck("sim:h100-pcie5", before)
    kinds = {m.probe.split()[0] for m in moved}
    assert kinds >= {"memcpy", "h2d", "read", "stream", "cold", "import"}
    assert median_change(moved) == pytest.approx(0.0, abs=1e-12)
    assert all(m.change == pytest.approx(0.0, abs=1e-12) for m in moved)


def test_a_slower_page_cache_shows_in_the_reads_and_not_in_the_copies():
    base = load_platform("h100-pcie5")
    slower = base.model_copy(update={"storage": base.storage.model_copy(
        update={"page_cache_bandwidth": base.storage.page_cache_bandwidth / 1.25})})
    before = calibrate(Simulator(base).device(0), Config.quick()).measurements
    moved = {m.probe: m for m in recheck(Simulator(slower).device(0), before)}
    one_read = next(m for label, m in moved.items() if label.startswith("read ") and " x" not in label)
    assert one_read.change == pytest.approx(0.25, rel=0.05)  # a read takes a quarter longer
    assert all(m.change == pytest.approx(0.0, abs=1e-12) for label, m in moved.items() if label.startswith(("h2d", "d2h")))


def test_drift_matches_probes_by_what_they_measured():
    before = calibrate("sim:dgpu-pcie4", Config.quick()).measurements
    assert drift(before, before) and median_change(drift(before, before)) == 0.0  # the very same medians
