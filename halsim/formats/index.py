"""The parameter index of a model file, and the plumbing every format shares.

An index says where each tensor's bytes lie in a file without reading them:
the upload planner turns each :class:`TensorInfo` into a ``queue_read`` of
``(offset, nbytes)``. Readers treat every file as hostile: they read headers
only, bound what they read, and turn anything malformed into a
:class:`~halsim.errors.FormatError` that names the file and the problem.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from halsim.errors import FormatError

FORMATS = ("safetensors", "npy", "npz", "raw")


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype name, see halsim.formats.dtypes.DTYPES
    shape: tuple[int, ...]
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def end(self) -> int:
        """One past the tensor's last byte in the file."""
        return self.offset + self.nbytes


@dataclass(frozen=True)
class ParamIndex:
    path: str
    format: str  # one of FORMATS
    file_length: int
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str] = field(default_factory=dict, hash=False)
    _by_name: dict[str, TensorInfo] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        by_name = {t.name: t for t in self.tensors}
        if len(by_name) != len(self.tensors):
            raise ValueError(f"{self.path}: tensor names are not unique")
        object.__setattr__(self, "_by_name", by_name)

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def by_name(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[TensorInfo]:
        return iter(self.tensors)


def read_index(path: str | os.PathLike, format: str | None = None) -> ParamIndex:
    """Index `path`; `format` is one of FORMATS, or None to sniff it.

    Sniffing looks at the extension first, then at the leading bytes; a file
    that matches no format is indexed as one raw U8 blob.
    """
    # Imported here because the format modules import this one.
    from halsim.formats import npy, npz, raw, safetensors

    readers = {
        "safetensors": safetensors.read_safetensors_index,
        "npy": npy.read_npy_index,
        "npz": npz.read_npz_index,
        "raw": raw.read_raw_index,
    }
    if format is None:
        format = sniff_format(path)
    if format not in readers:
        raise ValueError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    return readers[format](path)


def sniff_format(path: str | os.PathLike) -> str:
    suffix = Path(os.fsdecode(path)).suffix.lower()
    if suffix in (".safetensors", ".npy", ".npz"):
        return suffix[1:]
    with RegularFile(path) as f:
        head = f.read_at(0, min(f.size, 9), "leading bytes")
        if head.startswith(b"\x93NUMPY"):
            return "npy"
        if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            return "npz"
        if len(head) == 9 and head[8:9] == b"{":
            header_length = int.from_bytes(head[:8], "little")
            if header_length <= f.size - 8:
                return "safetensors"
    return "raw"


# --- shared plumbing for the format modules ---------------------------------


class RegularFile:
    """A regular file opened for reading headers at explicit offsets.

    Refuses directories, FIFOs, devices and sockets before opening them, and
    opens with O_NONBLOCK so that a file swapped for a FIFO after the check
    still cannot block us.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fsdecode(path)
        try:
            _require_regular(self.path, os.stat(self.path).st_mode)
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise FormatError(self.path, "file does not exist") from None
        except OSError as e:
            raise FormatError(self.path, f"cannot open: {e.strerror or e}") from None
        try:
            st = os.fstat(fd)
            _require_regular(self.path, st.st_mode)
        except BaseException:
            os.close(fd)
            raise
        self.file: BinaryIO = os.fdopen(fd, "rb", buffering=0)
        self.size: int = st.st_size

    def read_at(self, offset: int, length: int, what: str) -> bytes:
        """Exactly `length` bytes at `offset`, or FormatError naming `what` if the file ends first."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise FormatError(
                self.path, f"{what} at offset {offset} ({length} bytes) runs past the end of the file ({self.size} bytes)"
            )
        pieces = []
        fd = self.file.fileno()
        while length:
            piece = os.pread(fd, length, offset)
            if not piece:  # shrank under us
                raise FormatError(self.path, f"file ended while reading {what} at offset {offset}")
            pieces.append(piece)
            offset += len(piece)
            length -= len(piece)
        return b"".join(pieces)

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> RegularFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _require_regular(path: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        kind = "a directory"
    elif stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "a special file"
    raise FormatError(path, f"is {kind}, not a regular file")


def check_no_overlap(path: str, tensors: list[TensorInfo]) -> None:
    """FormatError if any two tensors share a byte (empty tensors share none)."""
    occupied = sorted((t for t in tensors if t.nbytes), key=lambda t: (t.offset, t.end))
    for before, after in zip(occupied, occupied[1:]):
        if after.offset < before.end:
            raise FormatError(
                path,
                f"tensors {short(before.name)} (file bytes [{before.offset}, {before.end})) and "
                f"{short(after.name)} (file bytes [{after.offset}, {after.end})) overlap",
            )


def nbytes_of(shape: Sequence[int], itemsize: int, limit: int) -> int | None:
    """prod(shape) * itemsize, or None once it exceeds `limit`.

    Stops early so that a hostile shape of huge dimensions cannot make us
    build an enormous integer just to find out that it does not fit.
    """
    if 0 in shape:
        return 0
    nbytes = itemsize
    for dim in shape:
        nbytes *= dim
        if nbytes > limit:
            return None
    return nbytes if nbytes <= limit else None


def short(value: object, limit: int = 80) -> str:
    """repr() clipped so that a hostile name or shape cannot flood a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A file object for `path + '.partial'`, moved onto `path` only on success.

    On any error the partial file is removed, so `path` is either the old file
    or the complete new one, never a half-written one.
    """
    final = os.fsdecode(path)
    partial = final + ".partial"
    try:
        with open(partial, "wb") as f:
            yield f
        os.replace(partial, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
