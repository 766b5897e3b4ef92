"""cuFile (GPUDirect Storage, or its compatibility mode) for the ``direct`` path.

``cufile.driver_open()`` was seen to hang on a machine without the driver, so
it is never called in this process before a subprocess has shown, within a
timeout, that it returns and that a small read into device memory works. The
probe's answer is cached for the process and passed to child processes in the
environment (``HALSIM_CUFILE_PROBE``). ``HALSIM_CUDA_DIRECT=0`` turns the
direct path off without probing.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import threading

from halsim.errors import DeviceError, FileAccessError

PROBE_TIMEOUT_S = 30.0
_ENV_RESULT = "HALSIM_CUFILE_PROBE"
_ENV_SWITCH = "HALSIM_CUDA_DIRECT"

_lock = threading.Lock()
_probed: dict[int, tuple[bool, str]] = {}
_driver_open = False
COMPAT = "compatibility mode"  # how a probe's detail starts when cuFile works only with compat mode allowed

_PROBE = r"""
import os, sys
from cuda.bindings import driver as cu
from cuda.bindings import cufile
def ok(r, what):
    if int(r[0]) != 0:
        print(f"{what} failed: {r[0].name}"); sys.exit(3)
    return r[1] if len(r) > 1 else None
ok(cu.cuInit(0), "cuInit")
dev = ok(cu.cuDeviceGet(int(sys.argv[1])), "cuDeviceGet")
ctx = ok(cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
ok(cu.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
if sys.argv[3] == "compat":
    cufile.set_parameter_bool(cufile.BoolConfigParameter.PROPERTIES_ALLOW_COMPAT_MODE, True)
cufile.driver_open()
path = os.path.join(sys.argv[2], "halsim-cufile-probe.bin")
n = (1 << 20) + 4099
data = bytes((i * 7 + 3 + i // 251) & 0xFF for i in range(n))
with open(path, "wb") as f:
    f.write(data)
import numpy as np
buf = ok(cu.cuMemAlloc(n), "cuMemAlloc")
back = np.zeros(n, np.uint8)
works, problems = None, []
# As CuFileSource does: O_DIRECT first, then the buffered descriptor.
for flags, mode in ((os.O_RDONLY | getattr(os, "O_DIRECT", 0), "O_DIRECT"), (os.O_RDONLY, "buffered")):
    try:
        fd = os.open(path, flags)
    except OSError as err:
        problems.append(f"{mode}: {err.strerror}")
        continue
    fh = None
    try:
        descr = cufile.Descr()
        descr.type = cufile.FileHandleType.OPAQUE_FD
        descr.handle.fd = fd
        descr.fs_ops = 0
        fh = cufile.handle_register(descr.ptr)
        # An aligned read, then one at an odd offset into an odd place, as tensors are.
        for length, at, into in ((1 << 20, 0, 0), (777777, 4097, 3)):
            got = cufile.read(fh, int(buf), length, at, into)
            ok(cu.cuMemcpyDtoH(back.ctypes.data, buf, n), "cuMemcpyDtoH")
            if got != length or back[into : into + length].tobytes() != data[at : at + length]:
                raise RuntimeError(f"cuFileRead of {length} bytes at {at} returned {got}"
                                   f"{'' if got != length else ' with the wrong bytes'}")
        works = mode
    except Exception as err:
        problems.append(f"{mode}: {err}")
    finally:
        if fh is not None:
            cufile.handle_deregister(fh)
        os.close(fd)
    if works:
        break
cu.cuMemFree(buf)
os.unlink(path)
if not works:
    print("; ".join(problems)); sys.exit(4)
cufile.driver_close()
print(f"ok {'compatibility mode, ' if sys.argv[3] == 'compat' else ''}{works}")
"""


def probe(device_index: int) -> tuple[bool, str]:
    """(works, detail): can cuFile read a file into this device's memory here?"""
    switch = os.environ.get(_ENV_SWITCH, "").strip().lower()
    if switch in ("0", "off", "no", "false"):
        return False, f"cuFile disabled by {_ENV_SWITCH}={switch}"
    with _lock:
        if device_index in _probed:
            return _probed[device_index]
        cached = _from_env(device_index)
        result = cached if cached is not None else _run_probe(device_index)
        _probed[device_index] = result
        _to_env(device_index, result)
        return result


def _from_env(device_index: int) -> tuple[bool, str] | None:
    for item in os.environ.get(_ENV_RESULT, "").split(";"):
        index, _, rest = item.partition("=")
        if index.strip() == str(device_index) and rest:
            status, _, detail = rest.partition(":")
            return status == "1", detail
    return None


def _to_env(device_index: int, result: tuple[bool, str]) -> None:
    items = [i for i in os.environ.get(_ENV_RESULT, "").split(";") if i and not i.startswith(f"{device_index}=")]
    detail = result[1].replace(";", ",").replace("\n", " ")
    items.append(f"{device_index}={'1' if result[0] else '0'}:{detail}")
    os.environ[_ENV_RESULT] = ";".join(items)


def _run_probe(device_index: int) -> tuple[bool, str]:
    try:
        import cuda.bindings.cufile  # noqa: F401  (cheap: does not open the driver)
    except Exception as err:
        return False, f"cuda.bindings.cufile unavailable: {err}"
    # As configured (GPUDirect Storage where the system has it), then with
    # cuFile's compatibility mode allowed (it reads through the host for us).
    first = _probe_once(device_index, "default")
    if first[0] or "did not finish" in first[1]:
        return first
    second = _probe_once(device_index, "compat")
    if second[0]:
        return second
    return False, f"{first[1]}; with compatibility mode allowed: {second[1].removeprefix('cuFile probe failed: ')}"


def _probe_once(device_index: int, mode: str) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory(prefix="halsim-cufile-") as folder:
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE, str(device_index), folder, mode],
                                  capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return False, f"cuFile probe did not finish in {PROBE_TIMEOUT_S:.0f} s (cuFileDriverOpen hangs here)"
        except OSError as err:
            return False, f"cannot run the cuFile probe: {err}"
    lines = [line for line in (done.stdout + "\n" + done.stderr).splitlines() if line.strip()]
    if done.returncode == 0 and lines and lines[-1].startswith("ok"):
        return True, lines[-1][3:].strip()
    last = lines[-1] if lines else f"exit status {done.returncode}"
    return False, f"cuFile probe failed: {last[:300]}"


def open_driver() -> None:
    """``cuFileDriverOpen`` once per process (only after a successful probe), with
    compatibility mode allowed where the probe needed it."""
    global _driver_open
    from cuda.bindings import cufile

    with _lock:
        if not _driver_open:
            if any(ok and detail.startswith(COMPAT) for ok, detail in _probed.values()):
                cufile.set_parameter_bool(cufile.BoolConfigParameter.PROPERTIES_ALLOW_COMPAT_MODE, True)
            cufile.driver_open()
            _driver_open = True
            atexit.register(_close_driver)


def _close_driver() -> None:
    global _driver_open
    try:
        from cuda.bindings import cufile

        if _driver_open:
            cufile.driver_close()
    except Exception:  # pragma: no cover - shutdown
        pass
    _driver_open = False


class CuFileSource:
    """One file registered with cuFile; ``read`` puts file bytes into device memory.

    The file is opened with O_DIRECT first (what GPUDirect Storage needs: the
    page cache is bypassed); if cuFile will not take that descriptor, or a read
    through it fails (compatibility mode and unaligned ranges), the file's own
    buffered descriptor is used instead. ``HALSIM_CUFILE_BUFFERED=1`` starts
    with the buffered descriptor (reads then come from the page cache).
    """

    def __init__(self, path: str, fallback_fd: int | None, label: str, cufile=None):
        if cufile is None:
            from cuda.bindings import cufile

        self._cufile = cufile
        self.path = path
        self.label = label
        self._fallback_fd = fallback_fd
        self._own_fd = -1
        self._lock = threading.Lock()
        self._retired: list[tuple[object, int]] = []  # replaced handles: readers may still use them
        self.handle = None
        self.mode = ""
        modes = ["O_DIRECT", "buffered"] if getattr(os, "O_DIRECT", 0) else ["buffered"]
        if os.environ.get("HALSIM_CUFILE_BUFFERED", "").strip() in ("1", "yes", "true", "on"):
            modes.reverse()
        errors = []
        for mode in modes:
            problem = self._register(mode)
            if problem is None:
                return
            errors.append(problem)
        raise DeviceError(f"cuFile cannot read {path}: cuFileHandleRegister failed ({'; '.join(errors)})", device=label)

    def _register(self, mode: str) -> str | None:
        """Register the file opened in ``mode``; None on success, else why not."""
        cufile = self._cufile
        if mode == "O_DIRECT":
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECT | getattr(os, "O_CLOEXEC", 0))
            except OSError as err:
                return f"O_DIRECT: {err.strerror}"
        elif self._fallback_fd is None:
            return "buffered: no file descriptor"
        else:
            fd = self._fallback_fd
        descr = cufile.Descr()
        descr.type = cufile.FileHandleType.OPAQUE_FD
        descr.handle.fd = fd
        descr.fs_ops = 0
        try:
            handle = cufile.handle_register(descr.ptr)
        except Exception as err:
            if mode == "O_DIRECT":
                os.close(fd)
            return f"{mode}: {err}"
        self.handle, self.mode = handle, mode
        self._own_fd = fd if mode == "O_DIRECT" else -1
        return None

    def _read_once(self, handle, device_ptr: int, length: int, file_offset: int, buffer_offset: int) -> None:
        done = 0
        while done < length:
            got = self._cufile.read(handle, device_ptr, length - done, file_offset + done, buffer_offset + done)
            if got < 0:
                raise OSError(f"cuFileRead returned {got}")
            if got == 0:  # end of file inside the range: the file shrank under us
                raise FileAccessError(self.path, f"short read at offset {file_offset + done}: the file ended early "
                                                 "(was it truncated while in use?)")
            done += got

    def read(self, device_ptr: int, length: int, file_offset: int, buffer_offset: int, step: str = "") -> None:
        handle, mode = self.handle, self.mode
        try:
            self._read_once(handle, device_ptr, length, file_offset, buffer_offset)
            return
        except FileAccessError:
            raise
        except Exception as err:
            first = err
        # O_DIRECT refused this range (alignment, compatibility mode): go buffered, once, for every reader.
        with self._lock:
            if self.mode == mode and mode == "O_DIRECT" and self._fallback_fd is not None:
                old = (self.handle, self._own_fd)
                if self._register("buffered") is None:
                    self._retired.append(old)
        if self.mode == mode:
            raise DeviceError(f"cuFileRead of {self.path} ({mode}) failed: {first}", device=self.label, step=step)
        try:
            self._read_once(self.handle, device_ptr, length, file_offset, buffer_offset)
        except FileAccessError:
            raise
        except Exception as err:
            raise DeviceError(f"cuFileRead of {self.path} failed: O_DIRECT: {first}; {self.mode}: {err}",
                              device=self.label, step=step) from None

    def _retire(self, handle, fd: int) -> None:
        try:
            self._cufile.handle_deregister(handle)
        finally:
            if fd >= 0:
                os.close(fd)

    def close(self) -> None:
        with self._lock:
            held = self._retired + ([(self.handle, self._own_fd)] if self.handle is not None else [])
            self._retired, self.handle, self._own_fd = [], None, -1
        for handle, fd in held:
            self._retire(handle, fd)
