"""Resource decorators that users stack with ``@broker.task``.

Each profile states a few fields of a :class:`ResourceRequest`.  Stacked
profiles are combined, never overwritten, so that the order of decorators
cannot change what a task asks for: label conditions accumulate, and a scalar
stated twice must agree or decoration fails.

The request is kept twice on purpose: as the attribute ``__fleet_request__``
(what ``functools.wraps`` in ``broker.task`` copies from the function onto the
task) and as the task label ``fleet_resources``, because labels are what
taskiq ships with every message (taskiq-nats sends them as NATS headers).

A node's ``request`` is the one source of truth: the label always carries the
whole request, the ``queue`` selector included (``with_queue``), and the broker
writes the node's label from the node's request (``labels_with_request``), so
the two can never disagree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from taskiq import AsyncTaskiqDecoratedTask, TaskiqMessage, TaskiqMiddleware
from taskiq.labels import LabelType

from shared.labels import (
    LabelSelector,
    Op,
    PreferredLabel,
    SelectorLike,
    as_preferences,
    as_selectors,
)
from shared.resources import NonNegFloat, NonNegInt, ResourceRequest
from shared.wire import label_keys

__all__ = [
    "REQUEST_ATTR",
    "CPUProfile",
    "GPUProfile",
    "LabelProfile",
    "RAMProfile",
    "ResourceLabelsMiddleware",
    "ResourceProfile",
    "TaskResourceProfile",
    "attach_request_label",
    "labels_with_request",
    "request_from_labels",
    "request_label_value",
    "request_of",
    "with_queue",
]

REQUEST_ATTR = "__fleet_request__"
IO_BOUND_CPU_SHARE = 0.25

T = TypeVar("T", bound=Callable[..., Any])
AnyTask = AsyncTaskiqDecoratedTask[Any, Any]


def request_label_value(request: ResourceRequest) -> str:
    """Compact JSON for a header: defaults are left out, ``version`` never is.

    Defaults belong to the versioned schema, so omitting them is safe and lets
    a receiver on an older release read any message that uses only fields it knows.
    """
    fields = request.model_dump(mode="json", exclude_defaults=True)
    return json.dumps({**fields, "version": request.version}, separators=(",", ":"))


def request_from_labels(labels: Mapping[str, Any]) -> ResourceRequest | None:
    """Parse the request a received message carries; ``None`` when it carries none."""
    raw = labels.get(label_keys.RESOURCES)
    if raw is None:
        return None
    if not isinstance(raw, str | bytes):
        kind = type(raw).__name__
        raise ValueError(f"label {label_keys.RESOURCES!r} must hold JSON text, got {kind}")
    try:
        return ResourceRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(
            f"label {label_keys.RESOURCES!r} does not hold a valid resource request: {exc}"
        ) from exc


def request_of(target: object) -> ResourceRequest:
    """The request attached to a task or function; undecorated tasks get the default one.
    A task's ``queue`` label adds its condition (``with_queue``)."""
    labels = getattr(target, "labels", None)
    labels = labels if isinstance(labels, Mapping) else {}
    attached = getattr(target, REQUEST_ATTR, None)
    if isinstance(attached, ResourceRequest):
        return with_queue(attached, labels)
    return with_queue(request_from_labels(labels) or ResourceRequest(), labels)


DEFAULT_QUEUE = "default"


def with_queue(request: ResourceRequest, labels: Mapping[str, Any]) -> ResourceRequest:
    """``@broker.task(queue="gpu-jobs")`` (Tasks guide §2.1), as Celery routes to queues:
    the task runs only on agents started with ``--labels queue=gpu-jobs``. The
    ``"default"`` queue, or none, leaves placement to resources alone."""
    queue = labels.get(label_keys.QUEUE)
    if queue is None or queue in ("", "None", DEFAULT_QUEUE):
        return request
    selector = LabelSelector(key=label_keys.QUEUE, op=Op.EQUALS, values=(str(queue),))
    if selector in request.required:
        return request
    return request.model_copy(update={"required": (*request.required, selector)})


def labels_with_request(
    labels: Mapping[str, Any], request: ResourceRequest, value: str | None = None
) -> dict[str, Any]:
    """``labels`` whose ``fleet_resources`` states ``request`` exactly (``value``: its
    ``request_label_value`` when already known); none for the default request."""
    found = dict(labels)
    if request == ResourceRequest():
        found.pop(label_keys.RESOURCES, None)
    else:
        found[label_keys.RESOURCES] = value or request_label_value(request)
    return found


def attach_request_label(task: AnyTask) -> None:
    """Copy the attribute into the task's labels so that every kick ships it, with the
    task's ``queue`` selector: the same request the broker puts in the node."""
    request = getattr(task, REQUEST_ATTR, None)
    if isinstance(request, ResourceRequest):
        # A fresh dict, as taskiq does not copy the one it is given and tasks may share it.
        full = with_queue(request, task.labels)
        task.labels = {**task.labels, label_keys.RESOURCES: request_label_value(full)}


