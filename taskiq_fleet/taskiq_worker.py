"""``taskiq worker app:broker`` on a ``FleetBroker``: one line, and the command ends.

taskiq's worker command runs the broker's ``listen()`` in child processes named
``worker-N`` and starts again any child that dies, for ever unless ``--max-fails`` is
given. An error raised in ``listen()`` would so print a traceback every second. A child
that finds itself under that manager says why once, asks the manager to stop (SIGTERM,
which it handles as Ctrl-C: it stops every child and exits) and leaves with exit code 2
when the manager stops it. Only ``worker-0`` asks, and no child leaves before it is
stopped: the manager's signal handler puts into a queue whose lock is not reentrant, so
a second SIGTERM, or a child's death noticed (also a put), while a handler runs hangs
the manager for good.
Anywhere else (a user's own ``listen()`` call) the caller gets a ``RuntimeError``.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time

EXIT_USAGE = 2
STOP_WAIT = 30.0  # the manager stops its children within a second or two


def stop_taskiq_worker(message: str, *, worker_process: bool) -> None:
    """When this process is a child of ``taskiq worker`` (taskiq has set
    ``is_worker_process`` on the broker, ``worker_process`` here): print ``message``
    once (from ``worker-0``), stop the manager and exit. Otherwise return."""
    parent = multiprocessing.parent_process()
    name = multiprocessing.current_process().name
    if not worker_process or parent is None or parent.pid != os.getppid():
        return
    if not name.startswith("worker-"):
        return
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _leave)
    if name == "worker-0":
        print(f"error: {message}", file=sys.stderr, flush=True)
        if parent.pid is not None:
            os.kill(parent.pid, signal.SIGTERM)
    time.sleep(STOP_WAIT)
    os._exit(EXIT_USAGE)


def _leave(_signum: int, _frame: object) -> None:
    os._exit(EXIT_USAGE)
