"""Every taskiq label key that taskiq-fleet reads or writes, in one place.

taskiq ships a task's labels with each message (taskiq-nats as NATS headers), so they
are part of the wire: a producer, the coordinator and an agent must agree on each name.
Keys users write themselves in ``@broker.task(...)`` keep taskiq's and the documents'
names; keys the fleet adds start with ``fleet_``.
"""

from typing import Final

# Written by the resource decorators; read by the broker when it builds a node.
RESOURCES: Final = "fleet_resources"
# Celery-style routing: only to agents labelled queue=<name>.
QUEUE: Final = "queue"

# Task options users state in @broker.task(...), read into a node's settings.
RETRY_POLICY: Final = "retry_policy"
MAX_RETRIES: Final = "max_retries"
TIMEOUT: Final = "timeout"
PRIORITY: Final = "priority"
TASK_NAME: Final = "name"
EXTRA_LABELS: Final = "labels"

# Batching options (@broker.task(batch=True, batch_size=..., batch_timeout=...)).
BATCH: Final = "batch"
BATCH_SIZE: Final = "batch_size"
BATCH_TIMEOUT: Final = "batch_timeout"

# Pipelines: a node's step index and its execution mode.
STEP: Final = "fleet_step"
MODE: Final = "fleet_mode"

# Added by the agent to the message a task runs with.
ATTEMPT: Final = "fleet_attempt"
GPU_DEVICES: Final = "fleet_gpu_devices"
WORKER: Final = "fleet_worker"

# What the broker reads from a task's labels into its nodes.
NODE_SETTINGS: Final = (RESOURCES, QUEUE, RETRY_POLICY, MAX_RETRIES, TIMEOUT, PRIORITY)

# A worker label (not a taskiq label): the digest of the task names an agent serves.
WORKER_TASKS: Final = "fleet.io/tasks"
