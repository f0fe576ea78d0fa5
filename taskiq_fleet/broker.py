"""``FleetBroker``: a taskiq broker whose ``kiq`` goes through the coordinator.

``await task.kiq(x)`` submits a one-node DAG (run id = taskiq's task id) with
the task's resource request from its labels; ``wait_result()`` waits for the
pushed end of that run instead of polling the result backend every 200 ms as
taskiq's ``AsyncTaskiqTask`` does. Agents load the same broker object to find
the tasks; in an agent it never connects (outcomes travel over JetStream).
"""

from __future__ import annotations

import asyncio
import json
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Concatenate, Literal, NoReturn, ParamSpec, TypeVar, overload

from pydantic_core import to_jsonable_python
from taskiq import AsyncBroker, BrokerMessage, TaskiqMessage
from taskiq.decor import AsyncTaskiqDecoratedTask
from taskiq.formatters.json_formatter import JSONFormatter

from shared.connection import NatsSettings
from shared.dag import Dag, Node, RetryPolicy, priority_from_labels, timeout_from_labels
from shared.resources import ResourceRequest
from shared.wire import label_keys
from shared.wire.runs import Submit
from shared.wire.subjects import token
from shared.wire.values import depth_error
from taskiq_fleet import limits
from taskiq_fleet.backend import Backend, Handle
from taskiq_fleet.batching import BatchConfig
from taskiq_fleet.client import CoordinatorClient
from taskiq_fleet.profiles import (
    REQUEST_ATTR,
    labels_with_request,
    request_from_labels,
    request_label_value,
    request_of,
    with_queue,
)
from taskiq_fleet.remote_errors import TaskFailed as TaskFailed  # its home before remote_errors
from taskiq_fleet.results import RESULT as RESULT
from taskiq_fleet.results import FleetDecoratedTask
from taskiq_fleet.results import FleetResultBackend as FleetResultBackend
from taskiq_fleet.results import FleetTask as FleetTask
from taskiq_fleet.taskiq_worker import stop_taskiq_worker

NODE_ID = "task"
FRESH_KEPT = 100_000
"""Task ids drawn and not yet kicked that are remembered as fresh; past it, an id is
submitted as not fresh (one extra look-up at the coordinator), never wrongly as fresh."""
_started: weakref.WeakSet[FleetBroker] = weakref.WeakSet()
_pushes: set[asyncio.Task[None]] = set()


