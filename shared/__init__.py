"""What every side of taskiq-fleet imports: the resource model, profiles, wire formats."""

from shared.labels import LabelSelector, PreferredLabel, parse_selector
from shared.resources import GPUDevice, ResourceRequest, WorkerSpec
from shared.version import __version__

__all__ = [
    "GPUDevice",
    "LabelSelector",
    "PreferredLabel",
    "ResourceRequest",
    "WorkerSpec",
    "__version__",
    "parse_selector",
]
