"""The CUDA backend.

Three layers, so that most of it runs where there is no GPU:

* helpers that need no CUDA at all (DLPack capsules read back by numpy, host
  views, the "unavailable" path);
* the whole backend on a *fake driver* (``env == "fake"``): host memory plays
  device memory, every pointer and range the backend passes is checked, and a
  context must be current on the calling thread — pointer arithmetic,
  cleanup, cancel and error paths run in CI;
* the same scenarios on the real driver (``env == "real"``), skipped with the
  reason when CUDA is unavailable, plus torch/cupy sharing memory and
  ``cuMemGetInfo`` before/after.
"""

from __future__ import annotations

import ctypes
import enum
import fcntl
import functools
import gc
import mmap
import os
import tempfile
import threading
import time
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

import halsim
from halsim.backends import cuda as hcuda
from halsim.backends import cuda_cufile, cuda_dlpack, cuda_driver, cuda_staging
from halsim.engine import CancelToken, Engine
from halsim.errors import (
    DeviceError,
    DeviceUnavailableError,
    FileAccessError,
    HalsimError,
    ImportRefusedError,
    OutOfMemoryError,
    UploadCancelled,
)
from halsim.files import MappedFile, MemoryFile, address_of
from halsim.formats import read_index, write_safetensors_layout
from halsim.plan import Op
from halsim.policies import ImportPolicy
from halsim.registry import backends, get_device
from halsim.request import SourceInfo, request_from_tensors
from halsim.workloads import TensorSpec, Workload, pattern_bytes

MiB, GiB = 1 << 20, 1 << 30
PAGE = mmap.PAGESIZE


# =====================================================================================
# A fake cuda.bindings.driver: host memory as device memory, strict about pointers.
# =====================================================================================

CUresult = enum.IntEnum("CUresult", {
    "CUDA_SUCCESS": 0, "CUDA_ERROR_INVALID_VALUE": 1, "CUDA_ERROR_OUT_OF_MEMORY": 2,
    "CUDA_ERROR_NOT_INITIALIZED": 3, "CUDA_ERROR_NO_DEVICE": 100, "CUDA_ERROR_INVALID_CONTEXT": 201,
    "CUDA_ERROR_INVALID_HANDLE": 400, "CUDA_ERROR_ILLEGAL_ADDRESS": 700,
    "CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED": 712, "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED": 713,
})
OK = CUresult.CUDA_SUCCESS

_ATTRS = ["INTEGRATED", "UNIFIED_ADDRESSING", "CAN_MAP_HOST_MEMORY", "CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM",
          "HOST_REGISTER_SUPPORTED", "READ_ONLY_HOST_REGISTER_SUPPORTED", "ASYNC_ENGINE_COUNT", "PCI_BUS_ID"]
DeviceAttribute = enum.IntEnum("CUdevice_attribute", {f"CU_DEVICE_ATTRIBUTE_{a}": i + 1 for i, a in enumerate(_ATTRS)})
StreamFlags = enum.IntEnum("CUstream_flags", {"CU_STREAM_DEFAULT": 0, "CU_STREAM_NON_BLOCKING": 1})
PointerAttribute = enum.IntEnum("CUpointer_attribute", {"CU_POINTER_ATTRIBUTE_MEMORY_TYPE": 2,
                                                        "CU_POINTER_ATTRIBUTE_BUFFER_ID": 7})
MemoryType = enum.IntEnum("CUmemorytype", {"CU_MEMORYTYPE_HOST": 1, "CU_MEMORYTYPE_DEVICE": 2})
EventFlags = enum.IntEnum("CUevent_flags", {"CU_EVENT_DEFAULT": 0, "CU_EVENT_BLOCKING_SYNC": 1,
                                            "CU_EVENT_DISABLE_TIMING": 2})


class _Handle:
    def __init__(self, kind: str, n: int):
        self.kind, self.n = kind, n

    def __repr__(self) -> str:
        return f"<fake {self.kind} {self.n}>"


