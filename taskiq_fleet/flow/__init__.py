"""The Taskiq-Flow API of the documents, run on the fleet (or in process, for tests)."""

from taskiq_fleet.flow.dataflow import DataflowPipeline, MapReduce, PipelineError
from taskiq_fleet.flow.engine import (
    DAG,
    DAGBuilder,
    DataflowRegistry,
    ExecutionEngine,
    Registration,
)
from taskiq_fleet.flow.middleware import PipelineMiddleware, StepContext
from taskiq_fleet.flow.sequential import Pipeline, PipelineResult, PipelineTask, Task
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
