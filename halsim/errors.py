"""halsim's exception types.

Every error a user can cause derives from :class:`HalsimError`, so a runtime can
catch one type. Messages name the file (or device) and the problem.
"""

from __future__ import annotations

import os


class HalsimError(Exception):
    """Base class of every error halsim raises on purpose."""


class FormatError(HalsimError, ValueError):
    """A model file is malformed or is not what its name says.

    ``str(err)`` is ``"<path>: <problem>"``.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class FileAccessError(HalsimError, OSError):
    """A read or write outside a file's bounds, or not allowed by its access mode."""

    def __init__(self, name: str, problem: str):
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")


class PolicyError(HalsimError, ValueError):
    """A policy spec or policy file is invalid, or a policy cannot plan a request."""


class PlatformError(HalsimError, ValueError):
    """A platform description is invalid or unknown."""


class DeviceError(HalsimError, RuntimeError):
    """A device operation failed. ``step`` says which step of the plan, if any."""

    def __init__(self, message: str, *, device: str = "", step: str = ""):
        self.device = device
        self.step = step
        where = " ".join(p for p in (device and f"[{device}]", step and f"during {step}") if p)
        super().__init__(f"{message} {where}".strip())


class OutOfMemoryError(DeviceError):
    """An allocation exceeded device, staging or host memory."""


class ImportRefusedError(DeviceError):
    """The device cannot import this host memory (alignment, driver refusal)."""


class DeviceUnavailableError(HalsimError, RuntimeError):
    """A backend cannot run here (no driver, no GPU, missing extra)."""


class UploadCancelled(HalsimError):
    """The upload was cancelled; everything it allocated has been released."""


class UploadFailed(HalsimError):
    """An upload or download stopped on an error; ``__cause__`` holds the original."""
