"""Nobody reads what is not theirs: with deploy/nats/accounts.conf on a real server, each
client and agent user may subscribe only to its own inbox prefix (``_INBOX_<user>``), not
to ``_INBOX.>`` nor to another user's prefix, and each role's own request/reply (control
requests answered by the coordinator, JetStream acks, payload reads) still works.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client

from shared.connection import connect, inbox_prefix
from tests.integration.test_deploy_nats import (
    ACCOUNTS,
    PASSWORD_ENV,
    REFUSAL_WITHIN,
    TIMEOUT,
    Fleet,
    as_role,
    ready,
    run_dag,
)
from tests.natsserver import NatsServer

pytestmark = pytest.mark.integration

USERS = ("client", "agent-a1")
OTHERS = {"client": "agent-a1", "agent-a1": "client"}
STREAM_INFO = "$JS.API.STREAM.INFO.FLEET_PAYLOADS"
"""A JetStream API request both roles may make."""


@pytest.fixture
def deployed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Fleet, NatsServer]]:
    """accounts.conf as deployed, with a fresh password per user in nats-server's
    environment; the fleet's processes are stopped, then the server, by their handles."""
    values = {user: f"pw{secrets.token_hex(12)}" for user in PASSWORD_ENV}
    for user, variable in PASSWORD_ENV.items():
        monkeypatch.setenv(variable, values[user])
    fleet = Fleet(tmp_path, values)
    try:
        yield fleet, fleet.server("nats", "-c", str(ACCOUNTS))
    finally:
        fleet.close()


class Refusals:
    """What the server refused a connection (its error callback), and a wait for them."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._more = asyncio.Event()

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())
        self._more.set()

    async def at_least(self, count: int) -> None:
        """Until ``count`` were reported (the server answers each at once)."""
        async with asyncio.timeout(REFUSAL_WITHIN):
            while len(self.errors) < count:
                self._more.clear()
                await self._more.wait()


@pytest.mark.parametrize("user", USERS)
async def test_a_user_may_subscribe_only_to_its_own_inbox_prefix(
    deployed: tuple[Fleet, NatsServer], user: str
) -> None:
    fleet, server = deployed
    refused = Refusals()
    settings = fleet.settings(server.url, user)
    other = fleet.settings(server.url, OTHERS[user])
    forbidden = [
        "_INBOX.>",  # every connection with nats-py's default prefix (the coordinator's)
        "_INBOX.*.*",
        f"{inbox_prefix(other)}.>",  # another role's replies
        f"{inbox_prefix(other)}.abc.*",
        "_INBOX_agent-a2.>",
        "*.>",
        ">",
    ]
    nc = await as_role(settings, name="rogue", error_cb=refused.on_error)
    try:
        for subject in forbidden:
            await nc.subscribe(subject)
        await nc.flush(timeout=int(TIMEOUT))
        try:
            await refused.at_least(len(forbidden))
        except TimeoutError:
            pytest.fail(f"the server refused only these: {refused.errors}")
        reported = "\n".join(refused.errors)
        for subject in forbidden:
            assert f'permissions violation for subscription to "{subject.lower()}"' in reported
        # Its own inbox is still its own: a JetStream API request is answered there.
        assert nc.is_connected
        reply = await nc.request(STREAM_INFO, b"", timeout=TIMEOUT)
        assert b"io.nats.jetstream.api.v1.stream_info_response" in reply.data
    finally:
        await nc.close()


@pytest.mark.parametrize("user", USERS)
async def test_the_default_inbox_is_not_a_clients_or_an_agents(
    deployed: tuple[Fleet, NatsServer], user: str
) -> None:
    """nats-py's ``_INBOX`` prefix gets no reply: the server refuses the reply subscription."""
    fleet, server = deployed
    refused = Refusals()
    nc: Client = await connect(fleet.settings(server.url, user), error_cb=refused.on_error)
    try:
        with pytest.raises(nats.errors.TimeoutError):
            await nc.request(STREAM_INFO, b"", timeout=1.0)
        await refused.at_least(1)
        assert 'permissions violation for subscription to "_inbox.' in refused.errors[0]
    finally:
        await nc.close()


async def test_every_role_still_gets_its_replies(deployed: tuple[Fleet, NatsServer]) -> None:
    """Coordinator, agent and client as deployed: the client's control requests are
    answered on its own inbox (the coordinator may respond there), JetStream acks and
    payload reads reach the agent's and the client's, and the server logs no refusal."""
    fleet, server = deployed
    fleet.coordinator(server.url)
    fleet.agent(server.url, "a1")
    async with await fleet.client(server.url) as client:
        assert client.nc._inbox_prefix.decode() == "_INBOX_client"
        await ready(client, 1, fleet)
        await run_dag(client)
    fleet.close()
    assert fleet.violations() == []
