"""The summary of one run, simulated or real, and its exports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from halsim.plan import Op, Plan
from halsim.trace import IMPORTED, STAGING, Trace
from halsim.units import format_rate, format_size


@dataclass
class Report:
    policy: str  # the policy that ran (after fallback or auto's choice)
    requested: str  # the policy asked for
    device: str
    mode: str
    simulated: bool
    seconds: float
    bytes: int  # tensor bytes moved
    gb_per_s: float
    peak_staging_bytes: int
    peak_device_bytes: int
    peak_imported_bytes: int
    copies: int
    imported_bytes: int  # tensor bytes served from imported host memory
    steps: int
    direction: str
    source: str
    notes: list[str] = field(default_factory=list)
    trace: Trace | None = field(default=None, repr=False, compare=False)
    plan: Plan | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_run(cls, plan: Plan, trace: Trace, seconds: float, device: str, mode: str, simulated: bool) -> "Report":
        moved = plan.request.total_bytes
        return cls(
            policy=plan.policy.spec(),
            requested=plan.requested.spec(),
            device=device,
            mode=mode,
            simulated=simulated,
            seconds=seconds,
            bytes=moved,
            gb_per_s=(moved / seconds / 1e9) if seconds > 0 else float("inf") if moved else 0.0,
            peak_staging_bytes=trace.peak(STAGING),
            peak_device_bytes=trace.peak_total("device"),
            peak_imported_bytes=trace.peak(IMPORTED),
            copies=plan.count(Op.COPY, Op.COPY_BACK, Op.COPY_IMPORTED),
            imported_bytes=sum(s.length for s in plan.steps if s.op in (Op.BIND, Op.COPY_IMPORTED)),
            steps=len(plan.steps),
            direction=plan.request.direction.value,
            source=plan.request.source.name,
            notes=list(plan.notes),
            trace=trace,
            plan=plan,
        )

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("trace", "plan")}
        data["notes"] = list(self.notes)
        if data["gb_per_s"] == float("inf"):
            data["gb_per_s"] = None
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        body = self.to_dict()
        if self.trace is not None:
            body["trace"] = {
                "spans": [s._asdict() for s in self.trace.spans],
                "counters": self.trace.counters,
                "meta": self.trace.meta,
            }
        path.write_text(json.dumps(body, indent=1, default=str))
        return path

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("policy", self.policy),
            ("device", self.device + (" (simulated)" if self.simulated else "")),
            ("seconds", f"{self.seconds:.4f}"),
            ("bytes", format_size(self.bytes)),
            ("throughput", format_rate(self.bytes / self.seconds) if self.seconds > 0 else "-"),
            ("peak staging", format_size(self.peak_staging_bytes)),
            ("peak device", format_size(self.peak_device_bytes)),
            ("copies", str(self.copies)),
            ("imported", format_size(self.imported_bytes)),
        ]

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """PNG: timeline of every lane above, memory over time below."""
        from halsim.plotting import plot_trace

        return plot_trace(self.trace, path, title=title or f"{self.policy} on {self.device}")

    def to_perfetto(self, path: str | Path) -> Path:
        """Chrome trace-event JSON (opens in Perfetto / chrome://tracing)."""
        from halsim.perfetto import write_perfetto

        return write_perfetto({f"{self.device} {self.policy}": self.trace}, path)

    def explain(self) -> str:
        """Which resource bounded the run, and for what share of the time."""
        from halsim.explain import explain_trace

        return explain_trace(self.trace, self.plan)
