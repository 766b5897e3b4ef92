import os
import threading

import numpy as np
import pytest

from halsim.errors import FileAccessError
from halsim.files import Access, FdFile, MappedFile, MemoryFile, open_file


def test_memory_file_reads_and_checks_bounds():
    data = np.arange(256, dtype=np.uint8)
    f = MemoryFile(data)
    out = bytearray(10)
    assert f.read_into(100, out) == 10
    assert bytes(out) == bytes(range(100, 110))
    with pytest.raises(FileAccessError, match="outside the file"):
        f.read_into(250, bytearray(10))
    with pytest.raises(FileAccessError, match="negative"):
        f.read_into(-1, bytearray(1))
    f.write_from(0, b"\xff\xfe")
    assert data[0] == 255 and data[1] == 254


def test_memory_file_read_only_buffer_refuses_writes():
    f = MemoryFile(b"abcdef", name="blob")
    assert f.access == Access.READ
    with pytest.raises(FileAccessError, match="blob: file was not opened for write"):
        f.write_from(0, b"x")
    with pytest.raises(FileAccessError):
        MemoryFile(b"abc", access=Access.READ_WRITE)


def test_mapped_file_has_page_aligned_host_view(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 64)
    with MappedFile(path) as f:
        assert f.length == 16384
        assert f.host_alignment() % 4096 == 0
        assert f.host_address() % 4096 == 0
        assert bytes(f.host_view()[10:13]) == bytes([10, 11, 12])
        out = np.empty(5, np.uint8)
        f.read_into(256 + 3, out)
        assert list(out) == [3, 4, 5, 6, 7]
    assert f.closed
    with pytest.raises(FileAccessError, match="closed"):
        f.read_into(0, bytearray(1))


def test_truncated_file_gives_error_not_sigbus(tmp_path):
    path = tmp_path / "t.bin"
    path.write_bytes(b"x" * 100_000)
    with MappedFile(path) as f:
        os.truncate(path, 10)
        with pytest.raises(FileAccessError, match="short read"):
            f.read_into(50_000, bytearray(100))
        with pytest.raises(FileAccessError, match="truncated"):
            f.check_unchanged()


def test_truncate_to_waits_for_copies_out_of_the_mapping(tmp_path):
    # Fault injection shrinks a mapped file while copies run: a copy already past its size
    # check must finish before the file shrinks (or it would SIGBUS), and the next one must fail.
    path = tmp_path / "g.bin"
    path.write_bytes(b"y" * 3 * 4096)
    with MappedFile(path) as f:
        copying, done = threading.Event(), threading.Event()

        def copy():
            with f.touching():
                copying.set()
                done.wait(10)
                if path.stat().st_size == 3 * 4096:  # touch the last page only while it is there
                    seen.append(bytes(f.host_view()[2 * 4096:2 * 4096 + 4]))

        seen: list[bytes] = []
        copier = threading.Thread(target=copy)
        copier.start()
        assert copying.wait(10)
        shrinker = threading.Thread(target=f.truncate_to, args=(4096,))
        shrinker.start()
        shrinker.join(0.2)
        held_back = shrinker.is_alive() and path.stat().st_size == 3 * 4096
        done.set()
        copier.join(10)
        assert held_back, "the file shrank under a copy out of its mapping"
        shrinker.join(10)
        assert seen == [b"yyyy"] and path.stat().st_size == 4096
        with pytest.raises(FileAccessError, match="truncated"):
            with f.touching():
                pass


def test_offsets_beyond_4gib_in_a_sparse_file(tmp_path):
    path = tmp_path / "sparse.bin"
    offset = (5 << 30) + 12345
    with open(path, "wb") as raw:
        raw.truncate(offset + 4096)
        raw.seek(offset)
        raw.write(b"halsim")
    for kind in ("fd", "mapped"):
        with open_file(path, kind=kind) as f:
            out = bytearray(6)
            f.read_into(offset, out)
            assert bytes(out) == b"halsim"


def test_fd_file_write_then_read(tmp_path):
    path = tmp_path / "w.bin"
    with FdFile(path, Access.READ_WRITE, length=32) as f:
        f.write_from(8, b"abcd")
        out = bytearray(4)
        f.read_into(8, out)
        assert bytes(out) == b"abcd"
        with pytest.raises(FileAccessError):
            f.write_from(30, b"abcd")
    assert os.path.getsize(path) == 32


@pytest.mark.parametrize("maker", ["dir", "fifo", "missing"])
def test_non_regular_files_refused(tmp_path, maker):
    path = tmp_path / "thing"
    if maker == "dir":
        path.mkdir()
    elif maker == "fifo":
        os.mkfifo(path)
    with pytest.raises(FileAccessError, match=str(path)):
        open_file(path)
