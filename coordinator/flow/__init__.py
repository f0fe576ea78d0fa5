"""The Taskiq-Flow API of the documents, run on the fleet (or in process, for tests)."""

from coordinator.flow.dataflow import DataflowPipeline, MapReduce, PipelineError
from coordinator.flow.sequential import Pipeline, PipelineResult, PipelineTask

__all__ = [
    "DataflowPipeline",
    "MapReduce",
    "Pipeline",
    "PipelineError",
    "PipelineResult",
    "PipelineTask",
]
