"""Workloads: the tensor lists of real models, without their weights.

A :class:`Workload` is what an upload has to move: names, dtypes and shapes.
From it we derive, without touching a disk, the parameter index a safetensors
file of those tensors would have (:meth:`Workload.index`) and the upload
request for it (:meth:`Workload.request`); and we can write that file for real
(:meth:`Workload.write`) when a backend needs bytes to read.

The schema lives here; the named instances (the catalogue) live in
``models/workloads.py``, installed as ``halsim.models.workloads``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import tomllib
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from halsim.errors import FormatError
from halsim.formats.dtypes import DTYPES
from halsim.formats.index import ParamIndex, TensorInfo, read_index
from halsim.formats.safetensors import (
    DEFAULT_PIECE_BYTES,
    HEADER_ALIGNMENT,
    LENGTH_PREFIX_BYTES,
    write_safetensors_layout,
)
from halsim.request import SourceInfo, UploadRequest, request_from_tensors

Fill = Literal["random", "zeros", "pattern", "sparse"]
Dim = Annotated[StrictInt, Field(ge=0)]  # strict: a TOML `true` is not a dimension


def _check_dtype(value: str) -> str:
    if value not in DTYPES:
        raise ValueError(f"unknown safetensors dtype {value!r}; known: {', '.join(DTYPES)}")
    return value


class TensorSpec(BaseModel):
    """One tensor: its safetensors name, dtype and shape."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    dtype: str
    shape: tuple[Dim, ...]

    @field_validator("dtype")
    @classmethod
    def dtype_known(cls, value: str) -> str:
        return _check_dtype(value)

    @field_validator("name")
    @classmethod
    def name_allowed(cls, value: str) -> str:
        if value == "__metadata__":  # the one key safetensors reserves in its header
            raise ValueError("'__metadata__' is reserved by safetensors and cannot name a tensor")
        return value

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def nbytes(self) -> int:
        return self.elements * DTYPES[self.dtype].itemsize


