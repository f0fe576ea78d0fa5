"""A user's task module whose tasks raise: a builtin error and the module's own classes.
Registered per test on a fresh ``LocalFleetBroker`` (``test_remote_errors``)."""

from __future__ import annotations

from typing import Self

from taskiq import AsyncBroker


class QuotaExceeded(Exception):
    """Several constructor arguments, and a ``__str__`` reading what ``__init__`` sets."""

    def __init__(self, user: str, used: int, limit: int) -> None:
        super().__init__(user, used, limit)
        self.user, self.used, self.limit = user, used, limit

    def __str__(self) -> str:
        return f"{self.user} used {self.used} of {self.limit}"


class Picky(Exception):
    """A ``__new__`` and an ``__init__`` that take their own arguments, not a message."""

    def __new__(cls, code: int, why: str) -> Self:
        return super().__new__(cls, code, why)

    def __init__(self, code: int, why: str) -> None:
        super().__init__(f"{code}: {why}")


def register(broker: AsyncBroker) -> None:
    """The tasks, on a fresh broker (taskiq renames a function it registers, so the
    module's functions could not be registered again for the next test)."""

    @broker.task(task_name="parse")
    def parse(text: str) -> int:
        return int(text)

    @broker.task(task_name="charge")
    def charge(user: str) -> None:
        raise QuotaExceeded(user, 12, 10)

    @broker.task(task_name="picky")
    def picky() -> None:
        raise Picky(3, "no")

    @broker.task(task_name="hidden")
    def hidden() -> None:
        class Hidden(ValueError):
            """Defined in a function: no path names it, so no client can find it."""

        raise Hidden("nobody can name me")
