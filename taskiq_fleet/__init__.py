"""taskiq-fleet: resource-aware scheduling of taskiq tasks across many hosts.

The one package users import, as taskiq's own ``__init__`` is: the broker, the client,
the resource decorators, the documents' Flow and Optimization APIs and the in-process
fleet. ``coordinator``, ``worker_agent`` and ``shared`` hold the two server processes
and what they share; nothing here needs a user to import them.
"""

from coordinator.placement.outcome import Candidate, CannotPlace, Placement
from coordinator.placement.pool import ResourceAwareWorkerPool
from shared.context import PipelineContext, current_attempt, current_gpu_devices
from shared.dag import Dag, Node, RetryPolicy
from shared.labels import LabelSelector, PreferredLabel, parse_selector
from shared.resources import GPUDevice, ResourceRequest, WorkerSpec
from shared.version import __version__
from shared.wire.runs import RunUpdate, RunView, WorkerView
from taskiq_fleet.broker import FleetBroker
from taskiq_fleet.client import CoordinatorClient, RunHandle
from taskiq_fleet.flow import (
    DAG,
    DAGBuilder,
    DataflowPipeline,
    DataflowRegistry,
    ExecutionEngine,
    MapReduce,
    NatsPipelineStorage,
    Pipeline,
    PipelineError,
    PipelineErrorAggregator,
    PipelineMiddleware,
    PipelineResult,
    PipelineScope,
    PipelineStatus,
    PipelineTask,
    PipelineTimeoutError,
    PipelineTrackingManager,
    Registration,
    SequentialPipeline,
    StepContext,
    StepFailure,
    StepStatus,
    Task,
    Tracker,
    TrackingStatus,
)
from taskiq_fleet.flow.annotations import (
    RetryException,
    TaskInfo,
    pipeline_task,
    pipeline_task_multi_output,
)
from taskiq_fleet.handles import FleetError, RunFailed
from taskiq_fleet.local_broker import LocalFleetBroker
from taskiq_fleet.local_cluster import AgentConfig, LocalCluster, load_config
from taskiq_fleet.optimization import (
    ClusterAwareExecutor,
    HostSnapshot,
    ResourceAwareExecutor,
    get_default_executor,
    get_max_parallel_tasks,
    set_max_parallel_tasks,
)
from taskiq_fleet.profiles import (
    CPUProfile,
    GPUProfile,
    LabelProfile,
    RAMProfile,
    ResourceLabelsMiddleware,
    ResourceProfile,
    TaskResourceProfile,
    request_of,
)
from taskiq_fleet.remote_errors import TaskFailed

__all__ = [
    "DAG",
    "AgentConfig",
    "CPUProfile",
    "Candidate",
    "CannotPlace",
    "ClusterAwareExecutor",
    "CoordinatorClient",
    "DAGBuilder",
    "Dag",
    "DataflowPipeline",
    "DataflowRegistry",
    "ExecutionEngine",
    "FleetBroker",
    "FleetError",
    "GPUDevice",
    "GPUProfile",
    "HostSnapshot",
    "LabelProfile",
    "LabelSelector",
    "LocalCluster",
    "LocalFleetBroker",
    "MapReduce",
    "NatsPipelineStorage",
    "Node",
    "Pipeline",
    "PipelineContext",
    "PipelineError",
    "PipelineErrorAggregator",
    "PipelineMiddleware",
    "PipelineResult",
    "PipelineScope",
    "PipelineStatus",
    "PipelineTask",
    "PipelineTimeoutError",
    "PipelineTrackingManager",
    "Placement",
    "PreferredLabel",
    "RAMProfile",
    "Registration",
    "ResourceAwareExecutor",
    "ResourceAwareWorkerPool",
    "ResourceLabelsMiddleware",
    "ResourceProfile",
    "ResourceRequest",
    "RetryException",
    "RetryPolicy",
    "RunFailed",
    "RunHandle",
    "RunUpdate",
    "RunView",
    "SequentialPipeline",
    "StepContext",
    "StepFailure",
    "StepStatus",
    "Task",
    "TaskFailed",
    "TaskInfo",
    "TaskResourceProfile",
    "Tracker",
    "TrackingStatus",
    "WorkerSpec",
    "WorkerView",
    "__version__",
    "current_attempt",
    "current_gpu_devices",
    "get_default_executor",
    "get_max_parallel_tasks",
    "load_config",
    "parse_selector",
    "pipeline_task",
    "pipeline_task_multi_output",
    "request_of",
    "set_max_parallel_tasks",
]
