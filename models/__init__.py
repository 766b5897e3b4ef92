"""halsim's catalogue: named platforms and workloads, as data files.

Installed as ``halsim.models``. Schemas live in ``halsim/`` (``halsim.platform``
reads ``platforms/*.toml``); this package only holds the instances, so a new
machine is one TOML file and no code.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def catalogue(kind: str) -> list[str]:
    """Names of the entries of one part of the catalogue (``"platforms"``, ...)."""
    folder = HERE / kind
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []
