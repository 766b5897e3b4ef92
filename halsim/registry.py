"""Devices by name: ``cpu``, ``cuda:0``, ``vulkan:0``, ``sim:h100-pcie5``.

Backends import lazily, so a missing extra or driver only matters when that
backend is asked for; ``backends()`` says which are available and why not.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from halsim.caps import DeviceCaps
from halsim.device import Device
from halsim.errors import DeviceUnavailableError

# backend name -> (module, extra that provides it)
BACKENDS = {
    "cpu": ("halsim.backends.cpu", None),
    "cuda": ("halsim.backends.cuda", "cuda"),
    "vulkan": ("halsim.backends.vulkan", "vulkan"),
}


@dataclass
class BackendStatus:
    name: str
    available: bool
    reason: str  # why not, when unavailable
    devices: list[tuple[str, DeviceCaps]]


def _module(backend: str):
    module_name, extra = BACKENDS[backend]
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        hint = f" (install halsim[{extra}])" if extra else ""
        raise DeviceUnavailableError(f"{backend}: unavailable ({err}){hint}") from None


def get_device(spec: str) -> Device:
    """A device from its name: ``cpu``, ``cuda:N``, ``vulkan:N`` or ``sim:PLATFORM[:GPU]``."""
    spec = spec.strip()
    backend, _, rest = spec.partition(":")
    if backend == "sim":
        from halsim.sim import Simulator

        platform, _, gpu = rest.partition(":")
        if not platform:
            raise DeviceUnavailableError("sim: name a platform, e.g. sim:h100-pcie5")
        return Simulator(platform).device(int(gpu or 0))
    if backend not in BACKENDS:
        raise DeviceUnavailableError(
            f"unknown device {spec!r}; use cpu, cuda:N, vulkan:N or sim:PLATFORM"
        )
    module = _module(backend)
    index = int(rest) if rest else 0
    return module.open_device(index)


def get_devices(specs) -> list[Device]:
    """Several devices; ``sim:`` devices of one platform share one Simulator, so
    sharded GPUs contend for host memory and storage as on the real machine."""
    simulators: dict[str, object] = {}
    devices = []
    for spec in specs:
        if not isinstance(spec, str):
            devices.append(spec)
            continue
        backend, _, rest = spec.strip().partition(":")
        if backend == "sim" and rest:
            from halsim.sim import Simulator

            platform, _, gpu = rest.partition(":")
            if platform not in simulators:
                simulators[platform] = Simulator(platform)
            devices.append(simulators[platform].device(int(gpu or 0)))
        else:
            devices.append(get_device(spec))
    return devices


def backends() -> list[BackendStatus]:
    """Every backend, whether it can run here, and its devices' caps."""
    statuses = []
    for backend in BACKENDS:
        try:
            module = _module(backend)
            devices = module.enumerate_devices()
            statuses.append(BackendStatus(backend, True, "", devices))
        except DeviceUnavailableError as err:
            reason = str(err).split("unavailable", 1)[-1].strip(" ()") if "unavailable" in str(err) else str(err)
            statuses.append(BackendStatus(backend, False, reason, []))
    return statuses
