"""Human sizes and rates at the edges (CLI, TOML); plain ints and floats inside."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | float | str) -> int:
    """``"64MiB"`` -> 67108864. Accepts ints, and strings with SI or IEC units."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"size must not be negative: {value}")
        return value
    if isinstance(value, float):
        if value < 0 or value != int(value):
            raise ValueError(f"size must be a whole number of bytes: {value}")
        return int(value)
    match = _SIZE_RE.match(str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a size: {value!r} (try 4096, 64MiB, 1.5GiB, 100MB)")
    number = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if number != int(number):
        raise ValueError(f"size is not a whole number of bytes: {value!r}")
    return int(number)


def parse_rate(value: int | float | str) -> float:
    """``"54.5GB/s"`` -> 54.5e9 bytes per second. Plain numbers are bytes per second."""
    if isinstance(value, bool):
        raise ValueError(f"not a rate: {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"rate must be positive: {value}")
        return float(value)
    text = str(value).strip()
    if not text.lower().endswith("/s"):
        raise ValueError(f"not a rate: {value!r} (try 54.5GB/s or 900MiB/s)")
    match = _SIZE_RE.match(text[:-2])
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"not a rate: {value!r} (try 54.5GB/s or 900MiB/s)")
    rate = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if rate <= 0:
        raise ValueError(f"rate must be positive: {value!r}")
    return rate


def parse_duration(value: int | float | str) -> float:
    """``"2us"`` -> 2e-6 seconds. Plain numbers are seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value}")
        return float(value)
    match = re.match(r"^\s*([0-9]+(?:\.[0-9]*)?(?:e-?[0-9]+)?)\s*(s|ms|us|ns)?\s*$", str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (try 0.5, 20us, 3ms)")
    scale = {"s": 1.0, None: 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[match.group(2)]
    return float(match.group(1)) * scale


def format_size(nbytes: int | float) -> str:
    """67108864 -> ``"64MiB"``; exact when the value is a whole number of the unit."""
    nbytes = int(nbytes)
    for unit, scale in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(nbytes) >= scale:
            if nbytes % scale == 0:
                return f"{nbytes // scale}{unit}"
            return f"{nbytes / scale:.2f}{unit}"
    return f"{nbytes}B"


def format_rate(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 1e9:.2f} GB/s"
