"""The Taskiq-Flow API of the documents, run on the fleet (or in process, for tests)."""

from coordinator.flow.dataflow import DataflowPipeline, MapReduce, PipelineError
from coordinator.flow.engine import (
    DAG,
    DAGBuilder,
    DataflowRegistry,
    ExecutionEngine,
    Registration,
)
from coordinator.flow.middleware import PipelineMiddleware, StepContext
from coordinator.flow.sequential import Pipeline, PipelineResult, PipelineTask, Task
from coordinator.flow.tracking import (
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
    "Pipeline",
    "PipelineError",
    "PipelineMiddleware",
    "PipelineResult",
    "PipelineScope",
    "PipelineStatus",
    "PipelineTask",
    "PipelineTrackingManager",
    "Registration",
    "StepContext",
    "StepStatus",
    "Task",
    "Tracker",
    "TrackingStatus",
]
