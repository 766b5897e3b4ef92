"""Parameter indexes of model files (where each tensor's bytes lie), and writers.

Readers never touch tensor data: they parse headers only and raise
:class:`halsim.errors.FormatError` for anything malformed.
"""

from halsim.formats.dtypes import DTYPES, DTypeInfo, dtype_from_numpy, numpy_dtype
from halsim.formats.index import FORMATS, ParamIndex, TensorInfo, read_index, sniff_format
from halsim.formats.npy import read_npy_index, write_npy
from halsim.formats.npz import read_npz_index, write_npz
from halsim.formats.raw import read_raw_index
from halsim.formats.safetensors import read_safetensors_index, write_safetensors, write_safetensors_layout

__all__ = [
    "DTYPES",
    "DTypeInfo",
    "FORMATS",
    "ParamIndex",
    "TensorInfo",
    "dtype_from_numpy",
    "numpy_dtype",
    "read_index",
    "read_npy_index",
    "read_npz_index",
    "read_raw_index",
    "read_safetensors_index",
    "sniff_format",
    "write_npy",
    "write_npz",
    "write_safetensors",
    "write_safetensors_layout",
]
