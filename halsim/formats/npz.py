"""numpy ``.npz``: a zip archive of ``.npy`` members.

Only stored (uncompressed) members can be indexed, since only their bytes lie
in the file as they will lie in memory. zipfile reads the central directory;
we read each member's local header ourselves, because the data starts after
the local name and extra fields, whose lengths may differ from the central ones.
"""

from __future__ import annotations

import os
import struct
import zipfile
from typing import Mapping

import numpy as np

from halsim.errors import FormatError
from halsim.formats.index import ParamIndex, RegularFile, TensorInfo, atomic_output, check_no_overlap, short
from halsim.formats.npy import storable_array, fortran_metadata, parse_npy

LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length
LOCAL_SIGNATURE = b"PK\x03\x04"
_ENCRYPTED_FLAG = 0x1
_UTF8_NAME_FLAG = 0x800
_METHOD_NAMES = {zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
# What zipfile may raise on a damaged central directory.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OverflowError, struct.error,
               NotImplementedError, UnicodeDecodeError, IndexError, KeyError)  # fmt: skip


def read_npz_index(path: str | os.PathLike) -> ParamIndex:
    with RegularFile(path) as f:
        if f.size == 0:
            raise FormatError(f.path, "file is empty")
        try:
            with zipfile.ZipFile(f.file) as archive:
                members = archive.infolist()
        except _ZIP_ERRORS as e:
            raise FormatError(f.path, f"not a valid zip archive ({type(e).__name__}: {e})") from None
        tensors, fortran = [], []
        seen = set()
        for member in members:
            tensor, fortran_order = _index_member(f, member)
            if tensor.name in seen:
                raise FormatError(f.path, f"duplicate member {short(member.filename)}")
            seen.add(tensor.name)
            tensors.append(tensor)
            if fortran_order:
                fortran.append(tensor.name)
    check_no_overlap(f.path, tensors)
    return ParamIndex(f.path, "npz", f.size, tuple(tensors), fortran_metadata(fortran))


def _index_member(f: RegularFile, member: zipfile.ZipInfo) -> tuple[TensorInfo, bool]:
    name = member.filename
    where = f"member {short(name)}"
    if not name.endswith(".npy"):
        raise FormatError(f.path, f"{where} is not a .npy array")
    if member.flag_bits & _ENCRYPTED_FLAG:
        raise FormatError(f.path, f"{where} is encrypted")
    if member.compress_type != zipfile.ZIP_STORED:
        method = _METHOD_NAMES.get(member.compress_type, f"method {member.compress_type}")
        raise FormatError(f.path, f"{where} is compressed ({method}); only stored members can be indexed")
    if member.compress_size != member.file_size:
        raise FormatError(
            f.path, f"{where} is stored but its sizes differ ({member.compress_size} != {member.file_size})"
        )

    local = f.read_at(member.header_offset, LOCAL_HEADER.size, f"local header of {where}")
    signature, name_length, extra_length = LOCAL_HEADER.unpack(local)
    if signature != LOCAL_SIGNATURE:
        raise FormatError(f.path, f"{where}: bad local header signature at offset {member.header_offset}")
    local_name = f.read_at(member.header_offset + LOCAL_HEADER.size, name_length, f"local name of {where}")
    encoding = "utf-8" if member.flag_bits & _UTF8_NAME_FLAG else "cp437"
    if local_name.decode(encoding, errors="replace") != member.orig_filename:
        raise FormatError(f.path, f"{where}: local header names {short(local_name)} instead")
    data_start = member.header_offset + LOCAL_HEADER.size + name_length + extra_length
    data_end = data_start + member.file_size
    if data_end > f.size:
        raise FormatError(
            f.path, f"{where}: data [{data_start}, {data_end}) runs past the end of the file ({f.size} bytes)"
        )

    array = parse_npy(f, data_start, data_end, member=name)
    tensor = TensorInfo(name[: -len(".npy")], array.dtype, array.shape, array.data_offset, array.nbytes)
    return tensor, array.fortran_order


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> ParamIndex:
    """Write `arrays` as an uncompressed ``.npz`` (as ``np.savez`` does) and return its index."""
    storable = {name: storable_array(np.asanyarray(a)) for name, a in arrays.items()}
    with atomic_output(path) as f:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in storable.items():
                # force_zip64 as numpy does: the size is not known before writing.
                with archive.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
    return read_npz_index(path)
