"""safetensors: an 8-byte little-endian header length, a JSON header, then data.

Each header entry is ``name: {"dtype", "shape", "data_offsets": [begin, end]}``
with offsets relative to the first byte after the header; ``__metadata__`` is
an optional str -> str map. Unlike the reference library we accept gaps
between tensors (aligned layouts); overlaps are refused.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Mapping, Sequence

import numpy as np

from halsim.errors import FormatError
from halsim.formats.dtypes import DTYPES, dtype_from_numpy
from halsim.formats.index import ParamIndex, RegularFile, TensorInfo, atomic_output, check_no_overlap, nbytes_of, short

MAX_HEADER_BYTES = 100 * 1024 * 1024
LENGTH_PREFIX_BYTES = 8
HEADER_ALIGNMENT = 8  # the header is space-padded so that data starts 8-byte aligned
DEFAULT_PIECE_BYTES = 64 * 1024 * 1024
_ENTRY_KEYS = ("dtype", "shape", "data_offsets")

TensorSpec = tuple[str, str, Sequence[int]]  # (name, dtype name, shape)
FillFn = Callable[[str, memoryview], None]


# --- reading -----------------------------------------------------------------


def read_safetensors_index(path: str | os.PathLike) -> ParamIndex:
    with RegularFile(path) as f:
        path = f.path
        if f.size == 0:
            raise FormatError(path, "file is empty")
        if f.size < LENGTH_PREFIX_BYTES:
            raise FormatError(path, f"file is {f.size} bytes, shorter than the 8-byte header length")
        header_length = int.from_bytes(f.read_at(0, LENGTH_PREFIX_BYTES, "header length"), "little")
        if header_length > MAX_HEADER_BYTES:
            raise FormatError(path, f"header length {header_length} exceeds the {MAX_HEADER_BYTES}-byte limit")
        if header_length > f.size - LENGTH_PREFIX_BYTES:
            detail = "" if header_length > f.size else " less the 8-byte length prefix"
            raise FormatError(path, f"header length {header_length} exceeds file size {f.size}{detail}")
        raw_header = f.read_at(LENGTH_PREFIX_BYTES, header_length, "header")
        file_length = f.size

    header = _parse_header_json(path, raw_header)
    data_start = LENGTH_PREFIX_BYTES + header_length
    data_length = file_length - data_start
    metadata: dict[str, str] = {}
    tensors = []
    for name, entry in header.items():
        if name == "__metadata__":
            metadata = _check_metadata(path, entry)
        else:
            tensors.append(_parse_entry(path, name, entry, data_start, data_length))
    check_no_overlap(path, tensors)
    tensors.sort(key=lambda t: (t.offset, t.end))  # stable: empty tensors keep header order
    return ParamIndex(path, "safetensors", file_length, tuple(tensors), metadata)


class _DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _parse_header_json(path: str, raw_header: bytes) -> dict:
    try:
        text = raw_header.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(path, f"header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as e:
        raise FormatError(path, f"header has duplicate key {short(e.args[0])}") from None
    except RecursionError:
        raise FormatError(path, "header is not valid JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, or an integer with too many digits
        raise FormatError(path, f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise FormatError(path, f"header is not a JSON object (got {type(header).__name__})")
    return header


def _check_metadata(path: str, metadata: object) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise FormatError(path, f"__metadata__ is not a JSON object of strings (got {type(metadata).__name__})")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise FormatError(
                path, f"__metadata__ must map strings to strings; key {short(key)} has a {type(value).__name__} value"
            )
    return metadata


def _is_int(value: object) -> bool:
    return type(value) is int  # bool is an int subclass, and JSON true is no size


def _parse_entry(path: str, name: str, entry: object, data_start: int, data_length: int) -> TensorInfo:
    where = f"tensor {short(name)}"
    if not isinstance(entry, dict):
        raise FormatError(path, f"{where}: entry is not a JSON object (got {type(entry).__name__})")
    for key in _ENTRY_KEYS:
        if key not in entry:
            raise FormatError(path, f"{where}: missing key {key!r}")
    for key in entry:
        if key not in _ENTRY_KEYS:
            raise FormatError(path, f"{where}: unexpected key {short(key)}")

    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise FormatError(path, f"{where}: unknown dtype {short(dtype)}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise FormatError(path, f"{where}: shape {short(shape)} is not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
        raise FormatError(path, f"{where}: data_offsets {short(offsets)} are not two non-negative integers")
    begin, end = offsets
    if begin > end:
        raise FormatError(path, f"{where}: data_offsets [{begin}, {end}] begin after they end")
    if end > data_length:
        raise FormatError(
            path, f"{where}: data_offsets [{begin}, {end}] run past the end of the file (data area is {data_length} bytes)"
        )

    nbytes = end - begin
    expected = nbytes_of(shape, DTYPES[dtype].itemsize, limit=nbytes)
    if expected is None:
        raise FormatError(
            path, f"{where}: data_offsets [{begin}, {end}] do not match shape {short(shape)} of {dtype} "
            f"(more than {nbytes} bytes)"
        )
    if expected != nbytes:
        elements = expected // DTYPES[dtype].itemsize
        raise FormatError(
            path,
            f"{where}: data_offsets [{begin}, {end}] do not match {elements} elements of {dtype} ({expected} bytes)",
        )
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, nbytes)


# --- writing -----------------------------------------------------------------


def write_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
    dtypes: Mapping[str, str] | None = None,
    *,
    alignment: int = HEADER_ALIGNMENT,
) -> ParamIndex:
    """Write `tensors` as a standard safetensors file and return its index.

    `dtypes` overrides the stored dtype per tensor, for types numpy lacks:
    ``dtypes={"w": "BF16"}`` stores a uint16 array's bytes as BF16. The
    override must have the array's item size. `alignment` is as for
    :func:`write_safetensors_layout`.
    """
    dtypes = dtypes or {}
    unknown = set(dtypes) - set(tensors)
    if unknown:
        raise ValueError(f"dtypes names tensors that are not being written: {sorted(unknown)}")
    arrays: dict[str, np.ndarray] = {}
    specs: list[TensorSpec] = []
    for name, value in tensors.items():
        array = np.asarray(value)
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        dtype = dtypes.get(name) or dtype_from_numpy(array.dtype)
        if dtype not in DTYPES:
            raise ValueError(f"tensor {name!r}: unknown safetensors dtype {dtype!r}")
        if DTYPES[dtype].itemsize != array.dtype.itemsize:
            raise ValueError(
                f"tensor {name!r}: cannot store {array.dtype} ({array.dtype.itemsize}-byte items) "
                f"as {dtype} ({DTYPES[dtype].itemsize}-byte items)"
            )
        # Flat little-endian bytes; reshape(-1) also makes 0-d arrays viewable.
        arrays[name] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        specs.append((name, dtype, array.shape))

    positions = dict.fromkeys(arrays, 0)

    def copy_from_arrays(name: str, piece: memoryview) -> None:
        start = positions[name]
        piece[:] = arrays[name].data[start : start + len(piece)]
        positions[name] = start + len(piece)

    return write_safetensors_layout(path, specs, copy_from_arrays, metadata=metadata, alignment=alignment)


def write_safetensors_layout(
    path: str | os.PathLike,
    specs: Sequence[TensorSpec],
    fill: FillFn | None = None,
    *,
    metadata: Mapping[str, str] | None = None,
    piece_bytes: int = DEFAULT_PIECE_BYTES,
    alignment: int = HEADER_ALIGNMENT,
) -> ParamIndex:
    """Write a safetensors file of the given layout without holding its data.

    `fill(name, piece)` must fill every byte of `piece`; it is called for each
    tensor's consecutive pieces in order, each at most `piece_bytes` long, so
    multi-GiB files stream through one small buffer. With ``fill=None`` the
    data is left as a hole (sparse file, reads as zeros).

    The header is space-padded so that the data area starts at a multiple of
    `alignment` (8 by default; 4096 puts it on a page, as direct I/O and
    zero-copy import like). Tensors are laid out contiguously, largest item
    size first (stable), so every tensor is aligned to its item size.
    """
    if piece_bytes <= 0:
        raise ValueError(f"piece_bytes must be positive, got {piece_bytes}")
    if alignment <= 0 or alignment % HEADER_ALIGNMENT:
        raise ValueError(f"alignment must be a positive multiple of {HEADER_ALIGNMENT}, got {alignment}")
    layout, header_bytes = _plan_layout(specs, metadata, alignment)
    data_start = LENGTH_PREFIX_BYTES + len(header_bytes)
    data_length = sum(nbytes for _, _, _, nbytes in layout)

    with atomic_output(path) as f:
        f.write(len(header_bytes).to_bytes(LENGTH_PREFIX_BYTES, "little"))
        f.write(header_bytes)
        if fill is None:
            f.truncate(data_start + data_length)
        else:
            largest = max((nbytes for _, _, _, nbytes in layout), default=0)
            buffer = memoryview(bytearray(min(piece_bytes, largest)))
            for name, _, _, nbytes in layout:
                done = 0
                while done < nbytes:
                    piece = buffer[: min(piece_bytes, nbytes - done)]
                    fill(name, piece)
                    f.write(piece)
                    done += len(piece)
    return read_safetensors_index(path)


def _plan_layout(
    specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None, alignment: int
) -> tuple[list[tuple[str, str, tuple[int, ...], int]], bytes]:
    """Order and size the tensors and build the padded header bytes."""
    seen: set[str] = set()
    checked = []
    for name, dtype, shape in specs:
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r}")
        if name in seen:
            raise ValueError(f"duplicate tensor name {name!r}")
        seen.add(name)
        if dtype not in DTYPES:
            raise ValueError(f"tensor {name!r}: unknown safetensors dtype {dtype!r}")
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"tensor {name!r}: negative dimension in shape {shape}")
        elements = 1
        for d in shape:
            elements *= d
        checked.append((name, dtype, shape, elements * DTYPES[dtype].itemsize))
    checked.sort(key=lambda row: -DTYPES[row[1]].itemsize)

    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("metadata must map strings to strings")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape, nbytes in checked:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    header_bytes += b" " * (-(LENGTH_PREFIX_BYTES + len(header_bytes)) % alignment)
    return checked, header_bytes
