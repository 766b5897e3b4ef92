"""halsim: decide how model weights move from a file into GPU memory.

Describe an upload policy once, simulate it on a model of your hardware,
property-test it, then run the same policy object on a real device.
"""

from halsim.api import Upload, simulate, upload
from halsim.caps import DeviceCaps
from halsim.choose import choose  # the function shadows the module name; import from halsim.choose still works
from halsim.engine import CancelToken, Engine
from halsim.errors import (
    DeviceError,
    DeviceUnavailableError,
    FileAccessError,
    FormatError,
    HalsimError,
    OutOfMemoryError,
    PolicyError,
    UploadCancelled,
    UploadFailed,
)
from halsim.files import FdFile, MappedFile, MemoryFile, open_file
from halsim.plan import Op, Plan, Step
from halsim.policies import (
    AutoPolicy,
    DirectPolicy,
    ImportPolicy,
    StagedPolicy,
    StreamingPolicy,
    load_policy,
    parse_policy,
)
from halsim.registry import backends, get_device
from halsim.report import Report
from halsim.request import BufferSpec, Direction, SourceInfo, Transfer, UploadRequest, request_from_tensors

__version__ = "0.1.0"

__all__ = [
    "upload", "simulate", "choose", "Upload", "Report", "Engine", "CancelToken", "DeviceCaps",
    "parse_policy", "load_policy", "StagedPolicy", "StreamingPolicy", "ImportPolicy", "DirectPolicy",
    "AutoPolicy", "Plan", "Step", "Op", "open_file", "MemoryFile", "MappedFile", "FdFile",
    "UploadRequest", "SourceInfo", "BufferSpec", "Transfer", "Direction", "request_from_tensors",
    "get_device", "backends", "HalsimError", "FormatError", "FileAccessError", "PolicyError",
    "DeviceError", "OutOfMemoryError", "DeviceUnavailableError", "UploadCancelled", "UploadFailed",
]
