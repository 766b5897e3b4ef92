"""The Platform schema, the catalogue, TOML round trips and clear errors."""

import tomllib

import pytest

from halsim.errors import PlatformError
from halsim.platform import list_platforms, load_platform, platform_from_dict
from halsim.units import parse_rate

from sim_helpers import toy_platform

REQUIRED = {"h100-pcie5", "dgpu-pcie4", "igpu-unified", "dgx-h100", "apple-m2-max"}


def test_catalogue_has_the_named_machines():
    assert REQUIRED <= set(list_platforms())


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_platform_loads_and_round_trips(name):
    platform = load_platform(name)
    assert platform.name == name
    again = platform_from_dict(tomllib.loads(platform.to_toml()))
    assert again == platform
    assert platform.caps(0).memory_bytes == platform.gpus[0].memory


def test_h100_figures_from_the_issue():
    p = load_platform("h100-pcie5")
    link = p.link_of(0)
    assert link.h2d == 54.5e9 and link.d2h == 54.7e9 and link.pageable == 8.6e9
    assert p.storage.bandwidth == 1.7e9 and p.storage.page_cache_bandwidth == 5.7e9
    assert p.host.memcpy_per_thread == 10.4e9
    # measured in the third session: 256 MiB windows registered in 13.5 ms, released in 2.37 ms
    assert p.host.register_bandwidth == 19.9e9 and p.host.unregister_bandwidth == 113e9
    assert p.host.register_stalls_copies and p.host.pin_in_background
    assert p.gpus[0].memory >= 79 * (1 << 30)


def test_integrated_gpus_have_unified_memory_caps():
    caps = load_platform("igpu-unified").caps(0)
    assert caps.kind == "integrated" and caps.unified_memory and caps.import_in_place
    dedicated = load_platform("dgpu-pcie4").caps(0)
    assert dedicated.kind == "dedicated" and not dedicated.unified_memory


def test_multi_gpu_server_shares_switches_by_pairs():
    p = load_platform("dgx-h100")
    assert len(p.gpus) == 8
    by_switch = {}
    for i in range(8):
        by_switch.setdefault(p.switch_of(i).name, []).append(i)
    assert sorted(map(len, by_switch.values())) == [2, 2, 2, 2]


def test_human_units_are_accepted():
    p = toy_platform(storage__latency="20us", host__capacity="64MiB")
    assert p.storage.latency == pytest.approx(20e-6)
    assert p.host.capacity == 64 << 20
    assert p.storage.bandwidth == parse_rate("1GB/s")


def test_unknown_name_lists_known_ones():
    with pytest.raises(PlatformError) as err:
        load_platform("no-such-machine")
    assert "no-such-machine" in str(err.value) and "h100-pcie5" in str(err.value)


def test_bad_file_names_file_and_problem(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\n[storage\n')
    with pytest.raises(PlatformError, match="broken.toml.*not valid TOML"):
        load_platform(broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(load_platform("dgpu-pcie4").to_toml().replace('link = "pcie4-x16"', 'link = "pcie9"'))
    with pytest.raises(PlatformError, match="wrong.toml.*pcie9"):
        load_platform(wrong)
    typo = tmp_path / "typo.toml"
    typo.write_text(load_platform("dgpu-pcie4").to_toml().replace("queue_depth", "queue_dept"))
    with pytest.raises(PlatformError, match="typo.toml.*queue_dept"):
        load_platform(typo)
    missing = tmp_path / "missing.toml"
    with pytest.raises(PlatformError, match="missing.toml"):
        load_platform(missing)


def test_bad_values_are_refused():
    with pytest.raises(PlatformError, match="rate"):
        toy_platform(links__h2d="fast")
    with pytest.raises(PlatformError, match="no GPU 3"):
        toy_platform().caps(3)


def test_platform_is_frozen():
    p = toy_platform()
    with pytest.raises(Exception):
        p.name = "other"
