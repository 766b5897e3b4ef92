"""What a device says of itself changes what the simulator charges: a lazy in-place import
reads nothing, a buffered direct read comes from the page cache when the file is warm."""

import pytest

from halsim.sim import simulate

from sim_helpers import GB, MiB, make_request, toy_platform

SIZES = [64 * MiB] * 4  # 256 MiB: 0.27 s from the 1 GB/s drive or one 1 GB/s page-cache thread


@pytest.mark.parametrize("lazy", [False, True])
def test_a_lazy_in_place_import_of_a_cold_file_reads_nothing(lazy):
    platform = toy_platform(kind="integrated", gpus__lazy_import=lazy)
    cold = simulate(make_request(SIZES, page_cached=False), platform, "import")
    assert cold.policy.startswith("import") and cold.copies == 0
    drive = sum(SIZES) / GB
    if lazy:
        assert cold.seconds < 0.01 * drive  # only the calls: the pages are read after the upload
    else:
        assert cold.seconds >= drive  # pinning makes every page resident first


def test_laziness_is_for_in_place_imports_only():
    # A dedicated GPU copies out of the imported pages: they are read in either way.
    platforms = [toy_platform(gpus__lazy_import=lazy) for lazy in (False, True)]
    pinned, lazy = (simulate(make_request(SIZES, page_cached=False), p, "import") for p in platforms)
    assert lazy.seconds == pytest.approx(pinned.seconds)


@pytest.mark.parametrize("kind", ["integrated", "dedicated"])
def test_a_buffered_direct_read_of_a_warm_file_comes_from_the_page_cache(kind):
    fast_cache = {"storage__page_cache_bandwidth": "8GB/s"}
    gds = toy_platform(kind=kind, **fast_cache)
    buffered = toy_platform(kind=kind, gpus__direct_buffered=True, **fast_cache)
    policy = "direct:chunk=64MiB,readers=4"
    warm, cold = make_request(SIZES), make_request(SIZES, page_cached=False)
    drive = sum(SIZES) / GB
    # Storage DMA bypasses the cache: the drive's speed, warm or cold.
    assert simulate(warm, gds, policy).seconds == pytest.approx(drive, rel=0.01)
    # A buffered read: four 8 GB/s threads out of the cache at once, then (dedicated) all
    # four share the 2 GB/s link.
    quick = simulate(warm, buffered, policy)
    assert quick.policy.startswith("direct")
    expected = 64 * MiB / (8 * GB) + (sum(SIZES) / (2 * GB) if kind == "dedicated" else 0.0)
    assert quick.seconds == pytest.approx(expected, rel=0.01)
    # Cold, both go to the drive.
    assert simulate(cold, buffered, policy).seconds >= drive
