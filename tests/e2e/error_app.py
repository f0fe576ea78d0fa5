"""A user's task module whose tasks raise (APP ``tests.e2e.error_app:broker``): a builtin
error, a class of this module whose ``__init__`` takes several arguments, and a class
from a module only the agent imports (``error_hidden``)."""

from __future__ import annotations

from taskiq_fleet import FleetBroker

broker = FleetBroker()


class QuotaExceeded(Exception):
    def __init__(self, user: str, used: int, limit: int) -> None:
        super().__init__(f"{user} used {used} of {limit}")
        self.user = user


@broker.task
def parse(text: str) -> int:
    return int(text)


@broker.task
def charge(user: str) -> None:
    raise QuotaExceeded(user, 12, 10)


@broker.task
def hidden() -> None:
    from tests.e2e.error_hidden import HiddenError

    raise HiddenError("only the agent has this class")
