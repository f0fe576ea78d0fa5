"""Which workers have which tasks, as a label the pool can select on.

The pool places by resources and labels and knows nothing of task names. Each
worker's set of task names gets a short tag (its ``task_digest``), advertised to
the pool as the label ``fleet.io/tasks``; a node's request gets the selector "tag
in (the tags of sets holding my task)". Workers running the same application share
one tag, so this adds one cheap label check per shape class, and a task only some
workers have is never sent to the others.

A worker known only from heartbeats (the coordinator missed its Register: it started
later, restarted, or the message was lost) has not told its tasks: it is tagged
``unknown``, which no request selects, so it is sent nothing until it registers. Its
heartbeats say whether that is still the case: each carries the digest of the agent's
task set. A worker whose digest is not the one it registered (``needs_register``) takes
the set of that digest when some worker registered it before (``known``); otherwise it is
asked to register again, at every heartbeat until it has, so a lost request or a lost
Register heals at the next one. Meanwhile work that no known worker has waits for it a
while (``Untold``) instead of failing as infeasible.
"""

from __future__ import annotations

from collections.abc import Iterable

from coordinator.placement.pool import ResourceAwareWorkerPool
from shared.labels import LabelSelector, Op
from shared.resources import ResourceRequest, WorkerSpec
from shared.wire import label_keys
from shared.wire.protocol import task_digest

UNKNOWN = "unknown"
"""The tag of a worker whose task set is not known: no request selects it."""
NOBODY = "none"
"""What a request for a task no known worker has selects: no worker has this tag."""


class TaskCatalog:
    def __init__(self) -> None:
        self._tasks_of: dict[str, frozenset[str]] = {}
        self._requests: dict[tuple[ResourceRequest, str], ResourceRequest] = {}

    def labelled(self, spec: WorkerSpec, tasks: frozenset[str] | None) -> WorkerSpec:
        """The spec as the pool should see it: with the tag of its task set."""
        tag = UNKNOWN
        if tasks is not None:
            tag = task_digest(tasks)
            if tag not in self._tasks_of:
                self._tasks_of[tag] = tasks
                self._requests.clear()
        return spec.model_copy(update={"labels": {**spec.labels, label_keys.WORKER_TASKS: tag}})

    def known(self, digest: str | None) -> frozenset[str] | None:
        """The task set with this digest, if some worker registered it before: a worker
        whose heartbeat proves it (one back from a partition, or one more host of an
        application already seen) need not be asked for its Register."""
        return None if digest is None else self._tasks_of.get(digest)

    def request(self, request: ResourceRequest, task: str) -> ResourceRequest:
        """``request`` restricted to workers known to have ``task``."""
        key = (request, task)
        found = self._requests.get(key)
        if found is None:
            tags = sorted(tag for tag, tasks in self._tasks_of.items() if task in tasks)
            selector = LabelSelector(
                key=label_keys.WORKER_TASKS, op=Op.IN, values=tuple(tags) or (NOBODY,)
            )
            found = self._requests[key] = request.merged(required=(*request.required, selector))
        return found


def needs_register(registered: str | None, proven: str | None) -> bool:
    """Whether a worker must be asked for its Register: the coordinator has none from
    this agent process (``registered``, the digest of the set it told, is None), or its
    heartbeat proves another set. A heartbeat without a digest (an older agent) proves
    nothing, so it asks only while no set is known."""
    return registered is None or (proven is not None and proven != registered)


class Untold:
    """Workers heard from whose task set is not known yet (they were asked for it), each
    with the time until which work waits for it. Such a worker may well have a task no
    known worker has (its Register is on the way, behind its first heartbeat), so that
    work does not fail as infeasible at once; one that never tells (an agent older than
    task digests whose Register was lost) is waited for a few heartbeat intervals from
    when it was first heard, however often it is asked again."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._waiting = False

    def heard(self, name: str, until: float) -> None:
        if name not in self._until:
            self._until[name] = until
            self._waiting = True

    def told(self, name: str) -> None:
        self._until.pop(name, None)

    def expire(self, now: float) -> None:
        self._waiting = any(until > now for until in self._until.values())

    def could_hold(
        self, pool: ResourceAwareWorkerPool, requests: Iterable[ResourceRequest]
    ) -> bool:
        """Some worker whose tasks are not known, still waited for, could hold one of
        ``requests`` (by resources and labels: its tasks are what is not known)."""
        if not self._waiting:
            return False
        untold = LabelSelector(key=label_keys.WORKER_TASKS, op=Op.IN, values=(UNKNOWN,))
        return any(pool.check(r.merged(required=(*r.required, untold))) is None for r in requests)
