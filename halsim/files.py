"""The HAL file API: byte sources and sinks for ``queue_read``/``queue_write``.

Three kinds, as in IREE's HAL file API (PR #14665):

* :class:`MemoryFile` wraps any buffer (bytes, bytearray, numpy array, mmap).
* :class:`MappedFile` maps a path. Its bytes live in host memory, so a device
  may import them with no copy. Reads go through ``pread`` on the same
  descriptor, so a file truncated underneath us gives an error, not SIGBUS.
* :class:`FdFile` uses ``pread``/``pwrite`` only, for files you cannot or
  should not map.

Every call checks its bounds (IREE's memory file did not). Offsets and lengths
are Python ints, so ranges past 4 GiB are exact.
"""

from __future__ import annotations

import enum
import mmap
import os
import stat
import threading
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any

import numpy as np

from halsim.errors import FileAccessError


class Access(enum.IntFlag):
    READ = 1
    WRITE = 2
    READ_WRITE = 3


def _byte_view(buffer: Any, writable: bool = False) -> memoryview:
    view = memoryview(buffer)
    if not view.contiguous:
        raise ValueError("buffer must be contiguous")
    if writable and view.readonly:
        raise ValueError("buffer is read-only")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


def address_of(view: memoryview) -> int:
    """Host address of a contiguous buffer (read-only buffers included)."""
    if len(view) == 0:
        return 0
    return np.frombuffer(view, dtype=np.uint8).ctypes.data


def alignment_of(address: int) -> int:
    """Largest power of two dividing ``address`` (capped at 1 GiB); 0 stays 1 GiB."""
    if address == 0:
        return 1 << 30
    return min(address & -address, 1 << 30)


def copy_bytes(dst: memoryview, src: memoryview) -> None:
    """memcpy that releases the GIL for large copies (numpy does)."""
    np.copyto(np.frombuffer(dst, dtype=np.uint8), np.frombuffer(src, dtype=np.uint8))


class HalFile(ABC):
    """A byte range that steps read from or write to.

    Subclasses implement ``_read``/``_write``; the base checks access and bounds.
    """

    name: str
    access: Access

    def __init__(self, name: str, length: int, access: Access):
        self.name = name
        self._length = length
        self.access = Access(access)
        self.closed = False

    @property
    def length(self) -> int:
        return self._length

    def __len__(self) -> int:
        return self._length

    def _check(self, offset: int, length: int, need: Access) -> None:
        if self.closed:
            raise FileAccessError(self.name, "file is closed")
        if not self.access & need:
            raise FileAccessError(self.name, f"file was not opened for {need.name.lower()}")
        if offset < 0 or length < 0:
            raise FileAccessError(self.name, f"negative offset or length ({offset}, {length})")
        if offset + length > self._length:
            raise FileAccessError(
                self.name,
                f"range [{offset}, {offset + length}) is outside the file ({self._length} bytes)",
            )

    def read_into(self, offset: int, out: Any) -> int:
        """Fill all of ``out`` with bytes starting at ``offset``; returns its length."""
        view = _byte_view(out, writable=True)
        self._check(offset, len(view), Access.READ)
        if len(view):
            self._read(offset, view)
        return len(view)

    def write_from(self, offset: int, data: Any) -> int:
        """Write all of ``data`` at ``offset``; returns its length."""
        view = _byte_view(data)
        self._check(offset, len(view), Access.WRITE)
        if len(view):
            self._write(offset, view)
        return len(view)

    def host_view(self) -> memoryview | None:
        """The file's bytes in host memory, for zero-copy import; None if not resident."""
        return None

    def host_alignment(self) -> int:
        """Alignment of the host view's base address (0 when there is no host view)."""
        view = self.host_view()
        return 0 if view is None else alignment_of(address_of(view))

    @abstractmethod
    def _read(self, offset: int, out: memoryview) -> None: ...

    def _write(self, offset: int, data: memoryview) -> None:
        raise FileAccessError(self.name, "file is not writable")

    def flush(self) -> None:
        """Make written bytes durable where that means something."""

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self._length} bytes, {self.access.name})"


class MemoryFile(HalFile):
    """A file over host memory you already have (bytes, numpy array, mmap...)."""

    def __init__(self, buffer: Any, name: str = "<memory>", access: Access | None = None):
        view = _byte_view(buffer)
        if access is None:
            access = Access.READ if view.readonly else Access.READ_WRITE
        if access & Access.WRITE and view.readonly:
            raise FileAccessError(name, "buffer is read-only but write access was asked for")
        super().__init__(name, len(view), access)
        self._view = view

    def _read(self, offset: int, out: memoryview) -> None:
        copy_bytes(out, self._view[offset : offset + len(out)])

    def _write(self, offset: int, data: memoryview) -> None:
        copy_bytes(self._view[offset : offset + len(data)], data)

    def host_view(self) -> memoryview | None:
        return None if self.closed else self._view

    def close(self) -> None:
        if not self.closed:
            self._view.release()
        super().close()