class FakeDriver:
    """The subset of cuda.bindings.driver the backend calls, checking every argument."""

    CUresult = CUresult
    CUdevice_attribute = DeviceAttribute
    CUstream_flags = StreamFlags
    CUevent_flags = EventFlags
    CUpointer_attribute = PointerAttribute
    CUmemorytype = MemoryType
    CU_MEMHOSTALLOC_PORTABLE = 1
    CU_MEMHOSTREGISTER_PORTABLE = 1
    CU_MEMHOSTREGISTER_DEVICEMAP = 2
    CU_MEMHOSTREGISTER_READ_ONLY = 8

    def __init__(self, total: int = 256 * MiB, integrated: bool = False, read_only_register: bool = True,
                 async_engines: int = 2):
        self.total = total
        self.attrs = {
            "INTEGRATED": int(integrated), "UNIFIED_ADDRESSING": 1, "CAN_MAP_HOST_MEMORY": 1,
            "CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM": int(integrated), "HOST_REGISTER_SUPPORTED": 1,
            "READ_ONLY_HOST_REGISTER_SUPPORTED": int(read_only_register), "ASYNC_ENGINE_COUNT": async_engines,
            "PCI_BUS_ID": 7,
        }
        self.lock = threading.Lock()
        self.device_mem: dict[int, np.ndarray] = {}
        self.pinned: dict[int, np.ndarray] = {}
        self.registered: dict[int, int] = {}
        self.streams: set[int] = set()
        self.events: set[int] = set()
        self.used = 0
        self.tls = threading.local()
        self.context = _Handle("context", 1)
        self.copies: Counter[str] = Counter()
        self.fail: dict[str, tuple[int, CUresult]] = {}  # call -> (calls to let through, error)
        self.calls: Counter[str] = Counter()

    @staticmethod
    def CUdeviceptr(value=0):
        return int(value)

    # ----- bookkeeping -------------------------------------------------------------------
    def _stack(self) -> list:
        if not hasattr(self.tls, "stack"):
            self.tls.stack = []
        return self.tls.stack

    def _injected(self, name: str):
        self.calls[name] += 1
        if name in self.fail:
            allowed, error = self.fail[name]
            if self.calls[name] > allowed:
                return error
        return None

    def _need_context(self) -> bool:
        stack = self._stack()
        return bool(stack) and stack[-1] is self.context

    @staticmethod
    def _inside(ranges: dict[int, int], address: int, n: int) -> bool:
        return any(a <= address and address + n <= a + length for a, length in ranges.items())

    def _device_ranges(self) -> dict[int, int]:
        ranges = {a: len(m) for a, m in self.device_mem.items()}
        if self.attrs["INTEGRATED"]:
            ranges.update(self.registered)
        return ranges

    def _host_pinned(self, address: int, n: int) -> bool:
        pinned = {a: len(m) for a, m in self.pinned.items()}
        pinned.update(self.registered)
        return self._inside(pinned, address, n)

    # ----- init and devices ------------------------------------------------------------------
    def cuInit(self, flags):
        return (OK,)

    def cuDeviceGetCount(self):
        return (OK, 1)

    def cuDeviceGet(self, index):
        return (OK, _Handle("device", index)) if index == 0 else (CUresult.CUDA_ERROR_INVALID_VALUE, None)

    def cuDeviceGetName(self, length, dev):
        return (OK, b"Fake GPU\0\0\0")

    def cuDeviceTotalMem(self, dev):
        return (OK, self.total)

    def cuDeviceGetAttribute(self, attr, dev):
        return (OK, self.attrs[attr.name.removeprefix("CU_DEVICE_ATTRIBUTE_")])

    def cuDevicePrimaryCtxRetain(self, dev):
        return (OK, self.context)

    def cuCtxPushCurrent(self, ctx):
        assert ctx is self.context
        self._stack().append(ctx)
        return (OK,)

    def cuCtxPopCurrent(self):
        stack = self._stack()
        return (OK, stack.pop()) if stack else (CUresult.CUDA_ERROR_INVALID_CONTEXT, None)

    def cuCtxSetCurrent(self, ctx):
        stack = self._stack()
        if stack:
            stack[-1] = ctx
        else:
            stack.append(ctx)
        return (OK,)

    def cuMemGetInfo(self):
        if not self._need_context():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT, 0, 0)
        return (OK, self.total - self.used, self.total)

    # ----- memory ------------------------------------------------------------------------------
    def cuMemAlloc(self, size):
        if not self._need_context():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT, 0)
        if size <= 0:
            return (CUresult.CUDA_ERROR_INVALID_VALUE, 0)
        with self.lock:
            if self.used + size > self.total:
                return (CUresult.CUDA_ERROR_OUT_OF_MEMORY, 0)
            mem = np.empty(size, np.uint8)
            self.device_mem[mem.ctypes.data] = mem
            self.used += size
        return (OK, mem.ctypes.data)

    def cuMemFree(self, ptr):
        if not self._need_context():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        with self.lock:
            mem = self.device_mem.pop(int(ptr), None)
            if mem is None:
                return (CUresult.CUDA_ERROR_INVALID_VALUE,)
            self.used -= len(mem)
        return (OK,)

    def cuMemHostAlloc(self, size, flags):
        if not self._need_context():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT, 0)
        raw = np.empty(size + PAGE, np.uint8)  # page-aligned, as the driver's
        mem = raw[(-raw.ctypes.data) % PAGE:][:size]
        with self.lock:
            self.pinned[mem.ctypes.data] = mem
        return (OK, mem.ctypes.data)

    def cuMemFreeHost(self, ptr):
        with self.lock:
            return (OK,) if self.pinned.pop(int(ptr), None) is not None else (CUresult.CUDA_ERROR_INVALID_VALUE,)

    def cuMemHostRegister(self, address, length, flags):
        if not self._need_context():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        if error := self._injected("cuMemHostRegister"):
            return (error,)
        if flags & self.CU_MEMHOSTREGISTER_READ_ONLY and not self.attrs["READ_ONLY_HOST_REGISTER_SUPPORTED"]:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        first, last = address // PAGE, (address + length - 1) // PAGE
        with self.lock:
            ranges = list(self.registered.items()) + [(a, len(m)) for a, m in self.pinned.items()]
            for a, n in ranges:
                if first <= (a + n - 1) // PAGE and a // PAGE <= last:
                    return (CUresult.CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED,)
            self.registered[address] = length
        return (OK,)

    def cuMemHostUnregister(self, address):
        with self.lock:
            return (OK,) if self.registered.pop(address, None) is not None else \
                (CUresult.CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED,)

    def cuPointerGetAttribute(self, attribute, ptr):
        ptr = int(ptr)
        with self.lock:
            host = {a: len(m) for a, m in self.pinned.items()}
            host.update(self.registered)
            owner = next((a for a, n in host.items() if a <= ptr < a + n), None)
            if owner is None:
                device = next((a for a, m in self.device_mem.items() if a <= ptr < a + len(m)), None)
                if device is None:
                    return (CUresult.CUDA_ERROR_INVALID_VALUE, 0)
                owner, kind = device, MemoryType.CU_MEMORYTYPE_DEVICE
            else:
                kind = MemoryType.CU_MEMORYTYPE_HOST
        if attribute is PointerAttribute.CU_POINTER_ATTRIBUTE_MEMORY_TYPE:
            return (OK, kind)
        if attribute is PointerAttribute.CU_POINTER_ATTRIBUTE_BUFFER_ID:
            return (OK, owner)
        return (CUresult.CUDA_ERROR_INVALID_VALUE, 0)

    def cuMemHostGetDevicePointer(self, address, flags):
        if not self._inside(self.registered, address, 1):
            return (CUresult.CUDA_ERROR_INVALID_VALUE, 0)
        return (OK, address)

    def cuMemsetD8(self, ptr, value, n):
        if not self._need_context() or not self._inside(self._device_ranges(), int(ptr), n):
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        ctypes.memset(int(ptr), value, n)
        return (OK,)

    def cuCtxSynchronize(self):
        return (OK,) if self._need_context() else (CUresult.CUDA_ERROR_INVALID_CONTEXT,)

    # ----- streams and copies --------------------------------------------------------------------
    def _create(self, kind: str, table: set, first: int):
        """A new stream or event handle, kept in ``table`` until destroyed."""
        if not self._need_context():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT, None)
        handle = _Handle(kind, len(table) + first)
        with self.lock:
            table.add(id(handle))
        return (OK, handle)

    def _destroy(self, table: set, handle):
        with self.lock:
            if id(handle) not in table:
                return (CUresult.CUDA_ERROR_INVALID_HANDLE,)
            table.discard(id(handle))
        return (OK,)

    def cuStreamCreate(self, flags):
        return self._create("stream", self.streams, 1000)

    def cuStreamDestroy(self, stream):
        return self._destroy(self.streams, stream)

    def cuStreamSynchronize(self, stream):
        if not self._need_context():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        return (OK,) if id(stream) in self.streams else (CUresult.CUDA_ERROR_INVALID_HANDLE,)

    def _copy(self, name, dst, src, n, to_device: bool, stream=None):
        if not self._need_context():
            return (CUresult.CUDA_ERROR_INVALID_CONTEXT,)
        if error := self._injected(name):
            return (error,)
        if stream is not None and id(stream) not in self.streams:
            return (CUresult.CUDA_ERROR_INVALID_HANDLE,)
        device, host = (int(dst), int(src)) if to_device else (int(src), int(dst))
        if not self._inside(self._device_ranges(), device, n):
            return (CUresult.CUDA_ERROR_ILLEGAL_ADDRESS,)
        # As the real driver: host memory that starts in one registration must end in it.
        for a, length in list(self.registered.items()) + [(a, len(m)) for a, m in self.pinned.items()]:
            if a <= host < a + length and host + n > a + length:
                return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        if stream is not None:
            kind = "pinned" if self._host_pinned(host, n) else "pageable"
            with self.lock:  # several threads queue copies on one stream
                self.copies[kind] += 1
        ctypes.memmove(int(dst), int(src), n)
        return (OK,)

    def cuMemcpyHtoDAsync(self, dst, src, n, stream):
        return self._copy("cuMemcpyHtoDAsync", dst, src, n, True, stream)

    def cuMemcpyDtoHAsync(self, dst, src, n, stream):
        return self._copy("cuMemcpyDtoHAsync", dst, src, n, False, stream)

    def cuMemcpyHtoD(self, dst, src, n):
        return self._copy("cuMemcpyHtoD", dst, src, n, True)

    def cuMemcpyDtoH(self, dst, src, n):
        return self._copy("cuMemcpyDtoH", dst, src, n, False)

    def cuEventCreate(self, flags):
        return self._create("event", self.events, 0)

    def cuEventRecord(self, event, stream):
        ok = id(event) in self.events and id(stream) in self.streams and self._need_context()
        return (OK,) if ok else (CUresult.CUDA_ERROR_INVALID_HANDLE,)

    def cuEventSynchronize(self, event):
        return (OK,) if id(event) in self.events else (CUresult.CUDA_ERROR_INVALID_HANDLE,)

    def cuEventDestroy(self, event):
        return self._destroy(self.events, event)

    # ----- what tests look at ------------------------------------------------------------------
    def held(self) -> dict[str, int]:
        return {"device": len(self.device_mem), "pinned": len(self.pinned), "registered": len(self.registered),
                "streams": len(self.streams), "events": len(self.events)}


