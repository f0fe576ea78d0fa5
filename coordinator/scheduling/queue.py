"""Ready nodes, grouped so that one "busy" answer from the pool covers many nodes.

Nodes with the same priority and the same request are interchangeable for
placement: if one does not fit now, none does. Grouping them makes a
scheduling pass cost one pool call per *group* that is busy rather than one
per waiting node, so 5,000 queued no-op tasks cost a handful of calls per
pass, not 5,000. Groups compete by (priority, age of their oldest node);
within a group, nodes keep their arrival order.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

from coordinator.scheduling.state import NodeState
from shared.resources import ResourceRequest

DEEP = 1000
"""Nodes queued in a group before the next one's run may doze (``RunState.doze``): it will
not come first for a while, and a million waiting runs must fit in memory."""
AWAKE = 10_000
"""Queued nodes in all groups before runs deep in a group doze. Dozing costs a run ~40 us
of CPU (its submission written as JSON and read back when it comes first), 7% of the
coordinator in a burst of 5,000 kiqs; an awake waiting run costs ~8 KB against ~1.4 KB, so
this many awake ones cost ~70 MB, and past it a million queued fit in well under 2 GiB."""
Key = tuple[int, ResourceRequest, str]
"""(priority, request, task name): nodes alike for placement."""
Group = deque[tuple[int, NodeState]]


class ReadyQueue:
    def __init__(self) -> None:
        self._groups: dict[Key, Group] = {}
        self._heads: list[tuple[int, float, int, Key]] = []
        self._entries = 0
        """Items in all groups, stale ones included until they are dropped."""

    def push(self, state: NodeState, priority: int) -> None:
        key = (priority, state.node.request, state.node.task)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = deque()
            heapq.heappush(self._heads, (-priority, state.ready_since, state.seq, key))
        group.append((state.seq, state))
        self._entries += 1
        if len(group) > DEEP and self._entries > AWAKE:
            state.run.doze()

    def states(self) -> list[NodeState]:
        """Every queued ready node (for inspection and tests)."""
        return [state for group in self._groups.values() for state in self.members(group)]

    def pop_group(self) -> tuple[Key, Group] | None:
        """The group whose oldest ready node comes first; ``restore`` it afterwards."""
        while self._heads:
            _, _, _, key = heapq.heappop(self._heads)
            group = self._groups[key]
            self._drop_stale(group)
            if group:
                return key, group
            del self._groups[key]
        return None

    def restore(self, key: Key, group: Group) -> None:
        self._drop_stale(group)
        if not group:
            del self._groups[key]
            return
        seq, state = group[0]
        heapq.heappush(self._heads, (-key[0], state.ready_since, seq, key))

    def _drop_stale(self, group: Group) -> None:
        while group and not _fresh(group[0]):
            group.popleft()
            self._entries -= 1

    def take(self, group: Group, index: int) -> NodeState:
        """The node at ``index`` (from ``first``), out of its group to be placed."""
        state = group[index][1]
        del group[index]
        self._entries -= 1
        return state

    @staticmethod
    def first(group: Group, eligible: Callable[[NodeState], bool]) -> int | None:
        """Index of the first ready node in ``group`` that ``eligible`` accepts."""
        for index, item in enumerate(group):
            if _fresh(item) and eligible(item[1]):
                return index
        return None

    @staticmethod
    def members(group: Group) -> list[NodeState]:
        return [state for seq, state in group if _fresh((seq, state))]

    def depth(self) -> dict[int, int]:
        """Queued ready nodes by priority (metrics), read from the groups' keys: nothing
        of a waiting node's run is read back."""
        found: dict[int, int] = {}
        for key, group in self._groups.items():
            count = sum(1 for item in group if _fresh(item))
            if count:
                found[key[0]] = found.get(key[0], 0) + count
        return found


def _fresh(item: tuple[int, NodeState]) -> bool:
    seq, state = item
    return state.status == "ready" and state.seq == seq