def _open_regular(path: str | os.PathLike, flags: int) -> int:
    """Open a regular file; refuse directories, FIFOs and devices without blocking."""
    name = os.fspath(path)
    try:
        fd = os.open(name, flags | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileAccessError(name, "no such file") from None
    except IsADirectoryError:
        raise FileAccessError(name, "is a directory, not a file") from None
    except PermissionError:
        raise FileAccessError(name, "permission denied") from None
    except OSError as err:
        raise FileAccessError(name, err.strerror or str(err)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise FileAccessError(name, f"is {kind}, not a regular file")
    os.set_blocking(fd, True)
    return fd


class FdFile(HalFile):
    """A file read with ``pread`` and written with ``pwrite``; never mapped.

    ``length`` fixes the size of a file opened for writing (it is extended or
    truncated to it), as a download knows its size up front.
    """

    def __init__(self, path: str | os.PathLike, access: Access = Access.READ, length: int | None = None):
        name = os.fspath(path)
        if access & Access.WRITE:
            flags = os.O_RDWR | os.O_CREAT if access & Access.READ else os.O_WRONLY | os.O_CREAT
        else:
            flags = os.O_RDONLY
        fd = _open_regular(name, flags)
        try:
            if length is not None and access & Access.WRITE:
                os.ftruncate(fd, length)
            size = os.fstat(fd).st_size
        except OSError as err:
            os.close(fd)
            raise FileAccessError(name, err.strerror or str(err)) from None
        super().__init__(name, size, access)
        self.fd = fd

    def _read(self, offset: int, out: memoryview) -> None:
        done = 0
        while done < len(out):
            try:
                got = os.preadv(self.fd, [out[done:]], offset + done)
            except OSError as err:
                raise FileAccessError(self.name, f"read at offset {offset + done} failed: {err.strerror}") from None
            if got == 0:
                raise FileAccessError(
                    self.name,
                    f"short read at offset {offset + done}: the file ended early "
                    f"(was it truncated while in use? expected {self._length} bytes)",
                )
            done += got

    def _write(self, offset: int, data: memoryview) -> None:
        done = 0
        while done < len(data):
            try:
                put = os.pwritev(self.fd, [data[done:]], offset + done)
            except OSError as err:
                raise FileAccessError(self.name, f"write at offset {offset + done} failed: {err.strerror}") from None
            done += put

    def flush(self) -> None:
        if not self.closed and self.access & Access.WRITE:
            os.fsync(self.fd)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


class _MapGuard:
    """Copies out of a mapping (shared) against halsim's own truncation of its file (exclusive)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._copies = 0
        self._truncating = 0

    @contextmanager
    def copying(self):
        with self._changed:
            while self._truncating:
                self._changed.wait()
            self._copies += 1
        try:
            yield
        finally:
            with self._changed:
                self._copies -= 1
                if not self._copies:
                    self._changed.notify_all()

    @contextmanager
    def truncating(self):
        with self._changed:
            self._truncating += 1
            while self._copies:
                self._changed.wait()
        try:
            yield
        finally:
            with self._changed:
                self._truncating -= 1
                self._changed.notify_all()


class MappedFile(FdFile):
    """A file mapped into host memory, so devices can import it with no copy.

    Reads and writes use the descriptor (``pread``), which turns a file that
    shrank underneath us into an error instead of a SIGBUS; only zero-copy
    import touches the mapping, and every touch checks the size first
    (:meth:`touching`). A truncation by another process *during* a copy out of
    the mapping cannot be caught: that copy faults (SIGBUS), as in any loader
    that maps the file. The driver's copy of a small piece reads it on the CPU
    even from registered memory, so this holds for imports too.
    """

    def __init__(self, path: str | os.PathLike, access: Access = Access.READ, length: int | None = None):
        super().__init__(path, access, length)
        self._guard = _MapGuard()
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        if self._length:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if access & Access.WRITE else 0)
            try:
                self._map = mmap.mmap(self.fd, self._length, mmap.MAP_SHARED, prot)
            except OSError as err:
                super().close()
                raise FileAccessError(self.name, f"cannot map: {err.strerror}") from None
            self._view = memoryview(self._map)

    def host_view(self) -> memoryview | None:
        if self.closed or self._view is None:
            return None
        return self._view

    def host_alignment(self) -> int:
        # mmap returns page-aligned memory; asking numpy for a read-only mmap's address is awkward.
        return 0 if self._map is None or self.closed else mmap.PAGESIZE

    def check_unchanged(self) -> None:
        """Raise if the file shrank since it was mapped (touching the map would SIGBUS)."""
        if os.fstat(self.fd).st_size < self._length:
            raise FileAccessError(self.name, "file was truncated while mapped")

    @contextmanager
    def touching(self):
        """Around a copy out of the mapping: checks the size, and holds back :meth:`truncate_to`."""
        with self._guard.copying():
            self.check_unchanged()
            yield

    def truncate_to(self, length: int) -> None:
        """Shrink the file once no copy is touching its mapping (fault injection: a short file
        that the next touch must report, not a SIGBUS in a copy already under way)."""
        with self._guard.truncating():
            os.truncate(self.name, length)  # the descriptor may be read-only

    def host_address(self) -> int:
        """Base address of the mapping (for device import APIs)."""
        view = self.host_view()
        return 0 if view is None else address_of(view)

    def flush(self) -> None:
        if self._map is not None and self.access & Access.WRITE:
            self._map.flush()
        super().flush()

    def close(self) -> None:
        if not self.closed:
            if self._view is not None:
                self._view.release()
            if self._map is not None:
                try:
                    self._map.close()
                except BufferError:
                    # Someone still holds a view (an in-place import); the mapping dies with it.
                    pass
            self._map = self._view = None  # ...so hold no reference that would keep it alive
        super().close()


def open_file(path: str | os.PathLike, mode: str = "r", kind: str = "mapped", length: int | None = None) -> HalFile:
    """Open ``path`` as a HalFile. ``mode`` is "r", "w" or "rw"; ``kind`` "mapped" or "fd"."""
    access = {"r": Access.READ, "w": Access.WRITE, "rw": Access.READ_WRITE}.get(mode)
    if access is None:
        raise ValueError(f"mode must be 'r', 'w' or 'rw', not {mode!r}")
    if kind == "mapped":
        return MappedFile(path, access, length)
    if kind == "fd":
        return FdFile(path, access, length)
    raise ValueError(f"kind must be 'mapped' or 'fd', not {kind!r}")
