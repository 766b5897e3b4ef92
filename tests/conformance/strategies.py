"""Hypothesis strategies: policies of every kind, requests, caps, files.

Generated plans stay small: a request's size is bounded by its policy's
smallest chunk times :data:`MAX_CHUNKS`, so a 1-byte chunk comes with a few
dozen bytes of tensors and a 1 GiB chunk with tensors up to gigabytes (in
planning-only tests; runs that move bytes cap the total at ``RUN_CAP``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypothesis import strategies as st

from halsim.caps import DeviceCaps
from halsim.policies import AutoPolicy, DirectPolicy, HybridPolicy, ImportPolicy, StagedPolicy, StreamingPolicy
from halsim.request import BufferSpec, Direction, SourceInfo, Transfer, UploadRequest, request_from_tensors

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
FOUR_GIB = 1 << 32
MAX_CHUNKS = 40  # chunks (or pieces) per request
MAX_STEPS = 400  # a safety net on top of MAX_CHUNKS
RUN_CAP = 48 * KiB  # tensor bytes in a run that moves real bytes
PLAN_CAP = 64 * GiB  # tensor bytes in a planning-only case

chunks = st.one_of(
    st.integers(1, 300),
    st.sampled_from([1, 2, 3, 7, 64, 100, 255, 256, 1000, 4095, 4096, 4097, 65536, 65537,
                     MiB, 3 * MiB + 1, 16 * MiB, 100_000_007, GiB]),
)
streaming = st.builds(StreamingPolicy, chunk=chunks, slots=st.integers(1, 9), readers=st.integers(1, 5),
                      queues=st.integers(1, 4))
staged = st.builds(StagedPolicy, chunk=chunks, readers=st.integers(1, 4))
fallbacks = st.one_of(streaming, staged)
imports = st.builds(ImportPolicy, piece=chunks, queues=st.integers(1, 4), fallback=fallbacks,
                    importers=st.integers(1, 4), release=st.sampled_from(["rolling", "at_end"]))
directs = st.builds(DirectPolicy, chunk=chunks, readers=st.integers(1, 5), fallback=fallbacks)
autos = st.builds(AutoPolicy, budget=st.one_of(st.integers(1, 1 << 16), st.sampled_from([1, 2, 3, 255, MiB, 256 * MiB, GiB])))
hybrids = st.builds(HybridPolicy, share=st.floats(0.01, 0.99), imported=imports, streamed=streaming)
policies = st.one_of(streaming, staged, imports, directs, hybrids, autos)

download_policies = st.one_of(streaming, staged, imports, directs, hybrids, autos)


def granularity(policy) -> int:
    """The smallest unit a policy cuts a request into (bounds its step count)."""
    kind = policy.kind
    if kind in ("streaming", "staged", "direct"):
        unit = policy.chunk
    elif kind == "import":
        unit = policy.piece
    elif kind == "hybrid":
        unit = min(granularity(policy.imported), granularity(policy.streamed))
    else:  # auto: a ring that fits the budget, chunks no smaller than budget / 16
        unit = max(1, policy.budget // 16)
    fallback = getattr(policy, "fallback", None)
    return min(unit, granularity(fallback)) if fallback is not None else unit


caps_strategy = st.builds(
    DeviceCaps,
    kind=st.sampled_from(["dedicated", "integrated", "cpu"]),
    unified_memory=st.booleans(),
    can_import_host=st.booleans(),
    import_alignment=st.sampled_from([1, 3, 64, 4096, 65536]),
    direct_storage=st.booleans(),
    copy_queues=st.integers(1, 4),
)


@dataclass(frozen=True)
class Tensor:
    """A TensorInfo-like record for request_from_tensors."""

    name: str
    offset: int
    nbytes: int
    dtype: str = "U8"

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.nbytes,)


@dataclass(frozen=True)
class Layout:
    """Where a generated file's tensor bytes lie: only [data_start, data_end) holds data."""

    length: int
    data_start: int
    data_end: int
    tensors: tuple[Tensor, ...]


