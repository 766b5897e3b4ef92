"""Upload requests: the list of ``queue_read(file, offset -> buffer, offset, length)``.

A request is pure data. It describes the source file only by what a plan needs
(its name, length, and whether and how its bytes sit in host memory), so the
same request can be planned, simulated, and run on a real file.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from halsim.errors import PolicyError


class Direction(str, enum.Enum):
    UPLOAD = "upload"  # file -> device (IREE's queue_read)
    DOWNLOAD = "download"  # device -> file (IREE's queue_write)


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What a plan may know about the file: no bytes, no handles."""

    name: str
    length: int
    host_alignment: int = 0  # alignment of the host view's base address; 0 = not in host memory
    page_cached: bool = True  # the simulator reads cold files at storage speed

    @classmethod
    def of(cls, file, page_cached: bool = True) -> "SourceInfo":
        return cls(file.name, file.length, file.host_alignment(), page_cached)


@dataclass(frozen=True, slots=True)
class BufferSpec:
    """A destination buffer on one device. ``dtype``/``shape`` describe its tensor."""

    name: str
    size: int
    device: int = 0
    dtype: str = "U8"
    shape: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Transfer:
    """``length`` bytes between ``file_offset`` and ``buffers[buffer]`` at ``buffer_offset``."""

    file_offset: int
    buffer: int
    buffer_offset: int
    length: int


@dataclass(frozen=True)
class UploadRequest:
    source: SourceInfo
    buffers: tuple[BufferSpec, ...]
    transfers: tuple[Transfer, ...]
    direction: Direction = Direction.UPLOAD
    _total: int = field(default=-1, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.validate()
        object.__setattr__(self, "_total", sum(t.length for t in self.transfers))

    @property
    def total_bytes(self) -> int:
        return self._total

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(sorted({b.device for b in self.buffers})) or (0,)

    def validate(self) -> None:
        names = set()
        for spec in self.buffers:
            if spec.size < 0:
                raise PolicyError(f"{self.source.name}: buffer {spec.name!r} has negative size")
            if spec.name in names:
                raise PolicyError(f"{self.source.name}: two buffers are named {spec.name!r}")
            names.add(spec.name)
        for t in self.transfers:
            if t.length < 0 or t.file_offset < 0 or t.buffer_offset < 0:
                raise PolicyError(f"{self.source.name}: negative offset or length in {t}")
            if not 0 <= t.buffer < len(self.buffers):
                raise PolicyError(f"{self.source.name}: transfer names buffer {t.buffer}, which does not exist")
            if t.file_offset + t.length > self.source.length:
                raise PolicyError(
                    f"{self.source.name}: transfer [{t.file_offset}, {t.file_offset + t.length}) "
                    f"is past the end of the file ({self.source.length} bytes)"
                )
            if t.buffer_offset + t.length > self.buffers[t.buffer].size:
                raise PolicyError(
                    f"{self.source.name}: transfer overflows buffer {self.buffers[t.buffer].name!r}"
                )

    def for_devices(self, device_of: Callable[[BufferSpec], int]) -> "UploadRequest":
        """The same request with each buffer placed on ``device_of(buffer)``."""
        buffers = tuple(
            BufferSpec(b.name, b.size, device_of(b), b.dtype, b.shape) for b in self.buffers
        )
        return UploadRequest(self.source, buffers, self.transfers, self.direction)

    def reversed(self) -> "UploadRequest":
        """The download (device -> file) with the same ranges."""
        direction = Direction.DOWNLOAD if self.direction is Direction.UPLOAD else Direction.UPLOAD
        return UploadRequest(self.source, self.buffers, self.transfers, direction)


def request_from_tensors(
    source: SourceInfo,
    tensors: Iterable,
    *,
    direction: Direction = Direction.UPLOAD,
    devices: int = 1,
    shard: str = "whole",
) -> UploadRequest:
    """One buffer per tensor (``TensorInfo``-like: name, dtype, shape, offset, nbytes).

    With ``devices > 1``, ``shard="whole"`` deals whole tensors to devices so each
    gets about the same bytes; ``shard="rows"`` splits every tensor by its first
    dimension, one slice per device (tensor-parallel loading).
    """
    buffers: list[BufferSpec] = []
    transfers: list[Transfer] = []
    tensors = list(tensors)
    if devices < 1:
        raise PolicyError("devices must be at least 1")
    if shard == "whole" or devices == 1:
        loads = [0] * devices
        for info in sorted(tensors, key=lambda t: -t.nbytes) if devices > 1 else tensors:
            device = loads.index(min(loads)) if devices > 1 else 0
            loads[device] += info.nbytes
            buffers.append(BufferSpec(info.name, info.nbytes, device, info.dtype, tuple(info.shape)))
            transfers.append(Transfer(info.offset, len(buffers) - 1, 0, info.nbytes))
        if devices > 1:
            # Keep file order for reads: sort transfers by file offset.
            order = sorted(range(len(transfers)), key=lambda i: transfers[i].file_offset)
            buffers = [buffers[i] for i in order]
            transfers = [Transfer(transfers[i].file_offset, n, 0, transfers[i].length) for n, i in enumerate(order)]
    elif shard == "rows":
        for info in tensors:
            shape = tuple(info.shape)
            rows = shape[0] if shape else 1
            row_bytes = info.nbytes // rows if rows else 0
            for device in range(devices):
                first = rows * device // devices
                last = rows * (device + 1) // devices
                size = (last - first) * row_bytes
                # A scalar has no rows: the last device holds it; the others an empty
                # slice, whose shape must say no elements, as its size does.
                piece_shape = ((last - first),) + shape[1:] if shape else (() if size else (0,))
                buffers.append(BufferSpec(f"{info.name}@{device}", size, device, info.dtype, piece_shape))
                transfers.append(Transfer(info.offset + first * row_bytes, len(buffers) - 1, 0, size))
    else:
        raise PolicyError(f"shard must be 'whole' or 'rows', not {shard!r}")
    return UploadRequest(source, tuple(buffers), tuple(transfers), direction)


def segments(transfers: Sequence[Transfer]) -> list[tuple[int, int, list[Transfer]]]:
    """Group transfers into maximal runs of contiguous file bytes: (start, end, members).

    Reads cover a whole run at a time, so many small tensors cost few reads.
    Overlapping transfers (the same bytes to two buffers) start a new run.
    """
    runs: list[tuple[int, int, list[Transfer]]] = []
    for t in sorted((t for t in transfers if t.length), key=lambda t: (t.file_offset, t.buffer)):
        if runs and runs[-1][1] == t.file_offset:
            start, _, members = runs[-1]
            members.append(t)
            runs[-1] = (start, t.file_offset + t.length, members)
        else:
            runs.append((t.file_offset, t.file_offset + t.length, [t]))
    return runs


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def align_down(value: int, alignment: int) -> int:
    return value - value % alignment if alignment > 1 else value


def align_up(value: int, alignment: int) -> int:
    return ceil_div(value, alignment) * alignment if alignment > 1 else value


__all__ = [
    "Direction", "SourceInfo", "BufferSpec", "Transfer", "UploadRequest",
    "request_from_tensors", "segments", "ceil_div", "align_down", "align_up",
]