@limits.on_change
def push_max_parallel(limit: int | None) -> None:
    """Send a new global cap to the coordinator through every started broker (needs a
    running event loop; otherwise brokers send it when they start)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for broker in list(_started):
        if broker.client is not None:
            task = loop.create_task(broker.client.set_max_parallel(limit))
            _pushes.add(task)
            task.add_done_callback(_pushes.discard)


_P = ParamSpec("_P")
_R = TypeVar("_R")
_Item = TypeVar("_Item")


class FleetBroker(AsyncBroker):
    """Tasks decorated with ``@broker.task`` run on fleet agents, placed by their resources."""

    @overload  # type: ignore[override]  # batch=True narrows what taskiq returns
    def task(
        self, task_name: Callable[_P, _R], **labels: Any
    ) -> AsyncTaskiqDecoratedTask[_P, _R]: ...

    @overload
    def task(
        self,
        task_name: str | None = None,
        *,
        batch: Literal[True],
        batch_size: int = ...,
        batch_timeout: float = ...,
        **labels: Any,
    ) -> Callable[
        [Callable[Concatenate[list[_Item], _P], Any]],
        AsyncTaskiqDecoratedTask[Concatenate[_Item, _P], Any],
    ]: ...

    @overload
    def task(
        self, task_name: str | None = None, **labels: Any
    ) -> Callable[[Callable[_P, _R]], AsyncTaskiqDecoratedTask[_P, _R]]: ...

    def task(self, task_name: Any = None, **labels: Any) -> Any:
        """As taskiq's, typed for batching: a ``batch=True`` function takes ``list[item]``
        first, and its ``.kiq`` takes one ``item`` (then the other parameters). A member's
        result is typed ``Any``: it is an element of the function's list result when that
        list is as long as the batch, else the whole result.

        The documents' options are read as they mean them (Tasks guide §2.1, §3.1):
        ``name=`` names the task and ``labels={...}`` adds labels, where taskiq would keep
        both as labels called "name" and "labels"."""
        name = labels.pop(label_keys.TASK_NAME, None)
        if task_name is None and isinstance(name, str):
            task_name = name
        elif name is not None:
            labels[label_keys.TASK_NAME] = name
        extra = labels.pop(label_keys.EXTRA_LABELS, None)
        if isinstance(extra, Mapping):
            labels = {**extra, **labels}
        elif extra is not None:
            raise TypeError(f"labels= takes a mapping of label -> value, not {extra!r}")
        return super().task(task_name, **labels)

    def __init__(
        self, nats: str | NatsSettings | None = None, *, prefix: str | None = None
    ) -> None:
        super().__init__()
        self.nats = nats
        """Servers (or all settings); what is not given is read at ``startup()`` from
        ``FLEET_NATS`` and the other ``FLEET_*`` variables, as ``fleet`` reads them."""
        self.prefix = prefix
        """The fleet's subject prefix; ``None``: ``FLEET_PREFIX``, else ``fleet``."""
        self.result_backend = FleetResultBackend(self)
        self.decorator_class = FleetDecoratedTask
        self.client: Backend | None = None
        self._templates: dict[tuple[str, ...], tuple[Node, str | None]] = {}
        self._fresh: set[str] = set()
        self.id_generator = self._fresh_id

    def _fresh_id(self) -> str:
        """A task id drawn here, not chosen by the caller (``with_task_id``): its run
        cannot have run before (``Submit.fresh``)."""
        task_id = uuid.uuid4().hex
        if len(self._fresh) < FRESH_KEPT:
            self._fresh.add(task_id)
        return task_id

    def connected(self) -> Backend:
        if self.client is None:
            raise RuntimeError("call `await broker.startup()` before kicking or waiting for tasks")
        return self.client

    async def startup(self) -> None:
        await super().startup()
        if not self.is_worker_process and self.client is None:
            self.client = await self._connect()
            _started.add(self)
            limit = limits.get_max_parallel_tasks()
            if limit is not None:
                await self.client.set_max_parallel(limit)

    async def _connect(self) -> Backend:
        return await CoordinatorClient.connect(self.nats, prefix=self.prefix)

    async def wait_all(self) -> None:
        """Wait until every run kicked through this broker has ended, as
        ``InMemoryBroker.wait_all`` does (batch members when their batch has run)."""
        assert isinstance(self.result_backend, FleetResultBackend)
        await self.result_backend.wait_all()

    async def shutdown(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        await super().shutdown()

    async def kick(self, message: BrokerMessage) -> None:
        """One kiq, formatted, as a one-node run (``_node``, ``_submit``)."""
        if isinstance(self.formatter, JSONFormatter):
            raw = json.loads(message.message)
            args, kwargs, labels = raw["args"], raw["kwargs"], raw["labels"]
        else:
            msg = self.formatter.loads(message.message)
            args, kwargs = to_jsonable_python(msg.args), to_jsonable_python(msg.kwargs)
            labels = to_jsonable_python(msg.labels)
        await self._kick(message.task_id, message.task_name, args, kwargs, labels)

    async def kick_message(self, message: TaskiqMessage) -> None:
        """One kiq as taskiq's kicker made it, before any formatter (``FleetKicker``): its
        values as JSON would give them back, without writing and parsing them (a 1 MB
        argument cost a kiq 4 ms of CPU that way). A subclass's own ``kick`` still sees
        every kiq, formatted."""
        if type(self).kick is not FleetBroker.kick:
            await self.kick(self.formatter.dumps(message))
            return
        args, kwargs = to_jsonable_python(message.args), to_jsonable_python(message.kwargs)
        labels = to_jsonable_python(message.labels)
        await self._kick(message.task_id, message.task_name, args, kwargs, labels)

    async def _kick(
        self,
        task_id: str,
        task_name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        labels: dict[str, Any],
    ) -> None:
        """The node goes out of scope once encoded (``_submit``): a burst's kiqs wait for
        their acknowledgement together, holding only bytes."""
        assert isinstance(self.result_backend, FleetResultBackend)
        node = self._node(task_name, args, kwargs, labels)
        submitting = self._submit(
            task_id, task_name, await self._apart(self._as_member(task_name, node))
        )
        del node
        self.result_backend.track(await submitting)

    async def _apart(self, node: Node) -> Node:
        """Arguments over the inline limit travel apart (``Node.arg_refs``). A batch
        member's arguments stay inline (the coordinator groups members by them)."""
        backend = self.connected()
        if not isinstance(backend, CoordinatorClient) or node.batch is not None:
            return node
        return await backend.with_large_args_apart(node)

    def _as_member(self, task_name: str, node: Node) -> Node:
        """A kiq of a ``batch=True`` task is one member of a batch that the coordinator
        forms from every producer's members (``batching.py``); other nodes as they are."""
        task = self.find_task(task_name)
        config = BatchConfig.from_labels(dict(task.labels) if task is not None else node.labels)
        if config is None:
            return node
        func = task.original_func if task is not None else None
        return node.model_copy(
            update={"batch": config.member(task_name, node.args, node.kwargs, func)}
        )

    def _node(
        self, task_name: str, args: list[Any], kwargs: dict[str, Any], labels: dict[str, Any]
    ) -> Node:
        """The one node of a kiq: the task's template with this kiq's arguments, and its
        labels stating the node's request exactly (``labels_with_request``). The arguments
        are not validated again, but their depth is bounded here, in ``kiq``, as the
        coordinator would refuse them."""
        for value in (*args, *kwargs.values()):
            why = depth_error(value)
            if why is not None:
                raise ValueError(f"{task_name}: an argument's {why}")
        template, label = self._template(task_name, labels)
        return template.model_copy(
            update={
                "args": tuple(args),
                "kwargs": kwargs,
                "labels": labels_with_request(labels, template.request, label),
            }
        )

    def _submit(self, run_id: str, name: str, node: Node) -> Awaitable[Handle]:
        """A ``Submit`` of one node. Its parts are valid by construction (the template was
        validated, the arguments come from JSON), so it is assembled without validating
        them again: this runs once per ``kiq``. The coordinator validates what it gets."""
        submit = Submit.trusted(
            run_id=token(run_id),
            name=name,
            progress=False,
            dag=Dag.trusted(nodes=(node,)),
            fresh=self._drawn(run_id),
        )
        backend = self.connected()
        if isinstance(backend, CoordinatorClient):
            return backend.submit_valid(submit)
        return backend.submit_document(submit.run_id, submit.model_dump(mode="json"))

    def _drawn(self, task_id: str) -> bool:
        try:
            self._fresh.remove(task_id)
        except KeyError:
            return False
        return True

    def _template(self, task_name: str, labels: dict[str, Any]) -> tuple[Node, str | None]:
        """The node of a task without arguments (request, retry policy, timeout, priority
        from its labels), and its request's label value. Built once per task and label
        values, not once per ``kiq``; a bad value raises here, in ``kiq``."""
        key = (task_name, *(str(labels.get(name)) for name in label_keys.NODE_SETTINGS))
        found = self._templates.get(key)
        if found is None:
            request = self._request(task_name, labels)
            node = Node(
                id=NODE_ID,
                task=task_name,
                outputs=(RESULT,),
                request=request,
                retry=RetryPolicy.from_labels(labels) or RetryPolicy(),
                timeout=timeout_from_labels(labels),
                priority=priority_from_labels(labels),
            )
            label = None if request == ResourceRequest() else request_label_value(request)
            found = self._templates[key] = (node, label)
        return found

    def _request(self, task_name: str, labels: dict[str, Any]) -> ResourceRequest:
        """From the message's labels, else from the profile decorators on the task."""
        found = request_from_labels(labels)
        if found is None:
            task = self.find_task(task_name)
            if task is None:
                found = ResourceRequest()
            elif hasattr(task, REQUEST_ATTR):
                found = request_of(task)
            else:
                found = request_of(task.original_func)
        return with_queue(found, labels)

    def listen(self) -> NoReturn:
        """taskiq's worker entry point; a fleet's tasks run on ``fleet agent`` instead.
        Not a generator, so that it fails when called, not at the first message."""
        message = (
            "FleetBroker tasks run on fleet agents: start `fleet agent module:broker` instead "
            "of `taskiq worker`"
        )
        stop_taskiq_worker(message, worker_process=self.is_worker_process)
        raise RuntimeError(message)
