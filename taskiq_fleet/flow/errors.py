"""How a pipeline run that did not succeed reaches its caller (Execution guide §4, §5, §12).

``PipelineError`` carries the run's view and the outputs that were produced, so the
documents' ``except PipelineError: result.partial_results`` works; a run that ran out of
time raises ``PipelineTimeoutError``, which is also an ``asyncio.TimeoutError``, as §5
promises. ``PipelineErrorAggregator`` is the report of one run: every failed step with
its error, what was skipped because of it, and the partial results; a
``DataflowPipeline(continue_on_error=True)`` returns its partial results and keeps this
report in ``pipeline.errors`` instead of raising.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taskiq.exceptions import TaskiqError

from shared.wire.runs import NodeView, RunView
from taskiq_fleet.remote_errors import first_failure, rebuilt

RUN_TIMED_OUT = "run timed out"
"""How the coordinator's scheduler begins the reason of a run past its deadline."""


@dataclass(frozen=True)
class StepFailure:
    """One failed step (a node of the run): which, what it raised, where, after how many
    attempts."""

    step: str
    task: str
    error_type: str
    message: str
    attempts: int
    worker: str | None = None

    def __str__(self) -> str:
        return f"{self.step}: {self.error_type}: {self.message}"


@dataclass(frozen=True)
class PipelineErrorAggregator:
    """The failed steps and partial results of one run (Execution guide §12: "check
    ``PipelineErrorAggregator``" after ``continue_on_error=True``)."""

    pipeline_id: str
    status: str
    """The run's end: ``succeeded``, ``failed`` or ``cancelled``."""
    failures: tuple[StepFailure, ...] = ()
    skipped: tuple[str, ...] = ()
    """Steps that never ran because a step they depend on failed (or the run ended)."""
    partial_results: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    """The run's own error: which node stopped it, or its timeout."""

    @classmethod
    def from_run(cls, view: RunView, partial_results: dict[str, Any]) -> PipelineErrorAggregator:
        return cls(
            pipeline_id=view.run_id,
            status=view.status,
            failures=tuple(_failure(n) for n in view.nodes if n.status == "failed"),
            skipped=tuple(n.id for n in view.nodes if n.status in ("skipped", "cancelled")),
            partial_results=dict(partial_results),
            reason=view.error,
        )

    @property
    def has_errors(self) -> bool:
        return self.status != "succeeded"

    @property
    def failed_steps(self) -> list[str]:
        return [f.step for f in self.failures]

    def summary(self) -> str:
        """One line per failed step, then what was skipped; ``"no errors"`` otherwise."""
        if not self.has_errors:
            return "no errors"
        lines = [str(f) for f in self.failures] or [f"{self.status}: {self.reason}"]
        if self.skipped:
            lines.append(f"skipped: {', '.join(self.skipped)}")
        return "\n".join(lines)


def _failure(node: NodeView) -> StepFailure:
    error = node.error
    return StepFailure(
        step=node.id,
        task=node.task,
        error_type=error.type if error is not None else "Failed",
        message=error.message if error is not None else node.reason,
        attempts=node.attempt,
        worker=node.worker,
    )


class PipelineError(TaskiqError):
    """A pipeline run that did not succeed; completed outputs are kept. A ``TaskiqError``,
    so the documents' ``except TaskiqError`` catches it."""

    __template__ = "pipeline {run_id} {status}: {reason}"
    run_id: str
    status: str
    reason: str

    def __init__(self, view: RunView, partial_results: dict[str, Any]) -> None:
        super().__init__(run_id=view.run_id, status=view.status, reason=view.error)
        self.view = view
        self.partial_results = partial_results
        self.errors = PipelineErrorAggregator.from_run(view, partial_results)
        failed = self.errors.failed_steps
        self.failed_step = failed[0] if failed else None


class PipelineTimeoutError(PipelineError, TimeoutError):
    """A pipeline past its timeout (``with_timeout``, ``timeout=``) or a step past its
    task's: ``except asyncio.TimeoutError`` and ``except PipelineError`` both catch it."""

    def __init__(self, view: RunView, partial_results: dict[str, Any]) -> None:
        super().__init__(view, partial_results)


def deadline_passed(view: RunView) -> bool:
    """The run was ended at its own deadline (``RunOptions.timeout``)."""
    return view.status == "failed" and view.error.startswith(RUN_TIMED_OUT)


def timed_out(view: RunView) -> bool:
    """The run ended at its deadline, or the step that failed it ran out of time."""
    if deadline_passed(view):
        return True
    failed = [n.error for n in view.nodes if n.status == "failed" and n.error is not None]
    return bool(failed) and failed[0].type.rsplit(".", 1)[-1] == "TimeoutError"


def pipeline_error(view: RunView, partial_results: dict[str, Any]) -> PipelineError:
    """The error a run that did not succeed raises: a ``PipelineTimeoutError`` when it
    timed out; an instance of the failed task's exception class too when this process
    has it, with the task's error as its cause (``remote_errors``)."""
    cls = PipelineTimeoutError if timed_out(view) else PipelineError
    return rebuilt(cls, first_failure(view), view, partial_results)
