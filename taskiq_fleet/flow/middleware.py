"""``PipelineMiddleware`` (Execution §10.4): step hooks on the worker that runs each node.

Added with ``broker.add_middlewares``, its hooks run on the worker that ran each pipeline
node: every node of a pipeline's run (in process, in the same process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from shared.wire import label_keys


@dataclass(frozen=True)
class StepContext:
    """What a ``PipelineMiddleware`` hook gets for one pipeline node's attempt.

    ``pipeline_id`` is the fleet run the node belongs to: the pipeline's own run, or one
    step's run for a sequential ``Pipeline`` driven step by step."""

    task_id: str
    task_name: str
    pipeline_id: str
    node_id: str
    step_index: int
    execution_mode: str
    worker: str
    attempt: int
    labels: dict[str, Any]
    message: TaskiqMessage

    @classmethod
    def from_message(cls, message: TaskiqMessage) -> StepContext:
        labels = dict(message.labels)
        parts = message.task_id.rsplit(".", 2)  # "<run_id>.<node_id>.<attempt>"
        run_id, node, attempt = parts if len(parts) == 3 else (message.task_id, "", "1")
        step = labels.get(label_keys.STEP)
        return cls(
            task_id=message.task_id,
            task_name=message.task_name,
            pipeline_id=run_id,
            node_id=node,
            step_index=step if isinstance(step, int) else int(str(step or 0)),
            execution_mode=str(labels.get(label_keys.MODE, "parallel")),
            worker=str(labels.get(label_keys.WORKER, "")),
            attempt=int(attempt) if attempt.isdigit() else 1,
            labels=labels,
            message=message,
        )


def _is_pipeline_node(message: TaskiqMessage) -> bool:
    return label_keys.STEP in message.labels


class PipelineMiddleware(TaskiqMiddleware):
    """Subclass it and override the hooks; add it with ``broker.add_middlewares(...)``.

    The hooks run on the worker executing a pipeline node (any fleet run built by
    ``Pipeline``, ``DataflowPipeline`` or ``MapReduce``), once per attempt; tasks sent
    with a plain ``.kiq`` do not call them:

    - ``on_step_start(ctx)``: before the task function runs (from ``pre_execute``);
    - ``on_step_complete(ctx, result)``: after it returned, with its return value
      (from ``post_execute``);
    - ``on_step_error(ctx, error)``: after it raised, timed out or was cancelled, with
      the exception (from ``post_execute``; a retry then starts a new attempt).

    A hook that raises is logged by the worker and does not change the step's outcome,
    except in ``on_step_start``, whose exception fails the attempt as a ``pre_execute``
    one does. If you override ``pre_execute``/``post_execute`` too, call ``super()``."""

    async def on_step_start(self, ctx: StepContext) -> None:
        """Called before a pipeline node's task function runs."""

    async def on_step_complete(self, ctx: StepContext, result: Any) -> None:
        """Called after a pipeline node's task returned ``result``."""

    async def on_step_error(self, ctx: StepContext, error: BaseException) -> None:
        """Called after a pipeline node's task failed with ``error``."""

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        if _is_pipeline_node(message):
            await self.on_step_start(StepContext.from_message(message))
        return message

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        if not _is_pipeline_node(message):
            return
        ctx = StepContext.from_message(message)
        if result.is_err and result.error is not None:
            await self.on_step_error(ctx, result.error)
        else:
            await self.on_step_complete(ctx, result.return_value)