def _combine(base: ResourceRequest, extra: ResourceRequest, where: str) -> ResourceRequest:
    data = base.model_dump(exclude_unset=True)
    for name in extra.model_fields_set - {"required", "preferred", "resources"}:
        old, new = getattr(base, name), getattr(extra, name)
        if name in base.model_fields_set and old != new:
            raise ValueError(
                f"{where}: {name} is stated twice ({old!r} and {new!r}); "
                "stacked profiles must agree so that their order does not matter"
            )
        data[name] = new
    for key in base.resources.keys() & extra.resources.keys():
        if base.resources[key] != extra.resources[key]:
            raise ValueError(
                f"{where}: resources[{key!r}] is stated twice "
                f"({base.resources[key]} and {extra.resources[key]})"
            )
    if extra.resources:
        data["resources"] = {**base.resources, **extra.resources}
    if base.required or extra.required:
        data["required"] = sorted(set(base.required) | set(extra.required), key=str)
    if base.preferred or extra.preferred:
        data["preferred"] = sorted(
            set(base.preferred) | set(extra.preferred), key=lambda p: (str(p.selector), p.weight)
        )
    return ResourceRequest.model_validate(data)


def _apply(target: T, stated: ResourceRequest) -> T:
    current = getattr(target, REQUEST_ATTR, None)
    if isinstance(target, AsyncTaskiqDecoratedTask):
        current = current or request_from_labels(target.labels)
        where = target.task_name
    else:
        where = getattr(target, "__qualname__", repr(target))
    # Combining with an empty request too gives label conditions their canonical order.
    combined = _combine(current or ResourceRequest(), stated, where)
    setattr(target, REQUEST_ATTR, combined)
    if isinstance(target, AsyncTaskiqDecoratedTask):
        for task in (target, target.broker.find_task(target.task_name)):
            if task is not None:
                setattr(task, REQUEST_ATTR, combined)
                attach_request_label(task)
    return target


def _selectors(items: Iterable[SelectorLike] | Mapping[str, Any]) -> tuple[LabelSelector, ...]:
    return as_selectors([items] if isinstance(items, str) else items)


class ResourceProfile:
    """A decorator stating any :class:`ResourceRequest` fields.

    Fields are validated when the profile is built, so a bad value fails at
    the decorator line rather than when the task is first scheduled.
    """

    def __init__(self, **fields: Any) -> None:
        if "required" in fields:
            fields["required"] = _selectors(fields["required"])
        if "preferred" in fields:
            prefs = fields["preferred"]
            fields["preferred"] = as_preferences([prefs] if isinstance(prefs, str) else prefs)
        self.request = ResourceRequest.model_validate(fields)

    def __call__(self, target: T) -> T:
        return _apply(target, self.request)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.request.model_dump(exclude_unset=True)})"


class CPUProfile(ResourceProfile):
    def __init__(self, cpu_units: float = 1) -> None:
        super().__init__(cpu=cpu_units)


class RAMProfile(ResourceProfile):
    def __init__(self, ram_mb: int) -> None:
        super().__init__(ram_mb=ram_mb)


class GPUProfile(ResourceProfile):
    """Model and memory constraints only mean something together with a GPU count."""

    def __init__(self, gpus: float = 1, models: Sequence[str] = (), gpu_mem_mb: int = 0) -> None:
        fields: dict[str, Any] = {"gpus": gpus}
        if models:
            fields["gpu_models"] = (models,) if isinstance(models, str) else tuple(models)
        if gpu_mem_mb:
            fields["gpu_mem_mb"] = gpu_mem_mb
        super().__init__(**fields)


class LabelProfile(ResourceProfile):
    def __init__(
        self,
        required: Iterable[SelectorLike] | Mapping[str, Any] = (),
        preferred: Mapping[str, int] | Iterable[PreferredLabel | SelectorLike] = (),
    ) -> None:
        super().__init__(required=required, preferred=preferred)


class TaskResourceProfile(BaseModel):
    """Per-instance estimates from the optimization API, usable as a decorator too.

    An I/O-bound task spends most of its time waiting on network or disk, so
    reserving all its stated cores would leave them idle and cap parallelism;
    it reserves a quarter of them instead (at least 0.001 when it states any).
    Memory is reserved in full because waiting does not release it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    estimated_memory_mb: NonNegInt = 0
    estimated_cpu_cores: NonNegFloat = 1.0
    io_bound: bool = False

    @model_validator(mode="after")
    def _check_request(self) -> Self:
        self.to_request()
        return self

    def to_request(self) -> ResourceRequest:
        cpu = self.estimated_cpu_cores
        if self.io_bound and cpu > 0:
            cpu = max(round(cpu * IO_BOUND_CPU_SHARE, 3), 0.001)
        return ResourceRequest(cpu=cpu, ram_mb=self.estimated_memory_mb)

    def __call__(self, target: T) -> T:
        return _apply(target, self.to_request())


class ResourceLabelsMiddleware(TaskiqMiddleware):
    """Adds the request label on kick for brokers that never call ``attach_request_label``.

    A label already on the message (e.g. from ``kicker().with_labels``) wins.
    """

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        if label_keys.RESOURCES in message.labels:
            return message
        task = self.broker.find_task(message.task_name)
        request = getattr(task, REQUEST_ATTR, None)
        if isinstance(request, ResourceRequest):
            full = with_queue(request, message.labels)
            message.labels[label_keys.RESOURCES] = request_label_value(full)
            if message.labels_types is not None:
                message.labels_types[label_keys.RESOURCES] = LabelType.STR.value
        return message
