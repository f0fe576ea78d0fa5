"""What every side of taskiq-fleet imports: the resource model, profiles, wire formats."""

from shared.labels import LabelSelector, PreferredLabel, parse_selector
from shared.profiles import (
    CPUProfile,
    GPUProfile,
    LabelProfile,
    RAMProfile,
    ResourceLabelsMiddleware,
    ResourceProfile,
    TaskResourceProfile,
    request_of,
)
from shared.resources import GPUDevice, ResourceRequest, WorkerSpec
from shared.version import __version__

__all__ = [
    "CPUProfile",
    "GPUDevice",
    "GPUProfile",
    "LabelProfile",
    "LabelSelector",
    "PreferredLabel",
    "RAMProfile",
    "ResourceLabelsMiddleware",
    "ResourceProfile",
    "ResourceRequest",
    "TaskResourceProfile",
    "WorkerSpec",
    "__version__",
    "parse_selector",
    "request_of",
]
