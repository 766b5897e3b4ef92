"""auto sizes its ring's readers by the host's CPU threads (DeviceCaps.host_threads)."""

import pytest

from halsim.caps import DeviceCaps
from halsim.choose import choose_by_caps, default_readers
from halsim.hostexec import host_threads
from halsim.platform import load_platform
from halsim.policies import AutoPolicy
from halsim.registry import get_device
from halsim.workloads import load_workload

GiB = 1 << 30


@pytest.mark.parametrize("threads, readers", [(None, 8), (1, 2), (2, 2), (8, 6), (16, 12), (64, 48)])
def test_three_in_four_threads_read(threads, readers):
    assert default_readers(threads) == readers


def test_the_ring_never_has_more_readers_than_slots():
    request = load_workload("gpt2").request()
    caps = DeviceCaps(host_threads=64)
    chosen = choose_by_caps(request, {0: caps}, budget=256 << 20)
    assert chosen.readers == min(48, chosen.slots) == 16


def test_devices_of_one_host_are_sized_by_the_smallest_thread_count():
    request = load_workload("gpt2").request(devices=2)
    chosen = choose_by_caps(request, {0: DeviceCaps(host_threads=16), 1: DeviceCaps(host_threads=8)}, GiB)
    assert chosen.readers == 6  # the smaller count: they run on the same CPUs


def test_auto_on_the_h100_platform_uses_twelve_readers():
    platform = load_platform("h100-pcie5")
    assert platform.caps(0).host_threads == 16
    plan = AutoPolicy().plan(load_workload("gpt2").request(), platform.caps(0))
    assert plan.policy.readers == 12, plan.notes


def test_real_devices_report_the_threads_this_process_may_use():
    assert get_device("cpu").caps.host_threads == host_threads() >= 1
    assert "host threads" in get_device("cpu").caps.describe()
