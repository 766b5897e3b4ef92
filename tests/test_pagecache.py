"""The page cache for one file: warming it afresh drops what is there first."""

import pytest

from halsim import pagecache


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(256)) * 4096 * 4)  # 4 MiB
    return path


def test_warm_leaves_the_whole_file_cached(data_file):
    pagecache.warm(data_file, piece=1 << 20)
    assert pagecache.resident_fraction(data_file) == 1.0


def test_a_fresh_warm_drops_the_file_first_and_reads_it_back(data_file, monkeypatch):
    dropped = []
    real_drop = pagecache.drop
    monkeypatch.setattr(pagecache, "drop", lambda path: dropped.append(path) or real_drop(path))
    pagecache.warm(data_file)
    assert not dropped  # without fresh, what is cached stays as it came
    pagecache.warm(data_file, fresh=True)
    assert dropped == [data_file] and pagecache.resident_fraction(data_file) == 1.0


def test_a_fresh_warm_where_nothing_can_be_dropped_still_warms(data_file, monkeypatch):
    def refuse(path):
        raise pagecache.ColdUnavailable(f"{path}: stays cached")

    monkeypatch.setattr(pagecache, "drop", refuse)
    pagecache.warm(data_file, fresh=True)
    assert pagecache.resident_fraction(data_file) == 1.0


def test_the_readahead_window_is_the_drive_s_own(tmp_path):
    import os
    from pathlib import Path

    assert pagecache.read_ahead_bytes(tmp_path / "missing") is None
    dev = os.stat(tmp_path).st_dev
    base = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    knob = next((k for k in (base / "queue/read_ahead_kb", base / "../queue/read_ahead_kb") if k.exists()), None)
    if knob is None:
        pytest.skip(f"{tmp_path} is on no block device sysfs describes")
    assert pagecache.read_ahead_bytes(tmp_path) == int(knob.read_text()) * 1024
