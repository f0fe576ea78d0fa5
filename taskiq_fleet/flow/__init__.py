"""The Taskiq-Flow API of the documents, run on the fleet (or in process, for tests)."""

from taskiq_fleet.flow.dataflow import DataflowPipeline, MapReduce
from taskiq_fleet.flow.engine import (
    DAG,
    DAGBuilder,
    DataflowRegistry,
    ExecutionEngine,
    Registration,
)
from taskiq_fleet.flow.errors import (
    PipelineError,
    PipelineErrorAggregator,
    PipelineTimeoutError,
    StepFailure,
)
from taskiq_fleet.flow.middleware import PipelineMiddleware, StepContext
from taskiq_fleet.flow.sequential import (
    Pipeline,
    PipelineResult,
    PipelineTask,
    SequentialPipeline,
    Task,
)
from taskiq_fleet.flow.storage import NatsPipelineStorage
from taskiq_fleet.flow.tracking import (
    PipelineScope,
    PipelineStatus,
    PipelineTrackingManager,
    StepStatus,
    Tracker,
    TrackingStatus,
)

__all__ = [
    "DAG",
    "DAGBuilder",
    "DataflowPipeline",
    "DataflowRegistry",
    "ExecutionEngine",
    "MapReduce",
    "NatsPipelineStorage",
    "Pipeline",
    "PipelineError",
    "PipelineErrorAggregator",
    "PipelineMiddleware",
    "PipelineResult",
    "PipelineScope",
    "PipelineStatus",
    "PipelineTask",
    "PipelineTimeoutError",
    "PipelineTrackingManager",
    "Registration",
    "SequentialPipeline",
    "StepContext",
    "StepFailure",
    "StepStatus",
    "Task",
    "Tracker",
    "TrackingStatus",
]
