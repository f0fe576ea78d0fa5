"""Where runs go: the coordinator over NATS (``CoordinatorClient``) or a ``LocalFleet`` in
this process. ``FleetBroker`` and the pipelines are written against these two protocols, so
the same ``kiq``, batching and pipeline code runs on a cluster and in a user's unit tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pydantic import JsonValue

from shared.dag import Dag, RunOptions
from shared.wire.runs import NodeView, RunUpdate, RunView, WorkerView


class Handle(Protocol):
    run_id: str
    nodes: dict[str, NodeView]
    view: RunView | None

    @property
    def done(self) -> bool: ...
    def on_update(self, listener: Callable[[RunUpdate], None]) -> None: ...
    async def wait(self, timeout: float | None = None) -> RunView: ...
    async def result(self, timeout: float | None = None) -> dict[str, JsonValue]: ...
    async def cancel(self) -> None: ...


class Backend(Protocol):
    async def submit(
        self,
        dag: Dag,
        inputs: Mapping[str, Any] | None = None,
        *,
        name: str = ...,
        options: RunOptions | None = ...,
        run_id: str | None = ...,
        progress: bool = ...,
    ) -> Handle: ...

    async def submit_document(self, run_id: str, document: dict[str, Any]) -> Handle:
        """A ``Submit`` as its JSON document, built without pydantic on hot paths."""
        ...

    async def follow(self, run_id: str) -> Handle:
        """A handle on a run submitted elsewhere."""
        ...

    async def status(self, run_id: str, *, missing_ok: bool = False) -> RunView | None: ...
    async def outputs(self, view: RunView) -> dict[str, JsonValue]: ...
    async def cancel(self, run_id: str) -> None: ...
    async def set_max_parallel(self, limit: int | None) -> None: ...
    async def workers(self) -> list[WorkerView]: ...
    async def close(self) -> None: ...
