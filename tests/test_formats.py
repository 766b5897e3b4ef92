"""Parameter indexes: every format, every malformed case, and the writers."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import zipfile
from contextlib import contextmanager

import numpy as np
import pytest

from halsim.errors import FormatError
from halsim.formats import (
    DTYPES,
    ParamIndex,
    TensorInfo,
    dtype_from_numpy,
    numpy_dtype,
    read_index,
    write_npy,
    write_npz,
    write_safetensors,
)
from halsim.formats.safetensors import write_safetensors_layout

GiB = 1 << 30


# --- helpers -------------------------------------------------------------------


def safetensors_bytes(header: dict | str | bytes, data: bytes = b"", header_length: int | None = None) -> bytes:
    """A safetensors file with an arbitrary (possibly broken) header."""
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode()
    length = len(header) if header_length is None else header_length
    return struct.pack("<Q", length) + header + data


def entry(dtype="F32", shape=(4,), offsets=(0, 16)) -> dict:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def npy_bytes(header: str, data: bytes = b"", version=(1, 0)) -> bytes:
    raw = header.encode("latin1")
    length = struct.pack("<H", len(raw)) if version == (1, 0) else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes(version) + length + raw + data


@contextmanager
def no_hang(seconds: int = 5):
    """Fail instead of hanging forever if the code under test blocks."""

    def timeout(signum, frame):
        raise AssertionError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def expect_format_error(path, phrase: str, format: str | None = None) -> FormatError:
    with no_hang(), pytest.raises(FormatError) as info:
        read_index(path, format)
    message = str(info.value)
    assert str(path) in message
    assert phrase in message, message
    assert info.value.path == str(path)
    assert isinstance(info.value, ValueError)
    return info.value


def bytes_at(path, tensor: TensorInfo) -> bytes:
    with open(path, "rb") as f:
        f.seek(tensor.offset)
        return f.read(tensor.nbytes)


def assert_within_file(index: ParamIndex) -> None:
    assert index.file_length == os.path.getsize(index.path)
    for t in index:
        assert 0 <= t.offset and t.end <= index.file_length


# --- dtypes ----------------------------------------------------------------------


def test_dtype_table_sizes_agree_with_numpy_dtypes():
    for name, info in DTYPES.items():
        assert numpy_dtype(name).itemsize == info.itemsize, name
        assert info.name == name


@pytest.mark.parametrize(
    "numpy_type, name",
    [(np.bool_, "BOOL"), (np.uint8, "U8"), (np.int8, "I8"), (np.int16, "I16"), (np.uint16, "U16"),
     (np.float16, "F16"), (np.int32, "I32"), (np.uint32, "U32"), (np.float32, "F32"), (np.int64, "I64"),
     (np.uint64, "U64"), (np.float64, "F64"), (np.complex64, "C64")],
)  # fmt: skip
def test_dtype_from_numpy_and_back(numpy_type, name):
    assert dtype_from_numpy(np.dtype(numpy_type)) == name
    assert numpy_dtype(name) == np.dtype(numpy_type)


@pytest.mark.skipif(DTYPES["BF16"].numpy is not None, reason="ml_dtypes is installed, so numpy has BF16/F8 types")
def test_types_numpy_lacks_get_same_width_standins():
    assert DTYPES["BF16"].numpy is None
    assert numpy_dtype("BF16") == np.dtype("<u2")
    assert numpy_dtype("F8_E4M3") == numpy_dtype("F8_E5M2") == np.dtype("u1")


@pytest.mark.parametrize("bad", [np.dtype(">f4"), np.dtype("O"), np.dtype("U3"), np.dtype([("a", "<f4")]), np.complex128])
def test_dtype_from_numpy_refuses_what_safetensors_cannot_hold(bad):
    with pytest.raises(ValueError):
        dtype_from_numpy(bad)


def test_numpy_dtype_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown safetensors dtype"):
        numpy_dtype("F128")


# --- ParamIndex ------------------------------------------------------------------


def test_param_index_helpers():
    a = TensorInfo("a", "F32", (2, 2), 8, 16)
    b = TensorInfo("b", "U8", (3,), 24, 3)
    index = ParamIndex("m.bin", "raw", 27, (a, b), {"k": "v"})
    assert len(index) == 2 and list(index) == [a, b]
    assert index.total_bytes == 19
    assert index.by_name("b") is b and a.end == 24
    with pytest.raises(KeyError, match="'zz'"):
        index.by_name("zz")
    assert hash(index) == hash(ParamIndex("m.bin", "raw", 27, (a, b), {"k": "v"}))
    with pytest.raises(ValueError, match="not unique"):
        ParamIndex("m.bin", "raw", 27, (a, a), {})


# --- safetensors -----------------------------------------------------------------


def test_safetensors_round_trip(tmp_path):
    path = tmp_path / "model.safetensors"
    tensors = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "mask": np.array([True, False, True]),
        "bias": np.arange(5, dtype=np.int64),
        "scalar": np.float16(1.5),
        "empty": np.zeros((0, 7), dtype=np.float32),
        "half": np.arange(6, dtype=np.uint16),
        "big_endian": np.arange(3, dtype=">i4"),
        "cols": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
    }
    written = write_safetensors(path, tensors, metadata={"format": "np"}, dtypes={"half": "BF16"})
    index = read_index(path)
    assert index == written
    assert index.format == "safetensors" and index.metadata == {"format": "np"}
    assert_within_file(index)
    assert index.by_name("half").dtype == "BF16"
    assert index.by_name("scalar").shape == ()
    assert index.by_name("empty").nbytes == 0
    for name, array in tensors.items():
        t = index.by_name(name)
        assert t.shape == np.shape(array)
        expected = np.ascontiguousarray(array, dtype=np.asarray(array).dtype.newbyteorder("<")).tobytes()
        assert bytes_at(path, t) == expected, name
        assert t.offset % DTYPES[t.dtype].itemsize == 0, "each tensor aligned to its item size"
    assert (index.tensors[0].offset - 8) % 8 == 0, "header padded to 8 bytes"
    assert not (tmp_path / "model.safetensors.partial").exists()


def test_safetensors_writer_checks_dtype_overrides(tmp_path):
    with pytest.raises(ValueError, match="cannot store float32"):
        write_safetensors(tmp_path / "x.safetensors", {"w": np.ones(2, np.float32)}, dtypes={"w": "BF16"})
    with pytest.raises(ValueError, match="not being written"):
        write_safetensors(tmp_path / "x.safetensors", {"w": np.ones(2)}, dtypes={"v": "F64"})
    with pytest.raises(ValueError):
        write_safetensors(tmp_path / "x.safetensors", {"w": np.array(["text"])})
    assert list(tmp_path.iterdir()) == []


def test_real_safetensors_library_reads_what_we_write(tmp_path):
    st = pytest.importorskip("safetensors", reason="the safetensors library is not installed")
    from safetensors.numpy import load_file

    path = tmp_path / "model.safetensors"
    tensors = {
        "w": np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32),
        "b": np.arange(7, dtype=np.uint8),
        "i": np.arange(3, dtype=np.int64),
        "h": np.arange(3, dtype=np.float16),
    }
    write_safetensors(path, tensors, metadata={"author": "halsim"})
    loaded = load_file(str(path))
    assert loaded.keys() == tensors.keys()
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)

    # BF16 has no numpy type, so only the header can be checked without ml_dtypes.
    write_safetensors(path, {"h": np.arange(4, dtype=np.uint16), "w": np.ones(2, np.float32)}, dtypes={"h": "BF16"})
    with st.safe_open(str(path), "np") as f:
        assert sorted(f.keys()) == ["h", "w"]
        np.testing.assert_array_equal(f.get_tensor("w"), np.ones(2, np.float32))


def test_page_aligned_data_area_loads_with_real_library(tmp_path):
    path = tmp_path / "paged.safetensors"
    tensors = {"w": np.arange(6, dtype=np.float32), "b": np.arange(3, dtype=np.uint8)}
    index = write_safetensors(path, tensors, alignment=4096)
    assert index.tensors[0].offset == 4096
    for name, array in tensors.items():
        assert bytes_at(path, index.by_name(name)) == array.tobytes()
    with pytest.raises(ValueError, match="multiple of 8"):
        write_safetensors(path, tensors, alignment=12)
    try:
        from safetensors.numpy import load_file
    except ImportError:
        pytest.skip("the safetensors library is not installed")
    loaded = load_file(str(path))
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)


def test_empty_tensors_keep_layout_order(tmp_path):
    path = tmp_path / "empties.safetensors"
    tensors = {"z": np.zeros(0, np.float32), "a": np.ones(2, np.float32), "y": np.zeros(0, np.float32), "b": np.ones(1, np.float32)}
    index = write_safetensors(path, tensors)
    assert [t.name for t in index] == ["z", "a", "y", "b"]


def test_we_read_what_the_real_safetensors_library_writes(tmp_path):
    pytest.importorskip("safetensors", reason="the safetensors library is not installed")
    from safetensors.numpy import save_file

    path = tmp_path / "theirs.safetensors"
    tensors = {"a": np.arange(10, dtype=np.float32), "b": np.ones((2, 3), dtype=np.int16), "c": np.zeros(3, np.uint8)}
    save_file(tensors, str(path), metadata={"m": "1"})
    index = read_index(path)
    assert index.metadata == {"m": "1"}
    for name, array in tensors.items():
        assert bytes_at(path, index.by_name(name)) == array.tobytes()


def test_layout_writer_streams_pieces_in_order(tmp_path):
    path = tmp_path / "layout.safetensors"
    calls = []

    def fill(name: str, piece: memoryview) -> None:
        start = sum(n for seen, n in calls if seen == name)
        calls.append((name, len(piece)))
        piece[:] = bytes((start + i) % 251 for i in range(len(piece)))

    index = write_safetensors_layout(path, [("a", "F32", (25,)), ("b", "U8", (7,))], fill, piece_bytes=16)
    assert calls == [("a", 16), ("a", 16), ("a", 16), ("a", 16), ("a", 16), ("a", 16), ("a", 4), ("b", 7)]
    for t in index:
        assert bytes_at(path, t) == bytes(i % 251 for i in range(t.nbytes))


def test_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"old contents")

    def failing_fill(name, piece):
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_safetensors_layout(path, [("w", "F32", (1024,))], failing_fill)
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_sparse_file_over_4_gib(tmp_path):
    path = tmp_path / "huge.safetensors"
    index = write_safetensors_layout(path, [("big", "F32", (GiB + 3,)), ("after", "F32", (2, 8))])
    st = os.stat(path)
    assert st.st_size > 4 * GiB
    after = index.by_name("after")
    assert after.offset > 4 * GiB and after.end == st.st_size
    assert read_index(path) == index
    assert bytes_at(path, after) == bytes(64)  # the hole reads as zeros


def test_handwritten_header_beyond_4_gib(tmp_path):
    path = tmp_path / "hand.safetensors"
    begin = 5 * GiB
    header = {"x": entry("U8", (16,), (begin, begin + 16))}
    path.write_bytes(safetensors_bytes(header))
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) + begin + 16)
    t = read_index(path).by_name("x")
    assert t.offset == 8 + len(json.dumps(header)) + begin and t.nbytes == 16


def test_safetensors_with_gaps_and_no_tensors(tmp_path):
    path = tmp_path / "gappy.safetensors"
    path.write_bytes(safetensors_bytes({"a": entry("U8", (4,), (0, 4)), "b": entry("U8", (4,), (8, 12))}, bytes(16)))
    assert [t.name for t in read_index(path)] == ["a", "b"]
    path.write_bytes(safetensors_bytes({"__metadata__": {"k": "v"}}))
    index = read_index(path)
    assert len(index) == 0 and index.metadata == {"k": "v"}


HUGE = 1 << 62

MALFORMED_SAFETENSORS = {
    "empty": (b"", "file is empty"),
    "short": (b"\x01\x02\x03\x04\x05", "file is 5 bytes, shorter than the 8-byte header length"),
    "header longer than file": (safetensors_bytes(b"{}", header_length=9999999), "header length 9999999 exceeds file size 10"),
    "header one byte too long": (safetensors_bytes(b"{}", header_length=3), "header length 3 exceeds file size 10"),
    "header over limit": (safetensors_bytes(b"{}", header_length=200 << 20), "exceeds the 104857600-byte limit"),
    "not utf-8": (safetensors_bytes(b'{"\xff": 1}'), "not valid UTF-8"),
    "bad json": (safetensors_bytes(b'{"w": '), "not valid JSON"),
    "deep json": (safetensors_bytes(b"[" * 100000 + b"]" * 100000), "not valid JSON"),
    "json list": (safetensors_bytes(b"[1, 2]"), "header is not a JSON object (got list)"),
    "json string": (safetensors_bytes(b'"x"'), "header is not a JSON object (got str)"),
    "entry not object": (safetensors_bytes({"w": [1]}), "tensor 'w': entry is not a JSON object (got list)"),
    "missing key": (safetensors_bytes({"w": {"dtype": "F32", "data_offsets": [0, 0]}}), "tensor 'w': missing key 'shape'"),
    "extra key": (safetensors_bytes({"w": {**entry(), "foo": 1}}, bytes(16)), "tensor 'w': unexpected key 'foo'"),
    "unknown dtype": (safetensors_bytes({"w": entry(dtype="F128")}, bytes(16)), "tensor 'w': unknown dtype 'F128'"),
    "dtype not string": (safetensors_bytes({"w": entry(dtype=4)}, bytes(16)), "unknown dtype 4"),
    "negative dim": (safetensors_bytes({"w": entry(shape=(-4,))}, bytes(16)), "shape [-4] is not a list of non-negative integers"),
    "float dim": (safetensors_bytes({"w": entry(shape=(4.0,))}, bytes(16)), "is not a list of non-negative integers"),
    "bool dim": (safetensors_bytes({"w": entry(shape=(True,))}, bytes(16)), "is not a list of non-negative integers"),
    "shape not list": (safetensors_bytes({"w": {**entry(), "shape": 4}}, bytes(16)), "shape 4 is not a list"),
    "huge shape": (safetensors_bytes({"w": entry(shape=(HUGE,) * 50)}, bytes(16)), "do not match shape"),
    "one offset": (safetensors_bytes({"w": entry(offsets=(0,))}, bytes(16)), "data_offsets [0] are not two non-negative integers"),
    "negative offset": (safetensors_bytes({"w": entry(offsets=(-16, 0))}, bytes(16)), "are not two non-negative integers"),
    "bool offset": (safetensors_bytes({"w": entry(offsets=(False, 16))}, bytes(16)), "are not two non-negative integers"),
    "float offset": (safetensors_bytes({"w": entry(offsets=(0, 16.0))}, bytes(16)), "are not two non-negative integers"),
    "begin after end": (safetensors_bytes({"w": entry(offsets=(16, 0))}, bytes(16)), "data_offsets [16, 0] begin after they end"),
    "past end of file": (safetensors_bytes({"w": entry(offsets=(0, 64))}, bytes(16)), "tensor 'w': data_offsets [0, 64] run past the end of the file"),
    "size mismatch": (safetensors_bytes({"w": entry(offsets=(0, 64))}, bytes(64)), "tensor 'w': data_offsets [0, 64] do not match 4 elements of F32 (16 bytes)"),
    "overlap": (safetensors_bytes({"a": entry(offsets=(0, 16)), "b": entry(offsets=(8, 24))}, bytes(24)), "tensors 'a' (file bytes [132, 148)) and 'b' (file bytes [140, 156)) overlap"),
    "duplicate name": (safetensors_bytes('{"w": %s, "w": %s}' % (json.dumps(entry()), json.dumps(entry())), bytes(16)), "duplicate key 'w'"),
    "metadata not object": (safetensors_bytes({"__metadata__": ["a"]}), "__metadata__ is not a JSON object"),
    "metadata value not string": (safetensors_bytes({"__metadata__": {"n": 1}}), "key 'n' has a int value"),
}  # fmt: skip


@pytest.mark.parametrize("case", MALFORMED_SAFETENSORS)
def test_malformed_safetensors(tmp_path, case):
    content, phrase = MALFORMED_SAFETENSORS[case]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    expect_format_error(path, phrase)


# --- not a regular file ------------------------------------------------------------


@pytest.mark.parametrize("format", [None, "safetensors", "npy", "npz", "raw"])
def test_fifo_refused_without_blocking(tmp_path, format):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    expect_format_error(fifo, "is a FIFO, not a regular file", format)


def test_fifo_without_extension_refused_while_sniffing(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    expect_format_error(fifo, "is a FIFO, not a regular file")


@pytest.mark.parametrize("format", [None, "safetensors", "npy", "npz", "raw"])
def test_directory_refused(tmp_path, format):
    directory = tmp_path / "weights.npz"
    directory.mkdir()
    expect_format_error(directory, "is a directory, not a regular file", format)


@pytest.mark.parametrize("format", [None, "safetensors", "npy", "npz", "raw"])
def test_missing_file(tmp_path, format):
    expect_format_error(tmp_path / "nothing.safetensors", "file does not exist", format)


# --- npy ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_versions(tmp_path, version):
    path = tmp_path / "arr.npy"
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, array, version=version)
    index = read_index(path)
    (t,) = index.tensors
    assert (index.format, t.name, t.dtype, t.shape) == ("npy", "arr", "I32", (2, 3, 4))
    assert bytes_at(path, t) == array.tobytes()
    assert index.metadata == {}


def test_npy_fortran_order(tmp_path):
    path = tmp_path / "cols.npy"
    array = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    index = write_npy(path, array)
    (t,) = index.tensors
    assert t.shape == (3, 4) and t.nbytes == 48
    assert json.loads(index.metadata["fortran_order"]) == ["cols"]
    assert bytes_at(path, t) == array.tobytes(order="F")
    np.testing.assert_array_equal(np.load(path), array)


def test_npy_round_trip_and_scalar(tmp_path):
    for array in [np.arange(5, dtype=np.uint64), np.float64(2.5), np.zeros((0, 3), np.int8), np.array([1 + 2j], np.complex64)]:
        path = tmp_path / "x.npy"
        (t,) = write_npy(path, array).tensors
        assert t.shape == np.shape(array) and bytes_at(path, t) == np.asarray(array).tobytes()
        np.testing.assert_array_equal(np.load(path), array)


def test_npy_writer_refuses_objects(tmp_path):
    with pytest.raises(ValueError):
        write_npy(tmp_path / "x.npy", np.array([object()]))
    assert list(tmp_path.iterdir()) == []


HEADER = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }"
MALFORMED_NPY = {
    "empty": (b"", "file is empty"),
    "bad magic": (b"\x93NUMPX\x01\x00" + bytes(40), "missing \\x93NUMPY magic"),
    "short": (b"\x93NUMPY\x01", ".npy header is cut short: 7 bytes"),
    "version 4.0": (npy_bytes(HEADER, bytes(16), version=(4, 0)), "unsupported .npy version 4.0"),
    "no header length": (b"\x93NUMPY\x02\x00\x10\x00", "header is cut short"),
    "header past end": (b"\x93NUMPY\x01\x00\xff\x00{'descr'", ".npy header length 255 exceeds file size"),
    "header over limit": (b"\x93NUMPY\x02\x00\x01\x00\x01\x00", ".npy header length 65537 exceeds the 65536-byte limit"),
    "not a dict": (npy_bytes("[1, 2]"), ".npy header is not a dict literal"),
    "code, not literal": (npy_bytes("{'descr': __import__('os').getcwd()}"), "not a valid dict literal"),
    "bad syntax": (npy_bytes("{'descr': "), "not a valid dict literal"),
    "missing key": (npy_bytes("{'descr': '<f4', 'shape': (4,)}", bytes(16)), "missing ['fortran_order']"),
    "extra key": (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'x': 1}", bytes(16)), "unexpected [\"'x'\"]"),
    "object dtype": (npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", bytes(8)), "object dtype '|O' is not supported"),
    "structured dtype": (npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", bytes(4)), "structured dtype is not supported"),
    "big-endian": (npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (4,)}", bytes(16)), "dtype '>f4' is not little-endian"),
    "string dtype": (npy_bytes("{'descr': '<U3', 'fortran_order': False, 'shape': (1,)}", bytes(12)), "unsupported dtype '<U3'"),
    "float128": (npy_bytes("{'descr': '<f16', 'fortran_order': False, 'shape': (1,)}", bytes(16)), "dtype '<f16' has no safetensors equivalent"),
    "descr not str": (npy_bytes("{'descr': 4, 'fortran_order': False, 'shape': (1,)}", bytes(16)), "descr 4 is not a dtype string"),
    "fortran not bool": (npy_bytes("{'descr': '<f4', 'fortran_order': 1, 'shape': (4,)}", bytes(16)), "fortran_order 1 is not True or False"),
    "negative dim": (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}", bytes(16)), "shape (-4,) is not a tuple of non-negative integers"),
    "shape list": (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': [4]}", bytes(16)), "is not a tuple of non-negative integers"),
    "bool dim": (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (True,)}", bytes(16)), "is not a tuple of non-negative integers"),
    "truncated data": (npy_bytes(HEADER, bytes(15)), "array data is truncated: shape (4,) of F32 needs more than the 15 bytes"),
    "huge shape": (npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (%s)}" % (f"{HUGE}," * 40), bytes(16)), "array data is truncated"),
    "header not utf-8": (npy_bytes("{'descr': '<f4\xe9'}", version=(3, 0)), ".npy header is not valid utf-8"),
}  # fmt: skip


@pytest.mark.parametrize("case", MALFORMED_NPY)
def test_malformed_npy(tmp_path, case):
    content, phrase = MALFORMED_NPY[case]
    path = tmp_path / "bad.npy"
    path.write_bytes(content)
    expect_format_error(path, phrase)


# --- npz ---------------------------------------------------------------------------


def test_npz_offsets_point_at_array_bytes(tmp_path):
    arrays = {
        "w": np.arange(20, dtype=np.float32).reshape(4, 5),
        "b": np.arange(3, dtype=np.int16),
        "cols": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "flag": np.array(True),
    }
    for writer in ("ours", "numpy"):
        path = tmp_path / f"{writer}.npz"
        if writer == "ours":
            write_npz(path, arrays)
        else:
            np.savez(path, **arrays)
        index = read_index(path)
        assert index.format == "npz" and [t.name for t in index] == list(arrays)
        assert json.loads(index.metadata["fortran_order"]) == ["cols"]
        assert_within_file(index)
        for name, array in arrays.items():
            t = index.by_name(name)
            assert t.shape == array.shape
            assert bytes_at(path, t) == array.tobytes(order="A"), (writer, name)
        loaded = np.load(path)
        for name, array in arrays.items():
            np.testing.assert_array_equal(loaded[name], array)


def test_npz_member_with_differing_local_extra_field(tmp_path):
    # The local header carries an extra field the central directory does not:
    # the data offset must come from the local header.
    path = tmp_path / "extra.npz"
    array = np.arange(8, dtype=np.uint8)
    payload = io.BytesIO()
    np.lib.format.write_array(payload, array)
    with zipfile.ZipFile(path, "w") as archive:
        info = zipfile.ZipInfo("a.npy")
        info.extra = struct.pack("<HH", 0xCAFE, 12) + bytes(12)
        archive.writestr(info, payload.getvalue())
    with open(path, "r+b") as f:  # drop the extra field from the central directory copy
        content = f.read()
    central = content.rindex(b"PK\x01\x02")
    assert struct.unpack_from("<H", content, central + 30)[0] == 16
    patched = bytearray(content)
    del patched[central + 46 + 5 : central + 46 + 5 + 16]
    struct.pack_into("<H", patched, central + 30, 0)
    end = patched.rindex(b"PK\x05\x06")
    struct.pack_into("<I", patched, end + 12, struct.unpack_from("<I", patched, end + 12)[0] - 16)
    path.write_bytes(bytes(patched))
    (t,) = read_index(path).tensors
    assert bytes_at(path, t) == array.tobytes()


def test_compressed_npz_refused(tmp_path):
    path = tmp_path / "small.npz"
    np.savez_compressed(path, w=np.zeros(100))
    expect_format_error(path, "member 'w.npy' is compressed (deflate); only stored members can be indexed")


def test_npz_with_foreign_member_refused(tmp_path):
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    expect_format_error(path, "member 'readme.txt' is not a .npy array")


def test_npz_with_bad_npy_member_names_the_member(tmp_path):
    path = tmp_path / "bad.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", bytes(8)))
    expect_format_error(path, "member 'w.npy': object dtype")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", npy_bytes(HEADER, bytes(8)))
    expect_format_error(path, "member 'w.npy': array data is truncated")


def test_npz_duplicate_members_refused(tmp_path):
    path = tmp_path / "dup.npz"
    payload = io.BytesIO()
    np.lib.format.write_array(payload, np.zeros(2))
    with pytest.warns(UserWarning), zipfile.ZipFile(path, "w") as archive:
        archive.writestr("w.npy", payload.getvalue())
        archive.writestr("w.npy", payload.getvalue())
    expect_format_error(path, "duplicate member 'w.npy'")


@pytest.mark.parametrize(
    "content, phrase",
    [(b"", "file is empty"), (b"PK\x03\x04" + bytes(40), "not a valid zip archive"), (b"just some bytes", "not a valid zip archive")],
)
def test_npz_not_a_zip(tmp_path, content, phrase):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    expect_format_error(path, phrase)


def test_npz_local_header_past_end(tmp_path):
    path = tmp_path / "cut.npz"
    write_npz(path, {"a": np.zeros(4)})
    content = path.read_bytes()
    central = content.rindex(b"PK\x01\x02")
    patched = bytearray(content)
    struct.pack_into("<I", patched, central + 42, len(content) - 10)  # local header offset near the end
    path.write_bytes(bytes(patched))
    with pytest.raises(FormatError) as info:
        read_index(path)
    assert str(path) in str(info.value) and "member 'a.npy'" in str(info.value)


# --- raw and sniffing --------------------------------------------------------------


def test_raw_blob(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(bytes(range(100)))
    index = read_index(path)
    assert index.format == "raw"
    assert index.tensors == (TensorInfo("weights", "U8", (100,), 0, 100),)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    assert read_index(empty).tensors == (TensorInfo("empty", "U8", (0,), 0, 0),)


def test_format_sniffed_from_magic_without_extension(tmp_path):
    write_safetensors(tmp_path / "a", {"w": np.ones(3, np.float32)})
    write_npy(tmp_path / "b", np.ones(3))
    write_npz(tmp_path / "c", {"x": np.ones(3)})
    (tmp_path / "d").write_bytes(b"\x05" + bytes(20))
    formats = [read_index(tmp_path / name).format for name in "abcd"]
    assert formats == ["safetensors", "npy", "npz", "raw"]


def test_extension_wins_and_explicit_format(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x93NUMPY garbage")
    expect_format_error(path, "header length")
    assert read_index(path, "raw").format == "raw"
    with pytest.raises(ValueError, match="unknown format 'onnx'"):
        read_index(path, "onnx")
