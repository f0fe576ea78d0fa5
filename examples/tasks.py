"""The documents' task examples: they live in ``taskiq_fleet/demo/tasks.py``, inside the
package, so that ``fleet up`` serves them from a plain install; this keeps their
``examples.tasks`` import path (``fleet agent examples.tasks:broker`` serves the same)."""

from taskiq_fleet.demo.tasks import (
    ALL_TASKS,
    background_cleanup,
    broker,
    estimated_task,
    fetch_url,
    gpu_style_task,
    heavy_computation,
    memory_intensive,
    needs_gpu_host,
    train_model,
    whole_cluster_job,
)

__all__ = [
    "ALL_TASKS",
    "background_cleanup",
    "broker",
    "estimated_task",
    "fetch_url",
    "gpu_style_task",
    "heavy_computation",
    "memory_intensive",
    "needs_gpu_host",
    "train_model",
    "whole_cluster_job",
]
