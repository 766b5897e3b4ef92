"""The devices the conformance suite runs on — the one list to extend.

Adding a backend means adding its device name to :data:`DEVICES`. A device
that cannot run here (no driver, no GPU, module not there) makes its tests
skip with the reason the registry gives; it never fakes success.
"""

from __future__ import annotations

import functools
import os

import pytest

from halsim.caps import DeviceCaps
from halsim.device import Device
from halsim.errors import DeviceUnavailableError

# Platforms the simulator runs in the suite: one of each kind of machine.
SIM_PLATFORMS = ["h100-pcie5", "igpu-unified", "dgx-h100"]
if os.environ.get("HALSIM_CONFORMANCE_ALL_PLATFORMS"):
    try:
        from halsim.platform import list_platforms

        SIM_PLATFORMS = list_platforms()
    except Exception:  # the catalogue is not there: keep the short list
        pass

DEVICES: list[str] = ["cpu", *(f"sim:{p}" for p in SIM_PLATFORMS), "cuda:0", "vulkan:0"]


@functools.lru_cache(maxsize=None)
def unavailable(spec: str) -> str | None:
    """Why ``spec`` cannot run here, or None when it can."""
    backend = spec.partition(":")[0]
    if backend == "sim":
        try:
            import halsim.sim  # noqa: F401
        except ImportError as err:
            return f"the simulator is not installed ({err})"
        try:
            make(spec)
        except Exception as err:  # an unknown platform, a broken catalogue
            return f"{spec}: {err}"
        return None
    try:
        device = make(spec)
    except DeviceUnavailableError as err:  # the registry's reason: no driver, no GPU, no extra
        return str(err)
    return None


def require(spec: str) -> None:
    reason = unavailable(spec)
    if reason:
        pytest.skip(reason)


_REAL: dict[str, Device] = {}


def make(spec: str) -> Device:
    """A device for one test case. Simulated devices are fresh each time (a new
    simulated machine); real ones are opened once and shared."""
    if spec.startswith("sim:"):
        from halsim.registry import get_device

        return get_device(spec)
    if spec not in _REAL:
        from halsim.registry import get_device

        _REAL[spec] = get_device(spec)
    return _REAL[spec]


def make_many(spec: str, n: int) -> list[Device]:
    """``n`` devices for one multi-device run: distinct GPUs of one simulated
    machine where it has them, else the same device serving several indices."""
    if spec.startswith("sim:"):
        from halsim.sim import Simulator

        platform = spec.split(":")[1]
        simulator = Simulator(platform)
        gpus = len(simulator.platform.gpus)
        return [simulator.device(i % gpus) for i in range(n)]
    device = make(spec)
    return [device] * n


def is_sim(spec: str) -> bool:
    return spec.startswith("sim:")


def cpu_with_caps(caps: DeviceCaps):
    """The CPU device pretending to have ``caps``: it really moves bytes for every
    kind of plan (in place, dedicated imports, direct, no import...)."""
    from halsim.backends.cpu import CpuDevice

    device = CpuDevice(name="cpu")
    device.caps = caps
    return device
