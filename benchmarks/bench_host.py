"""Shared by the GPU benchmarks: the facts about the machine each result file records.

Imported as ``bench_host`` by scripts run as ``python benchmarks/NAME.py``
(their folder is first on ``sys.path``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from typing import Any


def host_facts(cuda: bool = False) -> dict[str, Any]:
    """When and where: date, host, kernel, CPUs, Python, memory; with ``cuda``, the driver's version
    (or why it could not be had)."""
    info: dict[str, Any] = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                            "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
                            "python": sys.version.split()[0]}
    if cuda:
        try:
            from halsim.backends.cuda_driver import check, cu

            info["driver_version"] = check(cu.cuDriverGetVersion(), "cuDriverGetVersion")
        except Exception as err:
            info["driver_version"] = str(err)
    try:
        with open("/proc/meminfo") as f:
            info["mem_total"] = f.readline().split(":", 1)[1].strip()
    except OSError:
        pass
    return info