class Workload(BaseModel):
    """A named list of tensors and where its numbers come from.

    ``dtype`` is the model's dtype; in a TOML/JSON file, a tensor that names no
    dtype takes it, so a file need not repeat it for every tensor.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    source: str = ""  # where the numbers come from (a public config.json, a paper...)
    dtype: str
    tensors: tuple[TensorSpec, ...]

    @field_validator("dtype")
    @classmethod
    def dtype_known(cls, value: str) -> str:
        return _check_dtype(value)

    @model_validator(mode="before")
    @classmethod
    def default_tensor_dtype(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("tensors"), (list, tuple)) and "dtype" in data:
            data = dict(data)
            data["tensors"] = [
                {**t, "dtype": data["dtype"]} if isinstance(t, dict) and "dtype" not in t else t
                for t in data["tensors"]
            ]
        return data

    @field_validator("name")
    @classmethod
    def name_is_file_name(cls, value: str) -> str:
        # The name becomes the file name "<name>.safetensors".
        if "/" in value or "\x00" in value or value in (".", ".."):
            raise ValueError(f"workload name {value!r} cannot be a file name")
        return value

    @field_validator("tensors")
    @classmethod
    def names_unique(cls, tensors: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
        seen: set[str] = set()
        for tensor in tensors:
            if tensor.name in seen:
                raise ValueError(f"two tensors are named {tensor.name!r}")
            seen.add(tensor.name)
        return tensors

    # --- sizes -----------------------------------------------------------------

    @property
    def total_bytes(self) -> int:
        """Bytes of tensor data (the file is larger by its header)."""
        return sum(t.nbytes for t in self.tensors)

    @property
    def params(self) -> int:
        """Number of elements over all tensors (what model cards call parameters)."""
        return sum(t.elements for t in self.tensors)

    @property
    def file_name(self) -> str:
        return f"{self.name}.safetensors"

    # --- layout ----------------------------------------------------------------

    def index(self, alignment: int = HEADER_ALIGNMENT) -> ParamIndex:
        """The index of this workload written as one safetensors file, computed, not read.

        With the default alignment (8) it is exactly what :meth:`write` produces
        and :func:`halsim.formats.read_index` reads back: an 8-byte length, the
        compact JSON header space-padded so data starts 8-aligned, then every
        tensor contiguous, in order, larger item sizes first (the writer's rule,
        which keeps every tensor aligned to its item size). A larger alignment
        (e.g. 4096) models a writer that pads the header so data starts on a
        page, as direct I/O and zero-copy import want.
        """
        if alignment < HEADER_ALIGNMENT or alignment % HEADER_ALIGNMENT:
            raise ValueError(f"alignment must be a positive multiple of {HEADER_ALIGNMENT}, not {alignment}")
        ordered = sorted(self.tensors, key=lambda t: -DTYPES[t.dtype].itemsize)  # stable, as the writer's
        header: dict[str, object] = {}
        offset = 0
        for t in ordered:
            header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        # Same serialisation as halsim.formats.safetensors, so the length is byte-exact.
        header_length = len(json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        header_length += -(LENGTH_PREFIX_BYTES + header_length) % alignment
        data_start = LENGTH_PREFIX_BYTES + header_length
        infos, offset = [], data_start
        for t in ordered:
            infos.append(TensorInfo(t.name, t.dtype, tuple(t.shape), offset, t.nbytes))
            offset += t.nbytes
        return ParamIndex(self.file_name, "safetensors", offset, tuple(infos))

    def request(
        self,
        devices: int = 1,
        shard: str = "whole",
        page_cached: bool = True,
        host_alignment: int = 4096,
        *,
        alignment: int = HEADER_ALIGNMENT,
    ) -> UploadRequest:
        """The upload of this workload's file: one buffer per tensor (or per slice).

        ``shard`` is ``"whole"`` (deal tensors to devices) or ``"rows"``
        (split each by its first dimension); ``host_alignment`` is the base
        alignment of the file's host view (0: the file is not in host memory).
        """
        index = self.index(alignment)
        source = SourceInfo(
            name=self.file_name, length=index.file_length, host_alignment=host_alignment, page_cached=page_cached
        )
        return request_from_tensors(source, index.tensors, devices=devices, shard=shard)

    # --- files -----------------------------------------------------------------

    def write(
        self,
        path: str | os.PathLike,
        fill: Fill = "pattern",
        *,
        seed: int = 0,
        piece_bytes: int = DEFAULT_PIECE_BYTES,
    ) -> ParamIndex:
        """Write this workload as a real safetensors file and return its index.

        Data streams through one buffer of at most ``piece_bytes``, so writing
        a 16 GB model needs no 16 GB of memory. ``fill``:

        - ``"pattern"``: the byte at file offset ``o`` is ``pattern_bytes(o, 1)``,
          so any range read back anywhere can be checked on its own;
        - ``"random"``: raw draws of ``numpy.random.default_rng(seed)``
          (repeatable for the same seed and ``piece_bytes``);
        - ``"zeros"``: real zero bytes;
        - ``"sparse"``: a hole (reads as zeros, fast to write, but reading it
          touches no storage, so it is no good for timing).
        """
        if fill not in ("random", "zeros", "pattern", "sparse"):
            raise ValueError(f"fill must be 'random', 'zeros', 'pattern' or 'sparse', not {fill!r}")
        expected = self.index()
        specs = [(t.name, t.dtype, tuple(t.shape)) for t in self.tensors]
        filler = None if fill == "sparse" else _filler(fill, expected, seed)
        written = write_safetensors_layout(path, specs, filler, piece_bytes=piece_bytes)
        layout = [(t.name, t.dtype, t.shape, t.offset, t.nbytes) for t in written.tensors]
        if layout != [(t.name, t.dtype, t.shape, t.offset, t.nbytes) for t in expected.tensors]:
            # The pattern was computed from expected offsets; a writer that lays
            # out differently would leave a file whose content checks lie.
            os.unlink(written.path)
            raise FormatError(written.path, "the safetensors writer laid tensors out differently from Workload.index()")
        return written

    def to_toml(self) -> str:
        """TOML that :func:`load_workload` reads back to an equal workload."""
        lines = [f"{key} = {_toml_str(getattr(self, key))}" for key in ("name", "description", "source", "dtype")]
        for t in self.tensors:
            lines.append("\n[[tensors]]")
            lines.append(f"name = {_toml_str(t.name)}")
            if t.dtype != self.dtype:
                lines.append(f"dtype = {_toml_str(t.dtype)}")
            lines.append(f"shape = [{', '.join(map(str, t.shape))}]")
        return "\n".join(lines) + "\n"


def _toml_str(value: str) -> str:
    # json.dumps escapes only quotes, backslashes and control characters, in
    # forms TOML basic strings share; TOML also forbids a raw DEL.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


# --- fill patterns ---------------------------------------------------------------

# splitmix64's multipliers: consecutive words get unrelated values, so a
# shifted, swapped or repeated range never matches by accident.
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_SHIFT = np.uint64(31)


def pattern_bytes(offset: int, length: int) -> np.ndarray:
    """The ``pattern`` fill's bytes at file offsets [offset, offset + length), as uint8.

    A pure function of the offset: each 8-byte word ``w = offset // 8`` holds
    a hash of ``w`` (little-endian), independent of tensors and piece sizes.
    """
    if offset < 0 or length < 0:
        raise ValueError(f"offset and length must not be negative ({offset}, {length})")
    out = np.empty(length, np.uint8)
    _PatternWriter().fill(offset, out)
    return out


class _PatternWriter:
    """Computes pattern bytes into caller buffers, reusing its scratch words.

    Reuse matters: fresh 64 MiB temporaries per piece cost more in page
    faults than the hashing itself.
    """

    def __init__(self) -> None:
        self.ramp = np.empty(0, np.int64)  # 0, 1, 2, ...: word numbers relative to the first
        self.words = np.empty(0, np.uint64)
        self.shifted = np.empty(0, np.uint64)

    def fill(self, offset: int, out: np.ndarray) -> None:
        first = offset // 8
        count = -(-(offset + len(out)) // 8) - first
        if len(self.words) < count:
            self.ramp = np.arange(count, dtype=np.int64)
            self.words, self.shifted = np.empty(count, np.uint64), np.empty(count, np.uint64)
        words, shifted = self.words[:count], self.shifted[:count]
        # Word numbers, +1 so that word 0 does not hash to 0 (offsets never reach 2**63).
        np.add(self.ramp[:count], first + 1, out=words.view(np.int64))
        with np.errstate(over="ignore"):  # wrap-around is the point
            words *= _MIX1
            np.bitwise_xor(words, np.right_shift(words, _SHIFT, out=shifted), out=words)
            words *= _MIX2
            np.bitwise_xor(words, np.right_shift(words, _SHIFT, out=shifted), out=words)
        raw = words.astype("<u8", copy=False).view(np.uint8)
        start = offset - first * 8
        out[:] = raw[start : start + len(out)]


def _filler(fill: str, index: ParamIndex, seed: int):
    """The writer's ``fill(name, piece)`` callback for one fill kind."""
    if fill == "zeros":
        return lambda name, piece: np.frombuffer(piece, np.uint8).fill(0)
    if fill == "random":
        bits = np.random.default_rng(seed).bit_generator

        def random_fill(name: str, piece: memoryview) -> None:
            # Raw 64-bit draws: several times faster than Generator.bytes.
            words = bits.random_raw(-(-len(piece) // 8)).astype("<u8", copy=False)
            np.frombuffer(piece, np.uint8)[:] = words.view(np.uint8)[: len(piece)]

        return random_fill
    # pattern: the writer hands each tensor's pieces in order, so a running
    # position per tensor plus its offset in the index gives each piece's file offset.
    position = {t.name: t.offset for t in index.tensors}
    writer = _PatternWriter()

    def pattern_fill(name: str, piece: memoryview) -> None:
        start = position[name]
        writer.fill(start, np.frombuffer(piece, np.uint8))
        position[name] = start + len(piece)

    return pattern_fill


# --- catalogue and files ------------------------------------------------------------

_catalogue: ModuleType | None = None


def _catalogue_module() -> ModuleType:
    """``halsim.models.workloads``, or the repository's ``models/workloads.py`` when not installed."""
    global _catalogue
    if _catalogue is None:
        try:
            _catalogue = importlib.import_module("halsim.models.workloads")
        except ModuleNotFoundError as err:
            if err.name not in ("halsim.models", "halsim.models.workloads"):
                raise  # something the catalogue itself imports is missing: say so
            path = Path(__file__).resolve().parent.parent / "models" / "workloads.py"
            spec = importlib.util.spec_from_file_location("halsim_models_workloads", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise FormatError(path, "the workload catalogue is missing (halsim.models is not installed)") from None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
            _catalogue = module
    return _catalogue


def list_workloads() -> list[str]:
    """Names of the catalogued workloads, in catalogue order."""
    return list(_catalogue_module().CATALOGUE)


def load_workload(name_or_path: str | os.PathLike) -> Workload:
    """A catalogued workload by name, or one from a ``.toml``/``.json`` file.

    A ``.safetensors`` path gives the tensor list of that file (headers only).

    A file holds the Workload fields at the top level (or under a
    ``[workload]`` table), with a ``[[tensors]]`` entry per tensor.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return read_workload(path)
    if suffix in (".toml", ".json"):
        return _load_file(path)
    if isinstance(name_or_path, os.PathLike):
        raise FormatError(path, "a workload file must be .toml, .json or .safetensors")
    catalogue = _catalogue_module().CATALOGUE
    if text in catalogue:
        return catalogue[text]()
    raise FormatError(text, f"unknown workload; known: {', '.join(catalogue)} (or give a .toml/.json file)")


def _load_file(path: Path) -> Workload:
    kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FormatError(path, "workload file does not exist") from None
    except OSError as err:
        raise FormatError(path, f"cannot read workload file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FormatError(path, f"not valid {kind}: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("workload"), dict):
        data = data["workload"]
    if not isinstance(data, dict):
        raise FormatError(path, "a workload file must hold a table of fields")
    try:
        return Workload.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'workload'}: {e['msg']}" for e in err.errors()[:5]
        )
        more = f" (and {err.error_count() - 5} more)" if err.error_count() > 5 else ""
        raise FormatError(path, f"invalid workload: {problems}{more}") from None


def workload_from_index(
    index: ParamIndex, name: str | None = None, description: str = "", source: str | None = None
) -> Workload:
    """The workload of an indexed file: its tensors in file order.

    ``dtype`` is the dtype holding the most bytes. Gaps and the original
    header size are not kept: ``index()`` of the result is the layout the
    safetensors writer would give those tensors.
    """
    by_bytes: Counter[str] = Counter()
    for t in index.tensors:
        by_bytes[t.dtype] += t.nbytes or 1  # empty tensors still vote, weakly
    dtype = by_bytes.most_common(1)[0][0] if by_bytes else "U8"
    return Workload(
        name=name or Path(index.path).stem or "workload",
        description=description,
        source=source if source is not None else f"tensor index of {index.path} ({index.format})",
        dtype=dtype,
        tensors=tuple(TensorSpec(name=t.name, dtype=t.dtype, shape=tuple(int(d) for d in t.shape)) for t in index.tensors),
    )


def read_workload(path: str | os.PathLike, name: str | None = None) -> Workload:
    """The workload of an existing model file of any indexed format (headers only)."""
    return workload_from_index(read_index(path), name=name)


__all__ = [
    "TensorSpec", "Workload", "load_workload", "list_workloads", "workload_from_index",
    "read_workload", "pattern_bytes",
]
