import pytest

from halsim.units import format_size, parse_duration, parse_rate, parse_size


@pytest.mark.parametrize("text,value", [
    ("64MiB", 64 << 20), ("1GiB", 1 << 30), ("4096", 4096), ("1.5KiB", 1536), ("100MB", 100_000_000), (7, 7),
    ("5 GiB", 5 << 30),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["-1", "1XB", "", "1.3B", -5, True, "MiB"])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_format_size_round_trips():
    for n in (0, 1, 1023, 4096, 64 << 20, (1 << 30) + 1, 5 << 40):
        text = format_size(n)
        if "." not in text:
            assert parse_size(text) == n


def test_rates_and_durations():
    assert parse_rate("54.5GB/s") == pytest.approx(54.5e9)
    assert parse_rate("1MiB/s") == 1 << 20
    assert parse_duration("20us") == pytest.approx(20e-6)
    assert parse_duration(0.5) == 0.5
    with pytest.raises(ValueError):
        parse_rate("5GB")
