"""A task's exception, rebuilt in the process that waits for the task.

An agent reports a failure as ``ErrorInfo``: the class path (module and qualified name),
the message and the traceback, never a pickle. Plain taskiq hands the caller the
exception the task raised, so ``except ValueError`` works; here the error is rebuilt as
an instance of that class when this process has it, and stays an instance of the fleet's
own error (``TaskFailed``, ``RunFailed``, ``PipelineError``) too, so code that catches
those keeps working. Ray's ``RayTaskError`` makes the same dynamic subclass of both.

Only modules already imported are searched, as Celery does since CVE-2021-23727: the
class path comes from a peer, and importing a module runs its code. The task's module is
loaded wherever the task was kicked through its function; a process that only knows a
run id imports it first. The class's own ``__new__`` and ``__init__`` are not run (their
arguments are not known here), so attributes they would set are missing; the message is
the remote ``str(exc)`` and the remote traceback is a note and ``remote_traceback``.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar, cast

from shared.wire.protocol import ErrorInfo
from shared.wire.runs import RunView

E = TypeVar("E", bound=Exception)

__all__ = ["TaskFailed", "first_failure", "rebuilt", "task_class", "task_error"]


class TaskFailed(Exception):
    """A task's error as reported by the agent that ran it. An instance of the task's own
    exception class too when this process has that class (its message is then the task's);
    otherwise its message is ``"<type>: <message>"``."""

    remote_traceback: str = ""
    """The traceback on the host that ran the task; also shown as a note."""


class _Bare(Exception):
    """Keeps the task's class's own ``__new__`` and ``__init__`` out of a rebuilt error:
    they may want arguments nobody has here. Only the built-in ``__new__`` beneath them
    runs (``OSError``'s, say, or ``BaseException``'s). Its ``str`` is the plain message,
    since the class's own ``__str__`` may read attributes that ``__init__`` would set."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        mro = cls.__mro__
        for klass in mro[mro.index(_Bare) + 1 :]:
            new = vars(klass).get("__new__")
            if new is not None and not isinstance(new, staticmethod):  # a C type's
                return new(cls, *args)
        raise TypeError(f"{cls.__name__} has no built-in __new__")  # BaseException has

    def __init__(self, *args: object) -> None:
        BaseException.__init__(self, *args)

    def __str__(self) -> str:
        return BaseException.__str__(self)


_classes: dict[tuple[type[Exception], type[Exception]], type[Exception] | None] = {}


def task_class(info: ErrorInfo) -> type[Exception] | None:
    """The task's exception class when a module this process has loaded holds it."""
    if not info.module or not info.qualname:
        return None
    found: object = sys.modules.get(info.module)
    try:
        for part in info.qualname.split("."):
            found = getattr(found, part, None)
    except Exception:  # a module's __getattr__ may raise anything
        return None
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


def _both(base: type[E], info: ErrorInfo | None) -> type[E] | None:
    """A subclass of ``base`` and of the task's class, made once per pair; ``None`` when
    the class is unknown here or the two cannot be combined (e.g. their layouts clash)."""
    cls = None if info is None else task_class(info)
    if cls is None:
        return None
    key = (base, cls)
    if key not in _classes:
        name = f"{base.__name__}({cls.__qualname__})"
        namespace = {"__module__": base.__module__, "__qualname__": name}
        try:
            _classes[key] = type(name, (base, _Bare, cls), namespace)
        except Exception:  # TypeError mostly; a class's __init_subclass__ may raise anything
            _classes[key] = None
    return cast(type[E] | None, _classes[key])


def _made(cls: type[E] | None, *args: Any) -> E | None:
    if cls is None:
        return None
    try:
        return cls(*args)
    except Exception:  # e.g. a base's __init__ that refuses what the task's class adds
        return None


def task_error(info: ErrorInfo) -> TaskFailed:
    """The error a failed task's result holds (``wait_result().error``)."""
    error = _made(_both(TaskFailed, info), info.message)
    if error is None:
        error = TaskFailed(f"{info.type}: {info.message}" if info.message else info.type)
    error.remote_traceback = info.traceback
    if info.traceback:
        error.add_note(f"Remote traceback:\n{info.traceback.rstrip()}")
    return error


def rebuilt(base: type[E], info: ErrorInfo | None, *args: Any) -> E:
    """``base(*args)``, an instance of the failed task's class as well when this process
    has it, with the task's own error (``task_error``, with its traceback) as its cause."""
    error = _made(_both(base, info), *args) or base(*args)
    if info is not None:
        error.__cause__ = task_error(info)
    return error


def first_failure(view: RunView) -> ErrorInfo | None:
    """The error of the node that failed first: what stopped the run."""
    failed = [n for n in view.nodes if n.status == "failed" and n.error is not None]
    failed.sort(key=lambda n: float("inf") if n.finished_at is None else n.finished_at)
    return failed[0].error if failed else None
