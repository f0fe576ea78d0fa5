"""GPU hosts placed by fragmentation (the default policy), beside plain bin-packing.

``python -m examples.gpu_fragmentation`` runs the pool alone, no NATS: two GPU
hosts, "small" (4 cores, 1 GPU) and "big" (16 cores, 3 GPUs), and five tasks of
4 cores each: two halves of a GPU, then three whole GPUs. The pool learns the
mix of requests it sees; here it has seen these two kinds before.

Bin-packing puts the first half GPU on the tightest host, "small", whose other
half is then stranded without cores, and the last whole-GPU task finds no
host. The default policy puts it where it leaves the least GPU capacity
unusable for the mix, and all five run.
"""

from __future__ import annotations

from taskiq_fleet import Placement, ResourceAwareWorkerPool, ResourceRequest

HOSTS = [
    {"name": "small", "cpu": 4, "gpus": [{"index": 0, "model": "L4"}]},
    {"name": "big", "cpu": 16, "gpus": [{"index": i, "model": "L4"} for i in range(3)]},
]
HALF = ResourceRequest(cpu=4, gpus=0.5)
WHOLE = ResourceRequest(cpu=4, gpus=1)
TASKS = [HALF, HALF, WHOLE, WHOLE, WHOLE]


def placements(policy: str | None) -> list[str]:
    """Where each task lands (or why not) under ``policy`` (None: the default)."""
    pool = ResourceAwareWorkerPool(HOSTS, policy=policy)
    for _ in range(20):  # the mix the pool has seen: these two kinds, half each
        for request in (HALF, WHOLE):
            result = pool.place(request)
            assert isinstance(result, Placement)
            pool.release(result.key)
    answers = [pool.place(request) for request in TASKS]
    return [
        f"{a.worker}{list(a.gpu_devices)}" if isinstance(a, Placement) else a.kind for a in answers
    ]


def main() -> None:
    print("tasks:         ", ", ".join(f"{r.gpus:g} GPU" for r in TASKS))
    print("binpack:       ", ", ".join(placements("binpack")))
    print("default policy:", ", ".join(placements(None)))


if __name__ == "__main__":
    main()
