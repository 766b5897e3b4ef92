"""Raw blobs: a file of unknown layout is one U8 tensor spanning all of it."""

from __future__ import annotations

import os

from halsim.formats.index import ParamIndex, RegularFile, TensorInfo


def read_raw_index(path: str | os.PathLike) -> ParamIndex:
    with RegularFile(path) as f:
        size = f.size
    name = os.path.splitext(os.path.basename(f.path))[0]
    return ParamIndex(f.path, "raw", size, (TensorInfo(name, "U8", (size,), 0, size),))
