"""Fuzz the readers: damaged files give a sound index or a FormatError, nothing else."""

from __future__ import annotations

import json
import os
import pathlib
import struct
import tempfile

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from halsim.errors import FormatError
from halsim.formats import DTYPES, read_index, write_npy, write_npz, write_safetensors

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_files() -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            "safetensors": os.path.join(tmp, "m.safetensors"),
            "npy": os.path.join(tmp, "m.npy"),
            "npz": os.path.join(tmp, "m.npz"),
        }
        write_safetensors(
            paths["safetensors"],
            {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.uint8), "e": np.zeros(0)},
            metadata={"k": "v"},
        )
        write_npy(paths["npy"], np.arange(12, dtype=np.int16).reshape(3, 4))
        write_npz(paths["npz"], {"a": np.arange(4, dtype=np.float64), "b": np.ones((2, 2), dtype=np.uint8)})
        return {fmt: pathlib.Path(path).read_bytes() for fmt, path in paths.items()}


VALID = _valid_files()


def check_index_or_format_error(content: bytes, fmt: str) -> None:
    """The property: parse `content` as `fmt`; any index must describe bytes inside the file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzzed." + fmt)
        with open(path, "wb") as f:
            f.write(content)
        try:
            index = read_index(path)
        except FormatError as e:
            assert e.path == path and str(e).startswith(path + ": ")
            return
    assert index.format == fmt and index.file_length == len(content)
    occupied = []
    for t in index:
        assert DTYPES[t.dtype].itemsize * int(np.prod(t.shape, dtype=object)) == t.nbytes
        assert 0 <= t.offset <= t.end <= len(content)
        if t.nbytes:
            occupied.append((t.offset, t.end))
    occupied.sort()
    assert all(a[1] <= b[0] for a, b in zip(occupied, occupied[1:])), "tensors overlap"


# (offset, width) of length fields: safetensors header length; npy header
# length; npz first local header's name length, extra length and sizes.
LENGTH_FIELDS = {"safetensors": [(0, 8)], "npy": [(8, 2)], "npz": [(26, 2), (28, 2), (18, 4), (22, 4)]}


@st.composite
def mutated(draw, fmt: str) -> bytes:
    data = bytearray(VALID[fmt])
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["set", "delete", "insert", "truncate", "length"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "truncate":
            del data[at:]
        elif op == "length":
            # Length fields steer everything after them; hit them on purpose.
            offset, width = draw(st.sampled_from(LENGTH_FIELDS[fmt]))
            if len(data) >= offset + width:
                top = 2 ** (8 * width) - 1
                value = draw(st.integers(0, min(top, 2**16)) | st.integers(0, top))
                data[offset : offset + width] = value.to_bytes(width, "little")
    return bytes(data)


@FUZZ
@given(mutated("safetensors"))
def test_mutated_safetensors(content):
    check_index_or_format_error(content, "safetensors")


@FUZZ
@given(mutated("npy"))
def test_mutated_npy(content):
    check_index_or_format_error(content, "npy")


@FUZZ
@given(mutated("npz"))
def test_mutated_npz(content):
    check_index_or_format_error(content, "npz")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
    | st.sampled_from(list(DTYPES) + ["dtype", "shape", "data_offsets", "__metadata__"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)  # fmt: skip


@st.composite
def mutated_header(draw) -> bytes:
    """A structurally plausible header with some fields replaced by arbitrary JSON."""
    length = struct.unpack_from("<Q", VALID["safetensors"])[0]
    header = json.loads(VALID["safetensors"][8 : 8 + length])
    data = VALID["safetensors"][8 + length :]
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(sorted(header) + ["new"]))
        if target == "new" or not isinstance(header.get(target), dict):
            header[draw(st.text(max_size=4))] = draw(json_values)
            continue
        entry = header[target]
        key = draw(st.sampled_from(sorted(entry) + ["extra"]) if entry else st.just("extra"))
        if key != "extra" and key in ("shape", "data_offsets") and draw(st.booleans()):
            entry[key] = draw(st.lists(st.integers(-5, 64), max_size=3))  # near-valid numbers
        else:
            entry[key] = draw(json_values)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@FUZZ
@given(mutated_header())
def test_mutated_safetensors_header(content):
    check_index_or_format_error(content, "safetensors")


@FUZZ
@given(st.binary(max_size=64))
def test_arbitrary_bytes_as_npy(content):
    check_index_or_format_error(b"\x93NUMPY" + content, "npy")


def _npy_with_header(header: str) -> bytes:
    raw = header.encode("latin1", errors="replace")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + bytes(64)


@FUZZ
@given(
    descr=st.sampled_from(["'<f4'", "'|u1'", "'>i8'", "'|O'", "'<U2'", "[('a', '<f4')]", "'<V4'", "4", "'f4'"]),
    fortran=st.sampled_from(["False", "True", "1", "None"]),
    shape=st.lists(st.integers(-3, 2**40), max_size=4).map(lambda s: repr(tuple(s))) | st.sampled_from(["[2]", "()"]),
)
def test_npy_header_fields(descr, fortran, shape):
    header = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}"
    check_index_or_format_error(_npy_with_header(header), "npy")