class FakeCuFileModule:
    """cuda.bindings.cufile's calls as CuFileSource makes them; O_DIRECT reads must be aligned."""

    class FileHandleType:
        OPAQUE_FD = 1

    def __init__(self):
        self.descrs, self.handles, self.reads = {}, {}, Counter()
        module = self

        class Descr:
            def __init__(self):
                self.type, self.handle, self.fs_ops = None, type("H", (), {"fd": None})(), None
                self.ptr = id(self)
                module.descrs[self.ptr] = self

        self.Descr = Descr

    def handle_register(self, ptr):
        descr = self.descrs[ptr]
        assert descr.type == 1 and descr.fs_ops == 0
        handle = len(self.handles) + 100
        self.handles[handle] = descr.handle.fd
        return handle

    def handle_deregister(self, handle):
        del self.handles[handle]

    def read(self, handle, device_ptr, size, file_offset, buffer_offset):
        fd = self.handles[handle]
        direct = bool(os.O_DIRECT and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT)
        self.reads["direct" if direct else "buffered"] += 1
        if direct and (file_offset % 512 or size % 512):
            return -22  # what a refused unaligned O_DIRECT read looks like
        target = (ctypes.c_ubyte * size).from_address(device_ptr + buffer_offset)
        if direct:  # cuFile bounces O_DIRECT reads through aligned memory of its own
            with open(f"/proc/self/fd/{fd}", "rb", buffering=0) as plain:
                return os.preadv(plain.fileno(), [memoryview(target).cast("B")], file_offset)
        return os.preadv(fd, [memoryview(target).cast("B")], file_offset)


# =====================================================================================
# Environments: the fake driver, or the real one.
# =====================================================================================


_warm: dict[str, object] = {}


def _real_device():
    """cuda:0, after one small upload of each kind, so that what the driver and
    cuFile set up once per process is not counted as left behind by a test."""
    try:
        device = get_device("cuda:0")
    except DeviceUnavailableError as err:
        pytest.skip(str(err))
    if "done" not in _warm:
        folder = tempfile.mkdtemp(prefix="halsim-warm-")
        path = os.path.join(folder, "warm.safetensors")
        Workload(name="warm", dtype="F32", tensors=(TensorSpec(name="w", dtype="F32", shape=(300_000,)),)).write(path)
        for policy in ("staged", "streaming:chunk=64KiB,queues=2", "import:piece=64KiB", "direct:chunk=64KiB"):
            halsim.upload(path, device, policy, verify=True).free()
        os.unlink(path)
        os.rmdir(folder)
        _warm["done"] = True
    return device


class Env:
    def __init__(self, kind: str, device, driver, cufile=None):
        self.kind, self.device, self.cu, self.cufile = kind, device, driver, cufile

    def snapshot(self):
        gc.collect()
        free = self.device.mem_info()[0]
        held = (self.cu.held(), dict(self.cufile.handles)) if self.kind == "fake" else None
        return hcuda.live_resources(), free, cuda_dlpack.outstanding(), held

    def assert_clean(self, before) -> None:
        live, free, exports, held = self.snapshot()
        assert live == before[0], f"still held: {live} (before: {before[0]})"
        assert exports == before[2]
        slack = 0 if self.kind == "fake" else 32 * MiB
        assert abs(free - before[1]) <= slack, f"device memory free {free} != {before[1]} before"
        assert held == before[3], "the fake driver still holds something"

    def memset(self, buffer, value: int) -> None:
        with cuda_driver.current(self.device.info.context):
            assert int(self.cu.cuMemsetD8(self.cu.CUdeviceptr(buffer.ptr), value, buffer.size)[0]) == 0
            assert int(self.cu.cuCtxSynchronize()[0]) == 0

    def register(self, address: int, length: int) -> None:
        with cuda_driver.current(self.device.info.context):
            assert int(self.cu.cuMemHostRegister(address, length, 0)[0]) == 0

    def unregister(self, address: int) -> None:
        with cuda_driver.current(self.device.info.context):
            assert int(self.cu.cuMemHostUnregister(address)[0]) == 0


def _use_fake(monkeypatch, **kwargs) -> Env:
    fake = FakeDriver(**kwargs)
    monkeypatch.setattr(cuda_driver, "cu", fake)
    monkeypatch.setattr(hcuda, "cu", fake)
    monkeypatch.setattr(cuda_driver, "_init_state", None)
    monkeypatch.setattr(cuda_driver, "_devices", {})
    module = FakeCuFileModule()
    monkeypatch.setattr(cuda_cufile, "probe", lambda index: (True, "fake cuFile"))
    monkeypatch.setattr(cuda_cufile, "open_driver", lambda: None)
    monkeypatch.setattr(cuda_cufile, "CuFileSource", functools.partial(cuda_cufile.CuFileSource, cufile=module))
    return Env("fake", hcuda.open_device(0), fake, module)


@pytest.fixture(params=["fake", "real"])
def env(request, monkeypatch):
    if request.param == "fake":
        yield _use_fake(monkeypatch)  # monkeypatch restores the real driver and its caches after
    else:
        yield Env("real", _real_device(), cuda_driver.cu)


# =====================================================================================
# Model files
# =====================================================================================

MIXED = Workload(name="mixed", dtype="F32", tensors=(
    TensorSpec(name="w_i64", dtype="I64", shape=(1001,)),
    TensorSpec(name="w_f32", dtype="F32", shape=(517, 129)),
    TensorSpec(name="scalar", dtype="F32", shape=()),
    TensorSpec(name="empty", dtype="F32", shape=(0, 4)),
    TensorSpec(name="emb", dtype="BF16", shape=(1000, 333)),
    TensorSpec(name="big", dtype="BF16", shape=(2048, 1531)),
    TensorSpec(name="w_f16", dtype="F16", shape=(3, 5, 7)),
    TensorSpec(name="bytes", dtype="U8", shape=(1_000_003,)),  # odd: the tensors after it are unaligned
    TensorSpec(name="mask", dtype="BOOL", shape=(77,)),
    TensorSpec(name="tail", dtype="I8", shape=(4099,)),
))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    path = tmp_path_factory.mktemp("cuda") / "mixed.safetensors"
    MIXED.write(path, "pattern")
    return path


