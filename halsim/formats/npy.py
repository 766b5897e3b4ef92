"""numpy ``.npy``: magic, version, header length, a Python dict literal, data.

The header is parsed with ``ast.literal_eval`` (never ``eval``) after a length
check, and its ``descr`` must be a plain little-endian (or single-byte)
numeric dtype: object, structured, string and big-endian arrays are refused.
"""

from __future__ import annotations

import ast
import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from halsim.errors import FormatError
from halsim.formats.dtypes import DTYPES, dtype_from_numpy
from halsim.formats.index import ParamIndex, RegularFile, TensorInfo, atomic_output, nbytes_of, short

MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 65536
# version -> (bytes of the header-length field, header text encoding)
_VERSIONS = {(1, 0): (2, "latin1"), (2, 0): (4, "latin1"), (3, 0): (4, "utf-8")}
_HEADER_KEYS = {"descr", "fortran_order", "shape"}
_DESCR = re.compile(r"([<>|]?)([biufc])(\d{1,2})")
_KIND_SIZE_TO_DTYPE = {
    ("b", 1): "BOOL",
    ("u", 1): "U8", ("u", 2): "U16", ("u", 4): "U32", ("u", 8): "U64",
    ("i", 1): "I8", ("i", 2): "I16", ("i", 4): "I32", ("i", 8): "I64",
    ("f", 2): "F16", ("f", 4): "F32", ("f", 8): "F64",
    ("c", 8): "C64",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class NpyArray:
    """What a ``.npy`` header says about the array that follows it."""

    dtype: str
    shape: tuple[int, ...]
    fortran_order: bool
    data_offset: int  # absolute
    nbytes: int


def read_npy_index(path: str | os.PathLike) -> ParamIndex:
    with RegularFile(path) as f:
        if f.size == 0:
            raise FormatError(f.path, "file is empty")
        array = parse_npy(f, 0, f.size)
    name = os.path.splitext(os.path.basename(f.path))[0]
    tensor = TensorInfo(name, array.dtype, array.shape, array.data_offset, array.nbytes)
    return ParamIndex(f.path, "npy", f.size, (tensor,), fortran_metadata([tensor.name] if array.fortran_order else []))


def fortran_metadata(names: list[str]) -> dict[str, str]:
    """Index metadata recording which tensors are stored in Fortran (column-major) order."""
    return {"fortran_order": json.dumps(names)} if names else {}


def parse_npy(f: RegularFile, start: int, end: int, member: str | None = None) -> NpyArray:
    """Parse the ``.npy`` stream occupying bytes [start, end) of `f`.

    `member` names the archive member for error messages (npz).
    """
    where = f"member {short(member)}: " if member is not None else ""

    def fail(problem: str) -> FormatError:
        return FormatError(f.path, where + problem)

    available = end - start
    if available < len(MAGIC) or f.read_at(start, len(MAGIC), "npy magic") != MAGIC:
        raise fail("not a .npy file (missing \\x93NUMPY magic)")
    if available < len(MAGIC) + 2:
        raise fail(f".npy header is cut short: {available} bytes")
    major, minor = f.read_at(start + len(MAGIC), 2, "npy version")
    if (major, minor) not in _VERSIONS:
        raise fail(f"unsupported .npy version {major}.{minor}")
    length_bytes, encoding = _VERSIONS[major, minor]
    prefix = len(MAGIC) + 2 + length_bytes
    if available < prefix:
        raise fail(f".npy header is cut short: {available} bytes")
    header_length = int.from_bytes(f.read_at(start + prefix - length_bytes, length_bytes, "npy header length"), "little")
    if header_length > MAX_HEADER_BYTES:
        raise fail(f".npy header length {header_length} exceeds the {MAX_HEADER_BYTES}-byte limit")
    if prefix + header_length > available:
        raise fail(f".npy header length {header_length} exceeds file size {available}")
    raw_header = f.read_at(start + prefix, header_length, "npy header")
    try:
        text = raw_header.decode(encoding)
    except UnicodeDecodeError as e:
        raise fail(f".npy header is not valid {encoding} ({e.reason} at byte {e.start})") from None

    header = _literal_dict(text, fail)
    dtype = _descr_to_dtype(header["descr"], fail)
    shape, fortran_order = header["shape"], header["fortran_order"]
    if type(fortran_order) is not bool:
        raise fail(f"fortran_order {short(fortran_order)} is not True or False")
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):
        raise fail(f"shape {short(shape)} is not a tuple of non-negative integers")

    data_offset = start + prefix + header_length
    remaining = end - data_offset
    nbytes = nbytes_of(shape, DTYPES[dtype].itemsize, limit=remaining)
    if nbytes is None:
        raise fail(
            f"array data is truncated: shape {short(shape)} of {dtype} needs more than "
            f"the {remaining} bytes after the header"
        )
    return NpyArray(dtype, shape, fortran_order, data_offset, nbytes)


def _literal_dict(text: str, fail: Callable[[str], FormatError]) -> dict:
    if not text.lstrip().startswith("{"):
        raise fail(".npy header is not a dict literal")
    try:
        with warnings.catch_warnings():  # hostile text may hold e.g. invalid escapes
            warnings.simplefilter("ignore")
            header = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise fail(f".npy header is not a valid dict literal ({type(e).__name__})") from None
    if not isinstance(header, dict):
        raise fail(".npy header is not a dict literal")
    keys = set(header)
    if keys != _HEADER_KEYS:
        missing, extra = sorted(map(str, _HEADER_KEYS - keys)), sorted(map(repr, keys - _HEADER_KEYS))
        raise fail(f".npy header keys are wrong (missing {missing}, unexpected {short(extra)})")
    return header


def _descr_to_dtype(descr: object, fail: Callable[[str], FormatError]) -> str:
    if isinstance(descr, list):
        raise fail("structured dtype is not supported")
    if not isinstance(descr, str):
        raise fail(f"descr {short(descr)} is not a dtype string")
    match = _DESCR.fullmatch(descr)
    if match is None:
        if descr.lstrip("<>|=")[:1] == "O":
            raise fail(f"object dtype {short(descr)} is not supported")
        raise fail(f"unsupported dtype {short(descr)}")
    order, kind, size = match.group(1), match.group(2), int(match.group(3))
    dtype = _KIND_SIZE_TO_DTYPE.get((kind, size))
    if dtype is None:
        raise fail(f"dtype {short(descr)} has no safetensors equivalent")
    if size > 1 and order != "<":
        raise fail(f"dtype {short(descr)} is not little-endian")
    return dtype


def write_npy(path: str | os.PathLike, array: np.ndarray) -> ParamIndex:
    """Write `array` as ``.npy`` (via numpy's own writer) and return its index."""
    array = storable_array(np.asanyarray(array))
    with atomic_output(path) as f:
        np.lib.format.write_array(f, array, allow_pickle=False)
    return read_npy_index(path)


def storable_array(array: np.ndarray) -> np.ndarray:
    """`array`, converted to little-endian; ValueError if the index could not describe it."""
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    dtype_from_numpy(array.dtype)  # raises for object, structured, string... dtypes
    return array
