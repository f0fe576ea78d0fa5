"""How one GPU host ranks for one request: how much a placement there grows ``frag``.

The measure itself and the class tables it reads are in ``fragment.py``; choosing
among a class's hosts, and among classes, in ``fragment_select.py``.
"""

from __future__ import annotations

from coordinator.placement.fragment import ClassTable
from coordinator.placement.policies import Scale, spare
from coordinator.placement.workers import WorkerState
from shared.capacity import Demand, DevicePick
from shared.resources import MILLI

Rank = tuple[int, float, float, int]
"""(minus the preferred-label weight, growth of ``frag``, ``leftover`` after placement,
worker seq): least wins."""
State = tuple[int, float]
"""A worker's device state in a class table and its ``frag`` there."""
Scored = tuple[Rank, DevicePick, State | None]
"""A worker's best placement of a request: its rank, the devices it takes and the state it
leaves the worker in (the pool hands that to the worker's next scoring, ``w.before``)."""
NO_FIT: Scored = ((0, 0.0, 0.0, -1), (), None)
"""What ``score`` gives for a worker that cannot take the request now."""


def score(w: WorkerState, d: Demand, ct: ClassTable, scale: Scale, first: int) -> Scored:
    """How ``w`` ranks for ``d`` now, by how much ``frag`` grows with its best choice of
    devices (for a share, each distinct free amount of a device that can hold it; else
    what ``fit`` takes), or ``NO_FIT``. ``first`` is minus the weight of the preferred
    labels ``w`` matches; the caller keeps the answer in ``w.scores`` per request (and
    this, the state ``w`` is in now, in ``w.before``)."""
    free_cpu, free_ram, live = w.free_cpu, w.free_ram, w.live_ram
    ram_now = free_ram if live is None else min(free_ram, live)  # usable_ram()
    if d.cpu > free_cpu or d.ram > ram_now:
        return NO_FIT
    pick: DevicePick = ()
    if d.gpu_whole or d.custom:
        picked = _pick(w, d)
        if picked is None:
            return NO_FIT
        pick = picked
    free_dev = w.free_dev
    before = w.before
    if before is None:
        sid = ct.state(tuple(sorted(free_dev)) if ct.uniform else tuple(free_dev))
        before = w.before = (sid, ct.frag(free_cpu, ram_now, sid))
    sid, now = before
    cpu, ram = free_cpu - d.cpu, ram_now - d.ram
    share = d.gpu_share
    # ``leftover``, from the free GPU its state knows: the same whichever device a share takes
    gpu = ct.info[sid][1] - (share or d.gpu_whole * MILLI) if free_dev else None
    fit = spare(cpu, free_ram - d.ram, gpu, scale)
    if not share:
        after = _taken(ct, sid, free_dev, pick)
        value = ct.frag(cpu, ram, after)
        return ((first, value - now, fit, w.seq), pick, (after, value))
    best = NO_FIT
    seen: set[int] = set()
    any_device = not d.gpu_models and not d.gpu_mem
    for slot, free in enumerate(free_dev):
        # devices alike score alike; with per-device eligibility, each device is its own
        if free < share or free in seen or not (any_device or w.cap.device_ok(slot, d)):
            continue
        if ct.uniform:
            seen.add(free)
            after = ct.moved(sid, free, free - share, 1)
        else:
            moved = list(free_dev)
            moved[slot] = free - share
            after = ct.state(tuple(moved))
        value = ct.frag(cpu, ram, after)
        grown = value - now
        if best is NO_FIT or grown < best[0][1]:  # the first of equals
            best = ((first, grown, fit, w.seq), ((slot, share),), (after, value))
    return best


def _pick(w: WorkerState, d: Demand) -> DevicePick | None:
    """``w.fit(d)`` once cores and RAM fit, except that a share's device is left to the
    caller to weigh (``()``)."""
    if d.custom and any(amount > w.free_custom.get(name, 0) for name, amount in d.custom):
        return None
    if not d.gpu_whole:
        return ()
    if d.gpu_models or d.gpu_mem:
        return w.pick_devices(d)
    free = w.free_dev
    if free.count(MILLI) < d.gpu_whole:
        return None
    picked: list[tuple[int, int]] = []
    slot = -1
    for _ in range(d.gpu_whole):
        slot = free.index(MILLI, slot + 1)
        picked.append((slot, MILLI))
    return tuple(picked)


def _taken(ct: ClassTable, sid: int, free_dev: list[int], pick: DevicePick) -> int:
    """The state once the whole devices ``pick`` are taken (none for CPU-only work)."""
    if not pick:
        return sid
    if ct.uniform:
        return ct.moved(sid, MILLI, 0, len(pick))
    taken = list(free_dev)
    for slot, _ in pick:
        taken[slot] = 0
    return ct.state(tuple(taken))