@st.composite
def layouts(draw, max_total: int, max_tensors: int = 7) -> Layout:
    """Tensors with gaps, zero-length ones, unaligned offsets, maybe beyond 4 GiB."""
    base = draw(st.one_of(st.integers(0, 100), st.sampled_from([4096, FOUR_GIB - 5, FOUR_GIB + 13, 5 * GiB + 4095])))
    n = draw(st.integers(0, max_tensors))
    per = max(1, max_total // max(n, 1))
    sizes = draw(st.lists(st.one_of(st.just(0), st.integers(1, per), st.integers(1, min(per, 9))),
                          min_size=n, max_size=n))
    gaps = draw(st.lists(st.one_of(st.just(0), st.integers(1, 70)), min_size=n, max_size=n))
    tensors, at = [], base
    for i, (size, gap) in enumerate(zip(sizes, gaps)):
        at += gap
        tensors.append(Tensor(f"t{i}", at, size))
        at += size
    tail = draw(st.integers(0, 50))
    return Layout(at + tail, base, at, tuple(tensors))


@st.composite
def requests(draw, source: SourceInfo, layout: Layout, max_devices: int = 3,
             direction: Direction = Direction.UPLOAD) -> UploadRequest:
    """A request over ``layout``: one buffer per tensor (whole or row-sharded over
    devices), or raw transfers gathering file ranges into buffers, repeats included."""
    devices = draw(st.integers(1, max_devices))
    style = draw(st.sampled_from(["tensors", "tensors", "raw"]))
    if style == "tensors":
        shard = draw(st.sampled_from(["whole", "rows"]))
        request = request_from_tensors(source, layout.tensors, devices=devices, shard=shard)
        return UploadRequest(request.source, request.buffers, request.transfers, direction)
    # Raw transfers: each buffer gathers a few ranges of the data area, with gaps in the buffer.
    span = layout.data_end - layout.data_start
    buffers, transfers = [], []
    for b in range(draw(st.integers(0, 4))):
        offset = draw(st.integers(0, 5))
        for _ in range(draw(st.integers(0, 3))):
            if span == 0:
                start, length = layout.data_start, 0
            else:
                start = layout.data_start + draw(st.integers(0, span))
                length = draw(st.integers(0, layout.data_end - start))
            transfers.append(Transfer(start, b, offset, length))
            offset += length + draw(st.integers(0, 5))
        buffers.append(BufferSpec(f"b{b}", offset + draw(st.integers(0, 3)), draw(st.integers(0, devices - 1))))
    return UploadRequest(source, tuple(buffers), tuple(transfers), direction)


def fill_bytes(offset: int, n: int) -> bytes:
    """The generated files' content: a function of the file offset."""
    import numpy as np

    positions = np.arange(offset, offset + n, dtype=np.uint64)
    return ((positions * 2654435761 + (positions >> 13)) % 251 + 1).astype(np.uint8).tobytes()


def write_file(path: str, layout: Layout) -> None:
    """A sparse file of ``layout.length`` bytes with content only in the data area."""
    with open(path, "wb") as f:
        f.truncate(layout.length)
        if layout.data_end > layout.data_start:
            f.seek(layout.data_start)
            f.write(fill_bytes(layout.data_start, layout.data_end - layout.data_start))


def expected_bytes(layout: Layout, offset: int, n: int) -> bytes:
    """What the file holds at [offset, offset + n)."""
    lo, hi = max(offset, layout.data_start), min(offset + n, layout.data_end)
    if hi <= lo:
        return bytes(n)
    return bytes(lo - offset) + fill_bytes(lo, hi - lo) + bytes(offset + n - hi)


def open_source(path: str, layout: Layout, kind: str):
    """The file as a HalFile of ``kind``: "mapped", "fd" or "memory" (small files only)."""
    from halsim.files import MemoryFile, open_file

    if kind == "memory" and layout.length <= 4 * MiB:
        with open(path, "rb") as f:
            return MemoryFile(bytearray(f.read()), name=path)
    return open_file(path, "r", kind="fd" if kind == "fd" else "mapped")


file_kinds = st.sampled_from(["mapped", "fd", "memory"])
modes = st.sampled_from(["serial", "overlapped"])
