"""Did the machine hold still? The calibration's key probes again, after a comparison.

A calibrated prediction can only be as good as the machine is steady between
calibration and the real runs. :func:`recheck` measures a subset of the
calibration's probes again (one size of each kind, every thread count) and
:func:`drift` says how far each moved: a comparison's error next to the
machine's own drift tells model error from a machine that changed.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from halsim.calibrate import Config, Measurements, ProgressFn, measure, target_for

if TYPE_CHECKING:
    from halsim.device import Device

# The one size each kind of probe is measured at again.
RECHECK_SIZE = 16 << 20


@dataclass(frozen=True)
class Moved:
    probe: str  # the probe's label
    before: float  # its headline value (seconds) at calibration
    after: float  # ... when measured again

    @property
    def change(self) -> float:
        """(after - before) / before: +10% means it now takes 10% longer."""
        return (self.after - self.before) / self.before if self.before else 0.0


def recheck_config(config: Config) -> Config:
    """``config`` with one size per kind of probe: the same probes, far fewer of them."""
    def one(sizes: tuple[int, ...]) -> tuple[int, ...]:
        return (min(sizes, key=lambda s: abs(s - RECHECK_SIZE)),) if sizes else sizes

    return dataclasses.replace(config, copy_chunks=one(config.copy_chunks), read_sizes=one(config.read_sizes),
                               cold_sizes=one(config.cold_sizes), pin_slots=config.pin_slots[:1],
                               pin_bytes=one(config.pin_bytes), import_pieces=config.import_pieces[-1:],
                               repeats=min(config.repeats, 3))


def drift(before: Measurements, after: Measurements) -> list[Moved]:
    """Each probe measured both times, with its two medians (in the order measured)."""
    earlier = {m.probe: m for m in before.points}
    return [Moved(m.probe.label, earlier[m.probe].value(), m.value())
            for m in after.points if m.probe in earlier and earlier[m.probe].value() > 0]


def median_change(moved: list[Moved]) -> float:
    """The median |change| over the probes: how far the machine moved, as one number."""
    return statistics.median(abs(m.change) for m in moved) if moved else 0.0


def recheck(device: "str | Device", before: Measurements, *, scratch_dir: "str | os.PathLike | None" = None,
            progress: ProgressFn | None = None) -> list[Moved]:
    """Measure ``device`` again on a subset of ``before``'s probes; how far each moved."""
    after = measure(target_for(device, scratch_dir), recheck_config(before.config), progress)
    return drift(before, after)


__all__ = ["Moved", "recheck_config", "drift", "median_change", "recheck", "RECHECK_SIZE"]