def expected(t) -> bytes:
    return pattern_bytes(t.offset, t.nbytes).tobytes()


def check_buffers(upload, index) -> None:
    buffers = upload.buffers()
    for t in index.tensors:
        got = buffers[t.name].to_bytes()
        assert got == expected(t), f"{t.name} differs from the file"


POLICIES = [
    "staged",
    "staged:chunk=1000003,readers=2",
    "streaming:chunk=64KiB,slots=1,readers=1",
    "streaming:chunk=1000003,slots=3,readers=2,queues=2",
    "streaming:chunk=4MiB,slots=8,readers=4,queues=2",
    "import",
    "import:piece=64KiB,queues=2",
    "direct:chunk=1000003,readers=3",
    "auto",
]


# =====================================================================================
# No CUDA needed
# =====================================================================================


def test_dlpack_capsule_is_read_by_numpy():
    source = np.arange(2 * 3 * 4, dtype=np.float32)

    class Host:
        def __init__(self, array, shape, dtype):
            self.array, self.shape, self.dtype = array, shape, dtype

        def __dlpack__(self, **kwargs):
            return cuda_dlpack.export(self, self.array.ctypes.data, self.shape, self.dtype, cuda_dlpack.KDL_CPU, 0)

        def __dlpack_device__(self):
            return (cuda_dlpack.KDL_CPU, 0)

    before = cuda_dlpack.outstanding()
    view = np.from_dlpack(Host(source, (2, 3, 4), "F32"))
    assert view.shape == (2, 3, 4) and view.dtype == np.float32
    assert view.ctypes.data == source.ctypes.data  # shared, not copied
    source[5] = 99
    assert view.reshape(-1)[5] == 99
    assert cuda_dlpack.outstanding() == before + 1
    del view
    gc.collect()
    assert cuda_dlpack.outstanding() == before  # the consumer called our deleter
    capsule = Host(source, (24,), "I32").__dlpack__()  # never consumed: the capsule releases it
    del capsule
    gc.collect()
    assert cuda_dlpack.outstanding() == before
    for dtype, np_dtype in [("I64", "<i8"), ("U16", "<u2"), ("F16", "<f2"), ("C64", "<c8"), ("I8", "i1"),
                            ("U8", "u1"), ("F64", "<f8"), ("BOOL", "?"), ("U32", "<u4"), ("I16", "<i2")]:
        array = (np.arange(6) % 2).astype(np_dtype)
        got = np.from_dlpack(Host(array, (6,), dtype))
        assert got.dtype == np.dtype(np_dtype) and got.ctypes.data == array.ctypes.data, dtype
    del got
    gc.collect()
    assert cuda_dlpack.outstanding() == before


def test_dlpack_codes_and_typestr():
    assert cuda_dlpack.DL_DTYPES["BF16"] == (4, 16)
    assert cuda_dlpack.DL_DTYPES["F8_E4M3"] == (10, 8) and cuda_dlpack.DL_DTYPES["F8_E5M2"] == (12, 8)
    assert ctypes.sizeof(cuda_dlpack.DLTensor) == 48 and ctypes.sizeof(cuda_dlpack.DLManagedTensor) == 64
    assert cuda_dlpack.typestr("BF16") == "<u2" and cuda_dlpack.typestr("F32") == "<f4"
    assert cuda_dlpack.typestr("F8_E5M2") == "|u1"
    assert cuda_dlpack.tensor_shape("F32", (), 4) == ("F32", (1,))
    assert cuda_dlpack.tensor_shape("F32", (3,), 5) == ("U8", (5,))  # bytes that don't fit the dtype
    interface = cuda_dlpack.cuda_array_interface(1234, (2, 3), "F16")
    assert interface == {"shape": (2, 3), "typestr": "<f2", "data": (1234, False), "strides": None, "version": 3,
                         "stream": None}


def test_host_view_is_writable_memory_at_the_address():
    array = np.zeros(64, np.uint8)
    view = hcuda.host_view(array.ctypes.data + 8, 16)
    view[:4] = b"abcd"
    assert bytes(array[8:12]) == b"abcd" and address_of(view) == array.ctypes.data + 8
    assert len(hcuda.host_view(0, 0)) == 0


def test_unavailable_says_why():
    try:
        cuda_driver.init()
    except DeviceUnavailableError as err:
        assert str(err).startswith("cuda: unavailable (")
        with pytest.raises(DeviceUnavailableError, match=r"^cuda: unavailable \("):
            get_device("cuda:0")
        status = {s.name: s for s in backends()}["cuda"]
        assert not status.available and status.reason and status.devices == []
    else:
        pytest.skip("CUDA is available here")


def test_cufile_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("HALSIM_CUDA_DIRECT", "0")
    works, why = cuda_cufile.probe(0)
    assert not works and "HALSIM_CUDA_DIRECT" in why


def test_cufile_source_falls_back_to_buffered_reads(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, 3 * PAGE + 77, dtype=np.uint8)
    path = tmp_path / "data.bin"
    path.write_bytes(data.tobytes())
    fd = os.open(path, os.O_RDONLY)
    module = FakeCuFileModule()
    try:
        source = cuda_cufile.CuFileSource(str(path), fd, "cuda:0", cufile=module)
        out = np.zeros(len(data) + 100, np.uint8)
        first = source.mode
        source.read(out.ctypes.data, 2 * PAGE, 0, 50)  # aligned: O_DIRECT if the file system allows it
        assert source.mode == first
        source.read(out.ctypes.data, PAGE + 77, 2 * PAGE, 50 + 2 * PAGE)  # unaligned size: buffered
        assert out[50 : 50 + len(data)].tobytes() == data.tobytes()
        assert source.mode == "buffered"
        assert module.reads["direct"] == (2 if first == "O_DIRECT" else 0)
        source.close()
        assert module.handles == {}  # every handle, the replaced one too, deregistered
    finally:
        os.close(fd)


# =====================================================================================
# Scenarios, on the fake driver and on the GPU
# =====================================================================================


def test_caps(env):
    caps = env.device.caps
    assert caps.kind in ("dedicated", "integrated")
    assert caps.import_alignment == PAGE and caps.can_import_host
    assert caps.copy_queues >= 1 and caps.memory_bytes > 0
    assert env.device.name == "cuda:0"


@pytest.mark.parametrize("mode", ["overlapped", "serial"])
@pytest.mark.parametrize("policy", POLICIES)
def test_upload_is_byte_exact(env, mixed, policy, mode):
    index = read_index(mixed)
    before = env.snapshot()
    with halsim.upload(mixed, env.device, policy, mode=mode, verify=True) as done:
        check_buffers(done, index)
        tensors = done.tensors()
        for t in index.tensors:
            tensor = tensors[t.name]
            interface = tensor.__cuda_array_interface__
            assert interface["data"][0] == done.buffers()[t.name].ptr or t.nbytes == 0
            assert tensor.__dlpack_device__() == (cuda_dlpack.KDL_CUDA, 0)
        assert tensors["big"].shape == (2048, 1531) and tensors["big"].dtype == "BF16"
        assert tensors["scalar"].shape == (1,)
        assert done.report.bytes == index.total_bytes
        if env.kind == "fake" and done.plan.policy.kind in ("streaming", "import"):
            assert env.cu.copies["pageable"] == 0  # the hot path copies only pinned memory
    env.assert_clean(before)


