"""Place the documented example tasks on the documents' two-worker pool and show the result.

Run with ``make demo``. No cluster is needed yet: this drives the same pure
``ResourceAwareWorkerPool`` that the coordinator keeps for a live cluster.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator import CannotPlace, ResourceAwareWorkerPool
from examples.tasks import ALL_TASKS, heavy_computation
from shared import request_of

DOCUMENT_WORKERS = [
    {"cpu_cores": 8, "ram_gb": 32, "labels": {"gpu": True}},
    {"cpu_cores": 4, "ram_gb": 16, "labels": {"gpu": False}},
]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join("-" * w for w in widths)
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), line, *(fmt.format(*r) for r in rows)]
    return "\n".join(x.rstrip() for x in lines)


def capacity_table(pool: ResourceAwareWorkerPool) -> str:
    rows = []
    for name in pool.workers:
        u = pool.usage(name)
        labels = ",".join(f"{k}={v}" for k, v in u.labels.items())
        rows.append(
            [
                name,
                labels,
                f"{u.cpu_reserved:g}/{u.cpu:g}",
                f"{u.ram_reserved_mb}/{u.ram_mb}",
                str(u.reservations),
            ]
        )
    return table(["worker", "labels", "cpu used/total", "ram MB used/total", "tasks"], rows)


def placement_rows(policies: Sequence[str]) -> list[list[str]]:
    """One row per task: where each policy puts it on a fresh pool of the documents' workers."""
    pools = {p: ResourceAwareWorkerPool(workers=DOCUMENT_WORKERS, policy=p) for p in policies}
    rows = []
    for task in ALL_TASKS:
        request = request_of(task)
        row = [task.task_name.split(":")[-1], request.describe()]
        why = ""
        for policy in policies:
            outcome = pools[policy].place(request)
            if isinstance(outcome, CannotPlace):
                row.append(outcome.kind.upper())
                why = str(outcome.nearest[0]) if outcome.nearest else ""
            else:
                devices = f" gpu {list(outcome.gpu_devices)}" if outcome.gpu_devices else ""
                row.append(outcome.worker + devices)
        rows.append([*row, why])
    return rows


def main() -> None:
    policies = ["hybrid", "binpack", "spread"]
    print("Workers (the Performance guide's ResourceAwareWorkerPool example):\n")
    print(capacity_table(ResourceAwareWorkerPool(workers=DOCUMENT_WORKERS)), "\n")
    print("Placements of examples/tasks.py, in order, per policy (hybrid is the default):\n")
    header = ["task", "asks for", *policies, "why not placed"]
    print(table(header, placement_rows(policies)), "\n")

    pool = ResourceAwareWorkerPool(workers=DOCUMENT_WORKERS)
    burst = []
    while not isinstance(outcome := pool.place(request_of(heavy_computation)), CannotPlace):
        burst.append(outcome)
    print(f"A burst of heavy_computation: {len(burst)} fit, the next one is {outcome.kind}.")
    print("It waits in the coordinator's queue, never on an agent:")
    print(f"  {outcome}\n")
    print(capacity_table(pool), "\n")
    for placement in burst:
        pool.release(placement.key)
    free = all(pool.usage(n).reservations == 0 for n in pool.workers)
    print(f"Released the burst; every worker is entirely free again: {free}")


if __name__ == "__main__":
    main()
