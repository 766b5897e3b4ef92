"""Malformed and hostile model files, end to end through ``halsim.upload``.

The parsers' own hostile tests live with the formats (tests/test_formats*.py);
these check what a runtime sees: the documented exception (FormatError) naming
the file and the problem, nothing allocated on the device, no descriptor left
open, no absurd allocation — and a mapped file truncated by another process
during an upload gives an error, not SIGBUS.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile

import numpy as np
import pytest

import halsim
from halsim.errors import FormatError, HalsimError
from halsim.formats import write_npy

from .counting import CountingCpuDevice


def _st(header: object, data: bytes = b"", *, raw: bytes | None = None, length: int | None = None) -> bytes:
    body = raw if raw is not None else json.dumps(header).encode()
    n = len(body) if length is None else length
    return struct.pack("<Q", n) + body + data


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def _npy(header: str, data: bytes = b"", magic=b"\x93NUMPY", version=b"\x01\x00") -> bytes:
    head = header.encode("latin1")
    pad = 64 - (len(magic) + 2 + 2 + len(head) + 1) % 64
    head = head + b" " * pad + b"\n"
    return magic + version + struct.pack("<H", len(head)) + head + data


def _good_npy() -> bytes:
    out = io.BytesIO()
    np.save(out, np.arange(6, dtype=np.float32))
    return out.getvalue()


def _npz(members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return out.getvalue()


# (name, file name, bytes, words the message must contain — any one of them)
CORPUS: list[tuple[str, str, bytes, tuple[str, ...]]] = [
    ("st-header-longer-than-file", "m.safetensors", _st({"a": _entry()}, b"\0" * 8, length=10_000), ("header length",)),
    ("st-header-absurd", "m.safetensors", _st({}, raw=b"{}", length=(1 << 63) + 5), ("header length",)),
    ("st-header-2-pow-64-minus-1", "m.safetensors", struct.pack("<Q", (1 << 64) - 1) + b"{}", ("header length",)),
    ("st-header-zero", "m.safetensors", _st({}, raw=b"", length=0) + b"\0" * 8, ("header", "JSON", "json")),
    ("st-non-utf8", "m.safetensors", _st(None, raw=b'{"\xff\xfe": 1}'), ("UTF-8", "utf-8", "decode")),
    ("st-invalid-json", "m.safetensors", _st(None, raw=b'{"a": {"dtype": "F32",'), ("JSON", "json")),
    ("st-json-list", "m.safetensors", _st([1, 2, 3]), ("object", "JSON", "dict", "mapping")),
    ("st-offsets-past-data", "m.safetensors", _st({"a": _entry(offsets=(0, 8))}, b"\0" * 4), ("offset", "outside", "past", "end")),
    ("st-offsets-reversed", "m.safetensors", _st({"a": _entry(offsets=(8, 0))}, b"\0" * 8), ("offset",)),
    ("st-overlapping", "m.safetensors", _st({"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(4, 12))}, b"\0" * 12), ("overlap",)),
    ("st-shape-dtype-mismatch", "m.safetensors", _st({"a": _entry(shape=(3,), offsets=(0, 8))}, b"\0" * 12), ("shape", "bytes")),
    ("st-unknown-dtype", "m.safetensors", _st({"a": _entry(dtype="F33")}, b"\0" * 8), ("dtype",)),
    ("st-negative-dim", "m.safetensors", _st({"a": _entry(shape=(-2,), offsets=(0, 8))}, b"\0" * 8), ("shape", "negative")),
    ("st-negative-offset", "m.safetensors", _st({"a": _entry(offsets=(-8, 0))}, b"\0" * 8), ("offset", "negative")),
    ("st-float-offset", "m.safetensors", _st({"a": _entry(offsets=(0.0, 8.0))}, b"\0" * 8), ("offset", "integer")),
    ("st-string-shape", "m.safetensors", _st({"a": _entry(shape=("2",))}, b"\0" * 8), ("shape",)),
    ("st-bool-offset", "m.safetensors", _st({"a": _entry(offsets=(False, True))}, b"\0" * 8), ("offset", "integer")),
    ("st-duplicate-names", "m.safetensors",
     _st(None, raw=b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
                   b'"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}') + b"\0\0", ("duplicate", "twice")),
    ("st-three-offsets", "m.safetensors", _st({"a": _entry(offsets=(0, 4, 8))}, b"\0" * 8), ("offset",)),
    ("st-missing-dtype", "m.safetensors", _st({"a": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8), ("dtype",)),
    ("st-entry-not-object", "m.safetensors", _st({"a": [1, 2]}, b"\0" * 8), ("a",)),
    ("st-bad-metadata", "m.safetensors", _st({"__metadata__": {"k": 1}}), ("metadata",)),
    ("st-huge-dims", "m.safetensors", _st({"a": _entry(shape=(1 << 62, 1 << 62), offsets=(0, 8))}, b"\0" * 8), ("shape", "bytes")),
    ("st-truncated-header", "m.safetensors", _st({"a": _entry()}, b"\0" * 8)[:20], ("header",)),
    ("st-empty", "m.safetensors", b"", ("empty",)),
    ("st-seven-bytes", "m.safetensors", b"\x02\0\0\0\0\0\0", ("8-byte", "shorter", "header")),
    ("npy-bad-magic", "m.npy", b"\x93NUMPZ" + _good_npy()[6:], ("magic", "npy")),
    ("npy-bad-version", "m.npy", _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", b"\0" * 8, version=b"\x09\x00"), ("version",)),
    ("npy-header-not-dict", "m.npy", _npy("[1, 2, 3]", b"\0" * 8), ("header", "dict")),
    ("npy-header-code", "m.npy", _npy("__import__('os').system('false')", b""), ("header",)),
    ("npy-missing-descr", "m.npy", _npy("{'fortran_order': False, 'shape': (2,), }", b"\0" * 8), ("descr",)),
    ("npy-data-short", "m.npy", _good_npy()[:-5], ("bytes", "data", "end", "short", "truncated")),
    ("npy-object-dtype", "m.npy", _npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", b"\0" * 16), ("dtype", "descr", "O")),
    ("npy-negative-shape", "m.npy", _npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", b"\0" * 8), ("shape",)),
    ("npy-empty", "m.npy", b"", ("empty", "magic", "short", "past the end")),
    ("npz-compressed", "m.npz", _npz({"a.npy": _good_npy()}, zipfile.ZIP_DEFLATED), ("compress",)),
    ("npz-not-a-zip", "m.npz", b"PK\x03\x04 this is not a zip at all" * 3, ("zip",)),
    ("npz-foreign-member", "m.npz", _npz({"a.npy": _good_npy(), "notes.txt": b"hello"}), ("notes.txt", "member")),
    ("npz-bad-member", "m.npz", _npz({"a.npy": b"\x93NUMPY garbage"}), ("a",)),
    ("npz-truncated", "m.npz", _npz({"a.npy": _good_npy(), "b.npy": _good_npy()})[:-30], ("zip", "end", "truncated", "directory")),
    ("npz-empty", "m.npz", b"", ("empty", "zip")),
]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_corpus_is_big_enough():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("name,filename,content,words", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_file_upload(tmp_path, name, filename, content, words):
    path = tmp_path / filename
    path.write_bytes(content)
    device = CountingCpuDevice()
    fds = _open_fds()
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as info:
            halsim.upload(path, device, "streaming:chunk=4KiB,slots=2")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert str(path) in message, f"the error does not name the file: {message}"
    assert any(w.lower() in message.lower() for w in words), f"the error does not say what is wrong: {message}"
    assert device.opened == 0 and device.nothing_live(), "a malformed file got device memory"
    assert _open_fds() == fds, "a descriptor was left open"
    assert peak < 32 << 20, f"reading a {len(content)}-byte file took {peak} bytes of memory"


def _fifo(path):
    os.mkfifo(path)


def _directory(path):
    os.mkdir(path)


def _symlink_to_dir(path):
    os.symlink(os.path.dirname(path), path)


@pytest.mark.parametrize("maker", [_fifo, _directory, _symlink_to_dir])
@pytest.mark.parametrize("filename", ["m.safetensors", "m.npy", "m.npz", "m.bin"])
def test_not_a_regular_file(tmp_path, maker, filename):
    """A FIFO must not block the upload; a directory is refused; both name the path."""
    path = str(tmp_path / filename)
    maker(path)
    device = CountingCpuDevice()
    with pytest.raises(HalsimError) as info:
        halsim.upload(path, device)
    assert path in str(info.value) and "regular file" in str(info.value)
    assert device.opened == 0


def test_missing_file(tmp_path):
    path = str(tmp_path / "nowhere.safetensors")
    with pytest.raises(HalsimError, match="nowhere.safetensors"):
        halsim.upload(path, CountingCpuDevice())


# --- a mapped file truncated by another process, mid-upload -------------------------

TRUNCATE_SCRIPT = textwrap.dedent('''
    import subprocess, sys
    import numpy as np
    import halsim
    from halsim.caps import DeviceCaps
    from halsim.backends.cpu import CpuDevice
    from halsim.faults import FaultInjector
    from halsim.formats import write_safetensors

    path, policy, caps_kind, at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    rng = np.random.default_rng(0)
    write_safetensors(path, {f"t{i}": rng.standard_normal(20_000 + i).astype(np.float32) for i in range(6)},
                      alignment=4096) if "alignment" in write_safetensors.__code__.co_varnames else \\
        write_safetensors(path, {f"t{i}": rng.standard_normal(20_000 + i).astype(np.float32) for i in range(6)})

    class OtherProcess(FaultInjector):
        """At the at-th step, another process truncates the file to a quarter."""
        def __init__(self):
            super().__init__()
            self.steps = 0
        def before(self, step, execution):
            with self._lock:
                self.steps += 1
                now = self.steps == at + 1
            if now:
                import os
                subprocess.run(["truncate", "-s", str(os.path.getsize(path) // 4), path], check=True)

    device = CpuDevice()
    if caps_kind == "dedicated":
        device.caps = DeviceCaps(kind="dedicated", can_import_host=True, import_alignment=4096)
    try:
        with halsim.upload(path, device, policy, faults=OtherProcess(), verify=True) as done:
            print("OK", done.plan.policy.spec())
    except halsim.HalsimError as err:
        print("ERROR", type(err).__name__, err)
''')


@pytest.mark.parametrize("policy,caps", [
    ("import:piece=16KiB", "cpu"),  # in place: buffers are the mapping
    ("import:piece=16KiB", "dedicated"),  # copies out of imported pieces
    ("streaming:chunk=8KiB,slots=2", "cpu"),
    ("direct:chunk=8KiB", "cpu"),
    ("staged:chunk=8KiB", "cpu"),
])
@pytest.mark.parametrize("at", [0, 1, 3, 7])
def test_truncated_by_another_process_while_uploading(tmp_path, policy, caps, at):
    """In a child process, so a SIGBUS would fail this test instead of killing the suite."""
    path = tmp_path / "model.safetensors"
    run = subprocess.run([sys.executable, "-c", TRUNCATE_SCRIPT, str(path), policy, caps, str(at)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"the upload killed its process (signal {-run.returncode}): {run.stderr[-2000:]}"
    out = run.stdout.strip()
    if out.startswith("OK"):
        # The truncation came after the last step that reads the file: only possible late.
        assert at >= 3, out
    else:
        assert out.startswith("ERROR FileAccessError") and str(path) in out, out
        assert "truncated" in out or "short read" in out or "ended early" in out, out
