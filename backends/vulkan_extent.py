"""Extents: a byte range laid over one or more VkBuffers, and copies between them.

A device buffer larger than one allocation may hold (``maxMemoryAllocationSize``,
``maxBufferSize``) is several pieces; so is a staging slot or an imported
window that outgrows one allocation. Copies are planned on extents, so no
caller sees where one piece ends. Pure Python: no Vulkan call here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from halsim.errors import DeviceError


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


def align_down(value: int, alignment: int) -> int:
    return value // alignment * alignment


@dataclass(frozen=True)
class Piece:
    buffer: Any  # VkBuffer
    offset: int  # where the range starts inside that VkBuffer
    size: int


class Extent:
    """``size`` bytes laid over consecutive pieces of VkBuffers.

    A device buffer larger than one allocation may hold is several pieces; a
    staging slot or an imported window is one piece or several. Copies are
    planned on extents, so callers never see where one piece ends.
    """

    __slots__ = ("pieces", "size", "_starts")

    def __init__(self, pieces: Iterable[Piece] = ()):
        self.pieces = [p for p in pieces if p.size]
        self._starts = []
        at = 0
        for p in self.pieces:
            self._starts.append(at)
            at += p.size
        self.size = at

    def locate(self, offset: int, length: int):
        """(VkBuffer, offset in it, bytes) covering [offset, offset + length)."""
        if offset < 0 or offset + length > self.size:
            raise DeviceError(f"range [{offset}, {offset + length}) is outside a {self.size}-byte buffer")
        for start, piece in zip(self._starts, self.pieces):
            end = start + piece.size
            if end <= offset or length <= 0:
                continue
            lo = max(offset, start)
            n = min(end, offset + length) - lo
            if n <= 0:
                break
            yield piece.buffer, piece.offset + lo - start, n

    def slice(self, offset: int, length: int) -> "Extent":
        return Extent(Piece(b, o, n) for b, o, n in self.locate(offset, length))


def copy_regions(src: Extent, src_offset: int, dst: Extent, dst_offset: int, length: int):
    """[(src VkBuffer, dst VkBuffer, [(src offset, dst offset, size)])] for one logical copy."""
    groups: dict[tuple, list] = {}
    order: list[tuple] = []
    dst_parts = list(dst.locate(dst_offset, length))
    d = 0
    d_used = 0
    for s_buf, s_off, s_len in src.locate(src_offset, length):
        while s_len:
            d_buf, d_off, d_len = dst_parts[d]
            n = min(s_len, d_len - d_used)
            key = (s_buf, d_buf)
            if key not in groups:
                groups[key] = []
                order.append(key)
            groups[key].append((s_off, d_off + d_used, n))
            s_off += n
            s_len -= n
            d_used += n
            if d_used == d_len:
                d += 1
                d_used = 0
    return [(k[0], k[1], groups[k]) for k in order]
