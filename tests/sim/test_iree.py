"""The numbers of the IREE change (#14665) on the 1 GiB model."""

import pytest

from halsim.sim import simulate

from sim_helpers import GiB, MiB, iree_request

IREE_STREAMING = "streaming:chunk=64MiB,slots=1,readers=1"


def test_staged_on_dedicated_gpu_stages_everything():
    r = simulate(iree_request(), "dgpu-pcie4", "staged")
    assert r.peak_staging_bytes == GiB
    assert r.peak_device_bytes == GiB


def test_iree_streaming_stages_at_most_one_chunk():
    r = simulate(iree_request(), "dgpu-pcie4", IREE_STREAMING)
    assert 0 < r.peak_staging_bytes <= 64 * MiB
    assert r.peak_device_bytes == GiB


def test_import_on_integrated_gpu_copies_nothing():
    r = simulate(iree_request(), "igpu-unified", "import")
    assert r.peak_staging_bytes == 0
    assert r.copies == 0
    assert r.imported_bytes == GiB
    assert r.policy.startswith("import")


@pytest.mark.parametrize("chunk", ["4MiB", "16MiB", "64MiB"])
@pytest.mark.parametrize("slots", [2, 4])
def test_overlapped_streaming_beats_serial_on_dedicated_gpu(chunk, slots):
    serial = simulate(iree_request(), "dgpu-pcie4", f"streaming:chunk={chunk},slots=1,readers=1")
    overlapped = simulate(iree_request(), "dgpu-pcie4", f"streaming:chunk={chunk},slots={slots},readers=1")
    assert overlapped.seconds < serial.seconds
    assert overlapped.peak_staging_bytes <= slots * serial.peak_staging_bytes


def test_cold_file_is_slower_than_page_cached():
    warm = simulate(iree_request(), "dgpu-pcie4", IREE_STREAMING)
    cold = simulate(iree_request(page_cached=False), "dgpu-pcie4", IREE_STREAMING)
    assert cold.seconds > warm.seconds
