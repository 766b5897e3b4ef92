"""DLPack and ``__cuda_array_interface__`` for memory halsim owns, with ctypes only.

``export(owner, address, shape, dtype, device_type, device_id)`` builds a
legacy (unversioned) ``"dltensor"`` capsule around a ``DLManagedTensor`` that
points at existing memory: ``torch.from_dlpack``, ``cupy.from_dlpack`` and
``numpy.from_dlpack`` accept it and share the memory (no copy). The capsule
keeps ``owner`` alive until the consumer calls the deleter (or, if nobody
consumed it, until the capsule is collected). Nothing here needs CUDA, so the
struct layout is tested on the CPU with numpy.

Layout, from dlpack.h (v0.8 / 1.x unversioned):

    DLTensor        { void* data; DLDevice device; int32 ndim; DLDataType dtype;
                      int64* shape; int64* strides; uint64 byte_offset; }
    DLManagedTensor { DLTensor dl_tensor; void* manager_ctx; void (*deleter)(DLManagedTensor*); }
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Sequence

import numpy as np

from halsim.formats import DTYPES, numpy_dtype

# DLDeviceType
KDL_CPU = 1
KDL_CUDA = 2
KDL_CUDA_HOST = 3

# safetensors dtype -> (DLDataTypeCode, bits). Codes from dlpack.h: kDLInt 0,
# kDLUInt 1, kDLFloat 2, kDLBfloat 4, kDLComplex 5, kDLBool 6,
# kDLFloat8_e4m3fn 10, kDLFloat8_e5m2 12.
DL_DTYPES: dict[str, tuple[int, int]] = {
    "BOOL": (6, 8),
    "U8": (1, 8),
    "I8": (0, 8),
    "F8_E4M3": (10, 8),
    "F8_E5M2": (12, 8),
    "I16": (0, 16),
    "U16": (1, 16),
    "F16": (2, 16),
    "BF16": (4, 16),
    "I32": (0, 32),
    "U32": (1, 32),
    "F32": (2, 32),
    "I64": (0, 64),
    "U64": (1, 64),
    "F64": (2, 64),
    "C64": (5, 64),
}


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(DLManagedTensor))
DLManagedTensor._fields_ = [
    ("dl_tensor", DLTensor),
    ("manager_ctx", ctypes.c_void_p),
    ("deleter", _DELETER),
]

# Live exports: address of the DLManagedTensor -> (struct, shape and strides arrays, owner).
# Holding them here keeps the struct memory and the owner alive until release.
_exports: dict[int, tuple[Any, Any, Any, Any]] = {}
_exports_lock = threading.Lock()


def _release(address: int | None) -> None:
    if address:
        with _exports_lock:
            _exports.pop(address, None)


@_DELETER
def _deleter(managed) -> None:  # called by the consumer (torch, cupy, numpy) when done
    try:
        _release(ctypes.cast(managed, ctypes.c_void_p).value)
    except Exception:  # pragma: no cover - interpreter shutdown
        pass


_api = ctypes.pythonapi
_api.PyCapsule_New.restype = ctypes.py_object
_api.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_api.PyCapsule_IsValid.restype = ctypes.c_int
_api.PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

# PyCapsule_New keeps the name pointer, not a copy: it must outlive every capsule.
_NAME = ctypes.create_string_buffer(b"dltensor")
_NAME_PTR = ctypes.cast(_NAME, ctypes.c_char_p)


@ctypes.CFUNCTYPE(None, ctypes.c_void_p)
def _capsule_destructor(capsule) -> None:
    # A consumer renames the capsule to "used_dltensor" and owns the tensor;
    # an unconsumed capsule still says "dltensor" and must release it here.
    try:
        if _api.PyCapsule_IsValid(capsule, _NAME_PTR):
            _release(_api.PyCapsule_GetPointer(capsule, _NAME_PTR))
    except Exception:  # pragma: no cover - interpreter shutdown
        pass


_DESTRUCTOR_PTR = ctypes.cast(_capsule_destructor, ctypes.c_void_p)


def outstanding() -> int:
    """How many exported tensors are still held by a consumer (or an unused capsule)."""
    with _exports_lock:
        return len(_exports)


def dl_dtype(dtype: str) -> tuple[int, int]:
    try:
        return DL_DTYPES[dtype]
    except KeyError:
        raise BufferError(f"dtype {dtype!r} has no DLPack type code") from None


def export(owner: Any, address: int, shape: Sequence[int], dtype: str, device_type: int, device_id: int) -> Any:
    """A ``"dltensor"`` PyCapsule for ``address`` (C-contiguous ``shape`` of ``dtype``)."""
    code, bits = dl_dtype(dtype)
    ndim = len(shape)
    shape_array = (ctypes.c_int64 * max(ndim, 1))(*shape)
    # Compact row-major strides, in elements. DLPack lets them be NULL, but not
    # every consumer (nor every version of one) accepts that: spell them out.
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(int(dim), 1)
    strides_array = (ctypes.c_int64 * max(ndim, 1))(*reversed(strides))
    managed = DLManagedTensor()
    tensor = managed.dl_tensor
    tensor.data = address or None
    tensor.device = DLDevice(device_type, device_id)
    tensor.ndim = ndim
    tensor.dtype = DLDataType(code, bits, 1)
    tensor.shape = ctypes.cast(shape_array, ctypes.POINTER(ctypes.c_int64))
    tensor.strides = ctypes.cast(strides_array, ctypes.POINTER(ctypes.c_int64))
    tensor.byte_offset = 0
    key = ctypes.addressof(managed)
    managed.manager_ctx = key
    managed.deleter = _deleter
    with _exports_lock:
        _exports[key] = (managed, shape_array, strides_array, owner)
    try:
        return _api.PyCapsule_New(key, _NAME_PTR, _DESTRUCTOR_PTR)
    except BaseException:
        _release(key)
        raise


# dtypes the array interface cannot express, read as unsigned integers of their width.
_STANDIN_TYPESTR = {"BF16": "<u2", "F8_E4M3": "|u1", "F8_E5M2": "|u1"}


def typestr(dtype: str) -> str:
    """The array-interface typestr of a safetensors dtype.

    bfloat16 and float8 have no typestr other libraries read (numpy has no such
    types; ml_dtypes', where installed, print as ``<V2`` or ``<f1``): they
    become an unsigned integer of the same width.
    """
    if dtype in _STANDIN_TYPESTR:
        return _STANDIN_TYPESTR[dtype]
    return numpy_dtype(dtype).str


def tensor_shape(dtype: str, shape: Sequence[int], nbytes: int) -> tuple[str, tuple[int, ...]]:
    """(dtype, shape) to present ``nbytes`` as; raw bytes when they don't agree.

    A scalar (``shape == ()``) is shown as one element, as the CPU device does.
    """
    itemsize = DTYPES[dtype].itemsize if dtype in DTYPES else 1
    shape = tuple(int(d) for d in shape)
    count = int(np.prod(shape, dtype=np.int64)) if shape else (nbytes // itemsize if itemsize else 0)
    if dtype not in DTYPES or count * itemsize != nbytes:
        return "U8", (nbytes,)
    return dtype, shape or (count,)


def cuda_array_interface(address: int, shape: Sequence[int], dtype: str, stream: int | None = None) -> dict:
    """``__cuda_array_interface__`` version 3 for compact row-major memory."""
    return {
        "shape": tuple(shape),
        "typestr": typestr(dtype),
        "data": (int(address), False),
        "strides": None,
        "version": 3,
        "stream": stream,
    }