@pytest.mark.parametrize("policy", ["streaming:chunk=777777,slots=3,readers=2,queues=2", "staged:chunk=1MiB"])
def test_download_round_trip(env, mixed, policy, tmp_path):
    index = read_index(mixed)
    before = env.snapshot()
    out = tmp_path / "back.safetensors"
    with halsim.upload(mixed, env.device, "streaming:chunk=1MiB,slots=4,readers=2") as done:
        report = done.download(out, policy)
        assert out.read_bytes() == mixed.read_bytes()
        assert report.direction == "download"
        # The download reads device memory: change a tensor there and it shows in the file.
        changed = index.by_name("w_f32")
        env.memset(done.buffers()["w_f32"], 0x5A)
        done.download(out, policy)
    data = out.read_bytes()
    assert data[changed.offset : changed.end] == b"\x5a" * changed.nbytes
    assert data[: changed.offset] == mixed.read_bytes()[: changed.offset]
    env.assert_clean(before)


@pytest.fixture(scope="module")
def past_4gib(tmp_path_factory):
    """A sparse file whose last tensors lie past 4 GiB, at unaligned offsets, holding the pattern."""
    path = tmp_path_factory.mktemp("cuda") / "far.safetensors"
    # The writer puts larger item sizes first: an F64 hole comes before everything else.
    specs = [("hole", "F64", ((4 * GiB + 12344) // 8,)), ("a", "F32", (1000,)), ("b", "U8", (999_999,)),
             ("c", "BF16", (3, 7777)), ("d", "U8", (5,))]
    index = write_safetensors_layout(path, specs, None)
    with open(path, "r+b") as f:
        for t in index.tensors:
            if t.name != "hole":
                f.seek(t.offset)
                f.write(pattern_bytes(t.offset, t.nbytes).tobytes())
    far = replace(index, tensors=tuple(t for t in index.tensors if t.name != "hole"))
    assert all(t.offset > 4 * GiB for t in far.tensors) and any(t.offset % 8 for t in far.tensors)
    return path, far


@pytest.mark.parametrize("policy", ["streaming:chunk=300000,slots=2,readers=2", "staged", "import:piece=64KiB",
                                    "direct:chunk=300001"])
def test_offsets_past_4gib(env, past_4gib, policy):
    path, far = past_4gib
    before = env.snapshot()
    with halsim.upload(path, env.device, policy, index=far, verify=True) as done:
        check_buffers(done, far)
    env.assert_clean(before)


def test_out_of_memory_is_clear_and_frees_everything(env, tmp_path):
    size = int(env.device.caps.memory_bytes * 0.6)
    path = tmp_path / "huge.safetensors"
    write_safetensors_layout(path, [("first", "U8", (size,)), ("second", "U8", (size,))], None)
    before = env.snapshot()
    with pytest.raises(OutOfMemoryError, match=r"cannot allocate \d+ bytes for tensor 'second'.*OUT_OF_MEMORY"):
        halsim.upload(path, env.device, "streaming")
    env.assert_clean(before)


@pytest.mark.parametrize("policy", ["streaming:chunk=64KiB,slots=4,readers=3,queues=2", "import:piece=64KiB",
                                    "direct:chunk=64KiB", "staged:chunk=64KiB"])
def test_cancel_frees_everything(env, mixed, policy):
    before = env.snapshot()
    token = CancelToken()
    calls = []

    def progress(done, total):
        calls.append(done)
        token.cancel()

    with pytest.raises(UploadCancelled):
        halsim.upload(mixed, env.device, policy, progress=progress, cancel=token)
    assert calls
    env.assert_clean(before)


class FailingFile(MappedFile):
    """Reads fail after a few: an I/O error in the middle of an upload."""

    def __init__(self, path, good_reads: int):
        super().__init__(path)
        self.left = good_reads
        self.lock = threading.Lock()

    def read_into(self, offset, out):
        with self.lock:
            self.left -= 1
            if self.left < 0:
                raise FileAccessError(self.name, "injected read failure")
        return super().read_into(offset, out)


def test_read_error_frees_everything(env, mixed):
    before = env.snapshot()
    source = FailingFile(mixed, good_reads=3)
    try:
        with pytest.raises(HalsimError, match="injected read failure"):
            halsim.upload(source, env.device, "streaming:chunk=64KiB,slots=4,readers=2", index=read_index(mixed))
    finally:
        source.close()
    env.assert_clean(before)


def test_refused_import(env, mixed):
    """Host memory someone else registered cannot be registered again: the engine
    raises ImportRefusedError having freed everything; upload() then runs the
    import policy's fallback."""
    data = mixed.read_bytes()
    memory = mmap.mmap(-1, len(data))
    memory[:] = data
    base = address_of(memoryview(memory))
    index = read_index(mixed)
    untouched = env.snapshot()
    env.register(base + 4 * PAGE, PAGE)
    before = env.snapshot()
    source = MemoryFile(memory, name=str(mixed))
    try:
        request = request_from_tensors(SourceInfo.of(source), index.tensors)
        plan = ImportPolicy(piece=64 * 1024).plan(request, [env.device.caps])
        assert plan.policy.kind == "import"
        with pytest.raises(ImportRefusedError, match="cuMemHostRegister"):
            Engine().run(plan, source, [env.device])
        env.assert_clean(before)
        with halsim.upload(source, env.device, "import:piece=64KiB", index=index, verify=True) as done:
            assert done.plan.policy.kind == "streaming" and done.plan.requested.kind == "import"
            assert any("refused" in note for note in done.plan.notes)
    finally:
        env.unregister(base + 4 * PAGE)
        source.close()
    env.assert_clean(untouched)


def test_host_memory_source(env, mixed):
    """A file already in (page-aligned) host memory: import registers it; direct copies from it."""
    data = mixed.read_bytes()
    memory = mmap.mmap(-1, len(data))
    memory[:] = data
    index = read_index(mixed)
    before = env.snapshot()
    for policy in ("import:piece=1MiB,queues=2", "direct:chunk=1MiB", "streaming:chunk=1MiB,slots=2"):
        source = MemoryFile(memory, name=str(mixed))
        wanted = policy.split(":")[0]
        if wanted == "direct" and not env.device.caps.direct_storage:
            wanted = "streaming"  # the declared fallback
        with halsim.upload(source, env.device, policy, index=index, verify=True) as done:
            assert done.plan.policy.kind == wanted, done.plan.notes
            check_buffers(done, index)
        source.close()
    env.assert_clean(before)


def test_pinned_host_memory_is_copied_from_as_it_is(env, mixed):
    """A source in memory its owner page-locked (cuMemHostAlloc, a pinned torch
    tensor): import copies from it without registering it again."""
    data = np.frombuffer(mixed.read_bytes(), np.uint8)
    index = read_index(mixed)
    with cuda_driver.current(env.device.info.context):
        ptr = cuda_driver.check(env.cu.cuMemHostAlloc(len(data) + PAGE, 0), "cuMemHostAlloc")
    try:
        pinned = hcuda.host_view(int(ptr), len(data) + PAGE)
        pinned[: len(data)] = data
        before = env.snapshot()
        registered = env.cu.calls["cuMemHostRegister"] if env.kind == "fake" else None
        for policy in ("import:piece=1MiB,queues=2", "import:piece=64KiB,importers=2"):
            source = MemoryFile(pinned[: len(data)], name=str(mixed))
            with halsim.upload(source, env.device, policy, index=index, verify=True) as done:
                assert done.plan.policy.kind == "import", done.plan.notes
                check_buffers(done, index)
            source.close()
        if registered is not None:
            assert env.cu.calls["cuMemHostRegister"] == registered, "pinned memory was registered again"
        assert hcuda.HOST_REGISTRY.ranges() == {}
        env.assert_clean(before)
    finally:
        with cuda_driver.current(env.device.info.context):
            cuda_driver.check(env.cu.cuMemFreeHost(ptr), "cuMemFreeHost")


def test_windows_sharing_a_page(env, tmp_path):
    """Two runs of a file whose gap is under a page: their windows share a page, so
    they share its registration, and a copy that crosses from the shared range
    into the next one is split (the driver refuses a copy across registrations)."""
    data = np.random.default_rng(5).integers(0, 256, 6 * PAGE, dtype=np.uint8)
    path = tmp_path / "gappy.bin"
    path.write_bytes(data.tobytes())
    from halsim.formats.index import ParamIndex, TensorInfo

    tensors = (TensorInfo("a", "U8", (PAGE + 4,), 0, PAGE + 4),
               TensorInfo("b", "U8", (2 * PAGE,), PAGE + 14, 2 * PAGE))  # starts 10 bytes after a ends
    index = ParamIndex(str(path), "raw", len(data), tensors)
    before = env.snapshot()
    for _ in range(3):  # the overlap depends on timing: B's import must come before A's unimport
        with halsim.upload(path, env.device, "import:piece=64KiB", index=index, verify=True) as done:
            assert done.plan.policy.kind == "import"
            assert done.buffers()["b"].to_bytes() == data[PAGE + 14 : 3 * PAGE + 14].tobytes()
    env.assert_clean(before)
    assert hcuda.HOST_REGISTRY.ranges() == {}


@pytest.mark.parametrize("settings", [{"HALSIM_CUDA_STAGING": "alloc"}, {"HALSIM_CUDA_WAIT": "block"},
                                      {"HALSIM_CUDA_WAIT": "spin"},
                                      {"HALSIM_CUDA_STAGING": "alloc", "HALSIM_CUDA_WAIT": "block"}])
@pytest.mark.parametrize("policy", ["streaming:chunk=1000003,slots=3,readers=2,queues=2", "import:piece=64KiB",
                                    "staged"])
def test_staging_and_wait_variants(env, mixed, monkeypatch, settings, policy, tmp_path):
    """The pool as one cuMemHostAlloc; copies waited for on a blocking-sync event, and by spinning
    (which of the two is the default depends on the host's cores)."""
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    index = read_index(mixed)
    before = env.snapshot()
    with halsim.upload(mixed, env.device, policy, verify=True) as done:
        check_buffers(done, index)
        done.download(tmp_path / "back.safetensors", "streaming:chunk=1MiB,slots=2,queues=2")
    assert (tmp_path / "back.safetensors").read_bytes() == mixed.read_bytes()
    env.assert_clean(before)


@pytest.mark.parametrize("mode", ["pipelined", "alloc"])
def test_the_trace_shows_the_ring_pinned_and_freed(env, mixed, monkeypatch, mode):
    """Each slot's pinning (pipelined: one span a slot, on the background thread) and the ring's
    freeing, on the lane the simulator puts them: compare shows them side by side."""
    monkeypatch.setenv("HALSIM_CUDA_STAGING", mode)
    with halsim.upload(mixed, env.device, "streaming:chunk=64KiB,slots=3,readers=2") as done:
        trace = done.report.trace
    pins = [s for s in trace.spans if s.lane == "alloc/d0" and s.op == "pin"]
    (unpin,) = [s for s in trace.spans if s.lane == "alloc/d0" and s.op == "unpin"]
    slot = 64 * 1024
    assert [s.nbytes for s in pins] == ([slot] * 3 if mode == "pipelined" else [3 * slot])
    steps = [s for s in trace.spans if s.lane.startswith(("read/", "copy/"))]
    assert min(s.end for s in steps if s.op == "read") >= pins[0].end  # the first read waited for its slot
    assert unpin.nbytes == 3 * slot and unpin.start >= max(s.end for s in steps) - 1e-6


def test_staging_first_pins_the_whole_ring_before_the_first_read(env, mixed, monkeypatch):
    """``upload(staging_first=True)``: the ring's last slot is pinned before any read starts, as
    calibration's probes run it; the bytes arrive all the same and nothing stays pinned."""
    monkeypatch.setenv("HALSIM_CUDA_STAGING", "pipelined")
    pin = cuda_staging.pin_anonymous

    def slow_pin(*args, **kwargs):  # the later slots take a while, as large ones do: reads would start first
        time.sleep(0.02)
        return pin(*args, **kwargs)

    monkeypatch.setattr(cuda_staging, "pin_anonymous", slow_pin)
    before = env.snapshot()
    with halsim.upload(mixed, env.device, "streaming:chunk=64KiB,slots=4,readers=2", staging_first=True,
                       verify=True) as done:
        trace = done.report.trace
    pins = [s for s in trace.spans if s.lane == "alloc/d0" and s.op == "pin"]
    reads = [s for s in trace.spans if s.lane.startswith("read/")]
    assert len(pins) == 4 and reads
    assert min(s.start for s in reads) >= max(s.end for s in pins)
    env.assert_clean(before)


# =====================================================================================
# Fake driver only: injected driver errors, integrated GPUs
# =====================================================================================


def test_driver_error_names_curesult_and_step(monkeypatch, mixed):
    env = _use_fake(monkeypatch)
    before = env.snapshot()
    env.cu.fail["cuMemcpyHtoDAsync"] = (5, CUresult.CUDA_ERROR_ILLEGAL_ADDRESS)
    with pytest.raises(DeviceError, match=r"cuMemcpyHtoDAsync failed: CUDA_ERROR_ILLEGAL_ADDRESS.*during step \d+ copy"):
        halsim.upload(mixed, env.device, "streaming:chunk=64KiB,slots=4,readers=2")
    env.assert_clean(before)


def test_staging_slot_that_cannot_be_pinned_fails_the_read_and_frees_the_rest(monkeypatch, mixed):
    """The ring pins slots in the background: the third slot (2) failing must fail the upload
    (naming the staging) and leave none of the slots pinned before it."""
    env = _use_fake(monkeypatch)
    before = env.snapshot()
    env.cu.fail["cuMemHostRegister"] = (2, CUresult.CUDA_ERROR_OUT_OF_MEMORY)
    with pytest.raises(OutOfMemoryError, match=r"cannot pin staging slot 2 of 4 x 65536 bytes.*CUDA_ERROR_OUT_OF_MEMORY"):
        halsim.upload(mixed, env.device, "streaming:chunk=64KiB,slots=4,readers=2")
    env.assert_clean(before)


@pytest.mark.parametrize("policy, cpus, blocking", [
    ("streaming:chunk=64KiB,slots=4,readers=2", 4, False),  # 2 readers, 1 copy thread and the engine fit 4 cores
    ("streaming:chunk=64KiB,slots=4,readers=2", 3, True),
    ("streaming:chunk=64KiB,slots=8,readers=4,queues=2", 7, False),
    ("streaming:chunk=64KiB,slots=8,readers=4,queues=2", 6, True),
    ("import:piece=64KiB", 6, False),  # no readers: 4 copies queued ahead, each on its thread, the importer, the engine
    ("import:piece=64KiB", 5, True),
])
def test_copies_spin_while_every_thread_has_a_core(monkeypatch, mixed, policy, cpus, blocking):
    from halsim.policies import parse_policy
    from halsim.trace import Trace

    env = _use_fake(monkeypatch)
    monkeypatch.setattr(hcuda, "host_threads", lambda: cpus)
    index = read_index(mixed)
    request = request_from_tensors(SourceInfo(str(mixed), index.file_length, PAGE, True), index.tensors)
    plan = parse_policy(policy).plan(request, env.device.caps)
    assert hcuda.CudaExecution(env.device, plan, None, Trace(), 0)._blocking_wait is blocking
    monkeypatch.setenv("HALSIM_CUDA_WAIT", "spin")
    assert hcuda.CudaExecution(env.device, plan, None, Trace(), 0)._blocking_wait is False
    monkeypatch.setenv("HALSIM_CUDA_WAIT", "block")
    assert hcuda.CudaExecution(env.device, plan, None, Trace(), 0)._blocking_wait is True
    monkeypatch.setenv("HALSIM_CUDA_WAIT", "sleepy")
    with pytest.raises(DeviceError, match="HALSIM_CUDA_WAIT='sleepy' is not one of auto, block, spin"):
        hcuda.CudaExecution(env.device, plan, None, Trace(), 0)


def test_the_count_of_threads_takes_every_devices_copy_threads(monkeypatch, mixed):
    """Two GPUs each with a copy thread per queue share the host's cores with the readers."""
    from halsim.policies import parse_policy

    env = _use_fake(monkeypatch)
    index = read_index(mixed)
    source = SourceInfo(str(mixed), index.file_length, PAGE, True)
    caps = env.device.caps
    one = parse_policy("streaming:chunk=64KiB,slots=8,readers=4,queues=2").plan(request_from_tensors(source, index.tensors), caps)
    two = parse_policy("streaming:chunk=64KiB,slots=8,readers=4,queues=2").plan(
        request_from_tensors(source, index.tensors, devices=2, shard="rows"), [caps, caps])
    assert hcuda._threads_at_once(one, "cuda:0") == 4 + 2 + 1
    assert hcuda._threads_at_once(two, "cuda:0") == 4 + 2 * 2 + 1


@pytest.mark.parametrize("policy, depths", [
    ("streaming:chunk=64KiB,slots=4,queues=2", [1, 1]), ("import:piece=64KiB,queues=2", [4, 4]),
    # the imported part copies on queue 0, the ring on queue 1: only queue 0 queues ahead
    ("hybrid:imported=import(piece=64KiB),streamed=streaming(chunk=64KiB,slots=4,queues=1)", [4, 1]),
])
def test_copies_queued_at_once_follow_the_plan(monkeypatch, mixed, policy, depths):
    from halsim.policies import parse_policy
    from halsim.trace import Trace

    env = _use_fake(monkeypatch)
    index = read_index(mixed)
    request = request_from_tensors(SourceInfo(str(mixed), index.file_length, PAGE, True), index.tensors)
    plan = parse_policy(policy).plan(request, env.device.caps)
    execution = hcuda.CudaExecution(env.device, plan, None, Trace(), 0)
    assert [execution.copy_threads_per_queue(q) for q in range(plan.limits.queues)] == depths
    monkeypatch.setenv("HALSIM_CUDA_COPY_DEPTH", "1")
    execution = hcuda.CudaExecution(env.device, plan, None, Trace(), 0)
    assert [execution.copy_threads_per_queue(q) for q in range(plan.limits.queues)] == [1] * len(depths)
    monkeypatch.setenv("HALSIM_CUDA_COPY_DEPTH", "64")  # no deeper than the engine ever hands a queue
    execution = hcuda.CudaExecution(env.device, plan, None, Trace(), 0)
    assert max(execution.copy_threads_per_queue(q) for q in range(plan.limits.queues)) == \
        plan.limits.copies_per_queue
    monkeypatch.setenv("HALSIM_CUDA_COPY_DEPTH", "deep")
    with pytest.raises(DeviceError, match="HALSIM_CUDA_COPY_DEPTH='deep' is not a positive whole number"):
        hcuda.CudaExecution(env.device, plan, None, Trace(), 0)


@pytest.mark.parametrize("policy", ["import:piece=64KiB,queues=2", "import:piece=64KiB,queues=2,release=at_end",
                                    "hybrid:share=0.5,imported=import(piece=64KiB,release=at_end),"
                                    "streamed=streaming(chunk=64KiB,slots=4,readers=2,queues=2)"])
def test_registration_waits_until_handed_over_copies_are_queued(monkeypatch, mixed, policy):
    """A copy queued while the driver registers waits for it; one queued before runs on.
    Each copy out of imported memory is slow to be queued here (10 ms before its
    cuMemcpyHtoDAsync): a registration that did not wait would see it unqueued."""
    import time

    env = _use_fake(monkeypatch)
    register, copy_imported = hcuda.CudaExecution._register, hcuda.CudaExecution.copy_imported
    seen, copied = [], []

    def checked(self, window, base, length):
        seen.append(set(self._unqueued))
        return register(self, window, base, length)

    def slow_to_queue(self, step, *args):
        time.sleep(0.01)
        copied.append(step.id)
        return copy_imported(self, step, *args)
    monkeypatch.setattr(hcuda.CudaExecution, "_register", checked)
    monkeypatch.setattr(hcuda.CudaExecution, "copy_imported", slow_to_queue)
    before = env.snapshot()
    with halsim.upload(mixed, env.device, policy, verify=True) as done:
        check_buffers(done, read_index(mixed))
    assert len(seen) >= 2 and copied and all(not unqueued for unqueued in seen)
    env.assert_clean(before)


def test_calibrating_pinning_frees_the_pool_when_a_slot_cannot_be_pinned(monkeypatch):
    from types import SimpleNamespace

    from halsim.calibrate import Probe, run_probe

    env = _use_fake(monkeypatch)
    before = env.snapshot()
    env.cu.fail["cuMemHostRegister"] = (1, CUresult.CUDA_ERROR_OUT_OF_MEMORY)
    target = SimpleNamespace(device=env.device, simulated=False)
    with pytest.raises(OutOfMemoryError, match="cannot pin staging slot 1 of 4"):
        run_probe(target, Probe("pin", 64 * 1024, 1, 4))
    env.assert_clean(before)


def test_staging_mode_must_be_known(monkeypatch, mixed):
    env = _use_fake(monkeypatch)
    monkeypatch.setenv("HALSIM_CUDA_STAGING", "hugepages")
    with pytest.raises(DeviceError, match="HALSIM_CUDA_STAGING='hugepages' is not one of pipelined, alloc"):
        halsim.upload(mixed, env.device, "streaming:chunk=64KiB,slots=4")


def test_import_without_read_only_support_uses_plain_flags(monkeypatch, mixed):
    env = _use_fake(monkeypatch, read_only_register=False)
    before = env.snapshot()
    with halsim.upload(mixed, env.device, "import:piece=64KiB", verify=True) as done:
        assert done.plan.policy.kind == "import"
    env.assert_clean(before)


def test_integrated_gpu_uses_host_memory_in_place(monkeypatch, mixed):
    env = _use_fake(monkeypatch, integrated=True)
    caps = env.device.caps
    assert caps.kind == "integrated" and caps.unified_memory and caps.import_in_place
    index = read_index(mixed)
    before = env.snapshot()
    with halsim.upload(mixed, env.device, "auto", verify=True) as done:
        nonempty = [t for t in index.tensors if t.nbytes]
        assert done.plan.policy.kind == "import" and done.plan.count(Op.BIND) == len(nonempty)
        buffers = done.buffers()
        assert not any(buffers[t.name].owned for t in nonempty)
        assert env.cu.used == 0  # no device allocation at all
        check_buffers(done, index)
        assert env.cu.registered  # the windows live as long as the buffers
    env.assert_clean(before)


# =====================================================================================
# GPU only: frameworks see the same memory; the driver agrees nothing is left
# =====================================================================================


@pytest.fixture
def gpu():
    return Env("real", _real_device(), cuda_driver.cu)


def test_torch_shares_memory(gpu, mixed):
    torch = pytest.importorskip("torch")
    torch.empty(16, device="cuda").fill_(1.5)  # torch's own CUDA set-up is not ours to count
    torch.cuda.synchronize()
    index = read_index(mixed)
    before = gpu.snapshot()
    with halsim.upload(mixed, gpu.device, "streaming:chunk=1MiB,slots=4,readers=2") as done:
        tensors, buffers = done.tensors(), done.buffers()
        wanted = {"big": torch.bfloat16, "w_f32": torch.float32, "w_i64": torch.int64, "w_f16": torch.float16,
                  "mask": torch.bool, "bytes": torch.uint8, "tail": torch.int8}
        for name, dtype in wanted.items():
            t = index.by_name(name)
            x = torch.from_dlpack(tensors[name])
            assert x.dtype == dtype and tuple(x.shape) == tuple(t.shape) and x.device == torch.device("cuda", 0)
            assert x.data_ptr() == buffers[name].ptr  # no copy
            assert x.cpu().contiguous().view(torch.uint8).numpy().tobytes() == expected(t)
        # Writes through torch land in halsim's buffer.
        x = torch.from_dlpack(tensors["w_f32"])
        x.fill_(1.5)
        torch.cuda.synchronize()
        assert buffers["w_f32"].to_bytes() == np.full(x.numel(), 1.5, np.float32).tobytes()
        # torch.as_tensor goes through __cuda_array_interface__.
        y = torch.as_tensor(tensors["w_i64"], device="cuda")
        assert y.data_ptr() == buffers["w_i64"].ptr
        del x, y
    gc.collect()
    gpu.assert_clean(before)


def test_cupy_shares_memory(gpu, mixed):
    cupy = pytest.importorskip("cupy")
    cupy.asnumpy(cupy.arange(4))  # cupy's own CUDA set-up is not ours to count
    index = read_index(mixed)
    before = gpu.snapshot()
    with halsim.upload(mixed, gpu.device, "import:piece=1MiB") as done:
        tensors, buffers = done.tensors(), done.buffers()
        for name in ("w_f32", "w_i64", "w_f16", "big", "bytes"):
            t = index.by_name(name)
            array = cupy.asarray(tensors[name])
            assert array.data.ptr == buffers[name].ptr and array.shape == tuple(t.shape)
            assert cupy.asnumpy(array).tobytes() == expected(t)
            via_dlpack = cupy.from_dlpack(tensors[name]) if name != "big" else array
            assert via_dlpack.data.ptr == buffers[name].ptr
            del array, via_dlpack
    gc.collect()
    gpu.assert_clean(before)


def test_direct_path_reports_how_it_ran(gpu, mixed):
    """Says whether cuFile ran here; either way the bytes are right."""
    with halsim.upload(mixed, gpu.device, "direct:chunk=1MiB", verify=True) as done:
        print(f"cuFile: {gpu.device.direct_storage} ({gpu.device.direct_detail}); ran {done.plan.policy.spec()}; "
              f"notes {done.plan.notes}")
        assert (done.plan.policy.kind == "direct") == gpu.device.direct_storage


def test_host_registry_registers_in_parallel_without_double_registration():
    """Several importers pin pages at once; no page is ever registered twice."""
    import random
    import threading
    import time as _time

    from halsim.backends import cuda as hcuda

    registry = hcuda.HostRegistry()
    page = 4096
    pinned: dict[int, int] = {}
    lock = threading.Lock()
    concurrent = [0, 0]  # now, most

    def register(base, length):
        with lock:
            for p in range(base, base + length, page):
                assert p not in pinned, "page registered twice"
                pinned[p] = 1
            concurrent[0] += 1
            concurrent[1] = max(concurrent[1], concurrent[0])
        _time.sleep(0.002)
        with lock:
            concurrent[0] -= 1

    def unregister(base, length):
        with lock:
            for p in range(base, base + length, page):
                assert pinned.pop(p, None) == 1, "unregistered a page that was not registered"

    def worker(seed):
        rng = random.Random(seed)
        for _ in range(30):
            start = rng.randrange(0, 64) * page
            end = start + rng.randrange(1, 16) * page
            held = registry.acquire(start, end, register, unregister)
            covered = sorted(held)
            assert covered[0][0] <= start and covered[-1][1] >= end
            registry.release(held, unregister)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert registry.ranges() == {} and pinned == {}
    assert concurrent[1] >= 2, "registrations never overlapped"


def test_calibration_runs_every_probe_on_the_backend_and_leaves_nothing(env, tmp_path):
    # Every microbenchmark through CudaExecution (import, fault, register_in_upload,
    # pin, copies, reads, cold reads), then the fit: what `halsim calibrate --device cuda:0` does.
    from halsim.calibrate import Config, calibrate

    tiny = Config(scratch=4 * MiB, copy_chunks=(64 * 1024, MiB), read_sizes=(64 * 1024, MiB),
                  cold_sizes=(MiB,), threads=(1, 2), thread_chunk=512 * 1024, memcpy_bytes=2 * MiB,
                  pin_slots=(1, 2), pin_bytes=(MiB,), import_pieces=(MiB,), run_bytes=2 * MiB,
                  max_steps=8, repeats=1)
    before = env.snapshot()
    result = calibrate(env.device, tiny, scratch_dir=tmp_path)
    benches = {m.probe.bench for m in result.measurements.points}
    assert {"h2d", "d2h", "read", "stream", "pin", "import", "fault", "register_in_upload"} <= benches
    factor = result.parameter("host.register_upload_factor")
    assert factor.measured and factor.value > 0
    assert result.platform.host.register_upload_factor == pytest.approx(factor.value, rel=1e-3)
    assert not list(tmp_path.iterdir()), "the scratch file stayed behind"
    env.assert_clean(before)
