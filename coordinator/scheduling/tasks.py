"""Which workers have which tasks, as a label the pool can select on.

The pool places by resources and labels and knows nothing of task names. Each
worker's set of task names gets a short tag, advertised to the pool as the
label ``fleet.io/tasks``; a node's request gets the selector "tag in (the tags
of sets holding my task, or 'any')". Workers running the same application
share one tag, so this adds one cheap label check per shape class, and a task
only some workers have is never sent to the others. A worker known only from
heartbeats (after a coordinator restart) has not told its tasks yet: 'any'.
"""

from __future__ import annotations

import hashlib

from shared.labels import LabelSelector, Op
from shared.resources import ResourceRequest, WorkerSpec
from shared.wire import label_keys

ANY = "any"


class TaskCatalog:
    def __init__(self) -> None:
        self._tasks_of: dict[str, frozenset[str]] = {}
        self._requests: dict[tuple[ResourceRequest, str], ResourceRequest] = {}

    def labelled(self, spec: WorkerSpec, tasks: frozenset[str] | None) -> WorkerSpec:
        """The spec as the pool should see it: with the tag of its task set."""
        tag = ANY
        if tasks is not None:
            tag = hashlib.sha1("\n".join(sorted(tasks)).encode()).hexdigest()[:12]
            if tag not in self._tasks_of:
                self._tasks_of[tag] = tasks
                self._requests.clear()
        return spec.model_copy(update={"labels": {**spec.labels, label_keys.WORKER_TASKS: tag}})

    def request(self, request: ResourceRequest, task: str) -> ResourceRequest:
        """``request`` restricted to workers that have ``task`` (or have not said)."""
        key = (request, task)
        found = self._requests.get(key)
        if found is None:
            tags = sorted(tag for tag, tasks in self._tasks_of.items() if task in tasks)
            selector = LabelSelector(key=label_keys.WORKER_TASKS, op=Op.IN, values=(*tags, ANY))
            found = self._requests[key] = request.merged(required=(*request.required, selector))
        return found
