"""Safetensors dtype names, their sizes, and their numpy counterparts.

numpy has no bfloat16 or float8 types. When ``ml_dtypes`` happens to be
importable we use its types; otherwise those dtypes have ``numpy=None`` and
:func:`numpy_dtype` hands back an unsigned integer of the same width, so the
bytes can still be moved and compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

try:  # optional: only widens what numpy can represent, never required
    import ml_dtypes as _ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    _ml_dtypes = None


@dataclass(frozen=True, slots=True)
class DTypeInfo:
    name: str
    itemsize: int
    numpy: np.dtype | None  # None: numpy cannot represent it (no ml_dtypes)


def _ml(attr: str) -> np.dtype | None:
    if _ml_dtypes is None:
        return None
    return np.dtype(getattr(_ml_dtypes, attr))


def _table() -> dict[str, DTypeInfo]:
    rows = [
        ("BOOL", 1, np.dtype("bool")),
        ("U8", 1, np.dtype("u1")),
        ("I8", 1, np.dtype("i1")),
        ("F8_E4M3", 1, _ml("float8_e4m3fn")),
        ("F8_E5M2", 1, _ml("float8_e5m2")),
        ("I16", 2, np.dtype("<i2")),
        ("U16", 2, np.dtype("<u2")),
        ("F16", 2, np.dtype("<f2")),
        ("BF16", 2, _ml("bfloat16")),
        ("I32", 4, np.dtype("<i4")),
        ("U32", 4, np.dtype("<u4")),
        ("F32", 4, np.dtype("<f4")),
        ("I64", 8, np.dtype("<i8")),
        ("U64", 8, np.dtype("<u8")),
        ("F64", 8, np.dtype("<f8")),
        ("C64", 8, np.dtype("<c8")),
    ]
    return {name: DTypeInfo(name, size, dt) for name, size, dt in rows}


DTYPES: Mapping[str, DTypeInfo] = MappingProxyType(_table())

# Same-width stand-ins for dtypes numpy lacks: identical bytes, wrong arithmetic.
_BYTE_STANDINS = {"BF16": np.dtype("<u2"), "F8_E4M3": np.dtype("u1"), "F8_E5M2": np.dtype("u1")}


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype that holds `name`'s bytes (a same-width stand-in if numpy lacks it)."""
    try:
        info = DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown safetensors dtype {name!r}; known: {', '.join(DTYPES)}") from None
    return info.numpy if info.numpy is not None else _BYTE_STANDINS[name]


def dtype_from_numpy(dtype: np.dtype | type | str) -> str:
    """The safetensors name of a numpy dtype; ValueError if there is none.

    Big-endian dtypes are refused: safetensors data is little-endian, so the
    caller must convert (``arr.astype(arr.dtype.newbyteorder('<'))``) first.
    """
    dt = np.dtype(dtype)
    for info in DTYPES.values():
        if info.numpy is not None and info.numpy == dt:
            return info.name
    if dt.byteorder == ">":
        raise ValueError(f"numpy dtype {dt.str!r} is big-endian; safetensors data is little-endian")
    raise ValueError(f"numpy dtype {dt.str!r} has no safetensors equivalent")
