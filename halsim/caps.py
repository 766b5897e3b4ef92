"""Device capabilities: everything a policy may know about a device, as data.

Like Qiskit's ``Target``: plans are computed from caps alone, so the same
policy gives the same plan on every device with the same caps.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from halsim.units import parse_size


class DeviceCaps(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["dedicated", "integrated", "cpu"] = "dedicated"
    # Device memory is host memory: imported host bytes are used in place, no copy.
    unified_memory: bool = False
    can_import_host: bool = True
    import_alignment: int = Field(4096, ge=1)
    direct_storage: bool = False
    copy_queues: int = Field(1, ge=1)
    memory_bytes: int = Field(1 << 40, ge=0)
    max_allocation: int = Field(1 << 40, ge=1)
    # CPU threads of the host that drives the device (reader threads share them); None: unknown.
    host_threads: int | None = Field(None, ge=1)

    @field_validator("import_alignment", "memory_bytes", "max_allocation", mode="before")
    @classmethod
    def _sizes(cls, value):
        return parse_size(value)

    @property
    def import_in_place(self) -> bool:
        return self.unified_memory and self.can_import_host

    def describe(self) -> str:
        parts = [self.kind]
        if self.unified_memory:
            parts.append("unified memory")
        parts.append(f"import {'yes, align ' + str(self.import_alignment) if self.can_import_host else 'no'}")
        parts.append(f"direct storage {'yes' if self.direct_storage else 'no'}")
        parts.append(f"{self.copy_queues} copy queue(s)")
        if self.host_threads:
            parts.append(f"{self.host_threads} host threads")
        return ", ".join(parts)
