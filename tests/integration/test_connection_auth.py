"""``shared.connection.connect`` against real nats-servers that require credentials.

Checks the behaviour the agents rely on: the first connect fails promptly and says why
(nats-py alone would retry a refused token forever), and once connected the client
outlives a server restart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nkeys  # type: ignore[import-untyped]  # ships no type information
import pytest
from nats.aio.client import Client
from pydantic import SecretStr

from shared.connection import NatsConnectError, NatsSettings, connect
from tests.natsserver import NatsServer, free_port

pytestmark = pytest.mark.integration

# TIMEOUT turns a hang (nats-py retrying forever) into a failure; PROMPT is the promise.
TIMEOUT = 10.0
PROMPT = 5.0
TOKEN_CONFIG = 'authorization { token: "s3cret-token" }\n'
USER_CONFIG = 'authorization { user: "alice", password: "wonder land" }\n'

StartServer = Callable[[str], NatsServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start nats-servers from a config file; every one is stopped when the test ends.

    ``NatsServer`` runs ``nats-server -c CONFIG -a 127.0.0.1 -p PORT`` as a child process
    and waits for its INFO with ``wait_until_ready``; its flags add JetStream and a server
    name that readiness checks against, and ``start()`` again reuses the same port.
    """
    servers: list[NatsServer] = []

    def start(config: str) -> NatsServer:
        base = tmp_path / f"nats-{len(servers)}"
        base.mkdir()
        config_file = base / "nats.conf"
        config_file.write_text(config)
        server = NatsServer(base, extra_args=("-c", str(config_file)))
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


async def roundtrip(client: Client) -> bytes:
    sub = await client.subscribe("auth.check")
    await client.publish("auth.check", b"ping")
    msg = await sub.next_msg(timeout=TIMEOUT)
    await sub.unsubscribe()
    return msg.data


async def test_correct_token_connects(start_server: StartServer) -> None:
    server = start_server(TOKEN_CONFIG)

    client = await connect(
        NatsSettings(servers=(server.url,), token=SecretStr("s3cret-token")), name="test-agent"
    )
    try:
        assert await roundtrip(client) == b"ping"
        assert client.options["max_reconnect_attempts"] == -1
        assert client.options["allow_reconnect"] is True
    finally:
        await client.close()


@pytest.mark.parametrize("token", ["wrong-token", None])
async def test_refused_token_fails_promptly_and_quietly(
    start_server: StartServer, token: str | None
) -> None:
    server = start_server(TOKEN_CONFIG)
    calls: list[str] = []

    async def error_cb(exc: Exception) -> None:
        calls.append(f"error: {exc}")

    async def closed_cb() -> None:
        calls.append("closed")

    settings = NatsSettings(
        servers=(server.url,), token=None if token is None else SecretStr(token)
    )
    started = time.monotonic()
    with pytest.raises(NatsConnectError) as info:
        await asyncio.wait_for(connect(settings, error_cb=error_cb, closed_cb=closed_cb), TIMEOUT)
    elapsed = time.monotonic() - started

    assert str(info.value).startswith("NATS refused the credentials (authorization violation)")
    assert server.url in str(info.value)
    assert elapsed < PROMPT
    assert calls == []


async def test_user_and_password(start_server: StartServer) -> None:
    server = start_server(USER_CONFIG)
    good = NatsSettings(servers=(server.url,), user="alice", password=SecretStr("wonder land"))
    bad = good.model_copy(update={"password": SecretStr("guess")})

    client = await connect(good)
    try:
        assert await roundtrip(client) == b"ping"
    finally:
        await client.close()
    started = time.monotonic()
    with pytest.raises(NatsConnectError, match=r"authorization violation"):
        await asyncio.wait_for(connect(bad), TIMEOUT)
    assert time.monotonic() - started < PROMPT


def new_seed(prefix: int = nkeys.PREFIX_BYTE_USER) -> bytes:
    return bytes(nkeys.encode_seed(os.urandom(32), prefix))


def public_key(seed: bytes) -> str:
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def nkey_config(seed: bytes) -> str:
    return f'authorization {{ users = [ {{ nkey: "{public_key(seed)}" }} ] }}\n'


async def test_nkey_seed_file(start_server: StartServer, tmp_path: Path) -> None:
    seed = new_seed()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed + b"\n")
    server = start_server(nkey_config(seed))

    client = await connect(NatsSettings(servers=(server.url,), nkey_seed=seed_file))
    try:
        assert await roundtrip(client) == b"ping"
    finally:
        await client.close()


async def test_unknown_nkey_is_refused_promptly(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server(nkey_config(new_seed()))
    other_seed = tmp_path / "other.nk"
    other_seed.write_bytes(new_seed())

    started = time.monotonic()
    with pytest.raises(NatsConnectError, match=r"authorization violation"):
        await asyncio.wait_for(
            connect(NatsSettings(servers=(server.url,), nkey_seed=other_seed)), TIMEOUT
        )
    assert time.monotonic() - started < PROMPT


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def issue_jwt(issuer_seed: bytes, subject: str, nats: dict[str, object]) -> str:
    """A NATS v2 JWT for ``subject`` signed by ``issuer_seed``, as ``nsc`` would write it.

    The server checks the ed25519 signature and the claims it uses; ``jti`` is only an
    identifier to it, so a random one stands in for the hash ``nsc`` puts there.
    """
    header = {"typ": "JWT", "alg": "ed25519-nkey"}
    claims = {
        "jti": base64.b32encode(os.urandom(32)).decode().rstrip("="),
        "iat": int(time.time()),
        "iss": public_key(issuer_seed),
        "name": subject[:8],
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = nkeys.from_seed(bytearray(issuer_seed)).sign(signing_input.encode())
    return f"{signing_input}.{_b64(signature)}"


UNLIMITED = {"subs": -1, "data": -1, "payload": -1}
ACCOUNT_LIMITS = {**UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1}


def operator_setup(account_seed: bytes) -> str:
    """Server config for operator (decentralised JWT) mode trusting one account.

    JetStream (which ``NatsServer`` always enables) refuses to start in operator mode
    without a system account, so the operator issues one of those too.
    """
    operator_seed = new_seed(nkeys.PREFIX_BYTE_OPERATOR)
    operator_jwt = issue_jwt(operator_seed, public_key(operator_seed), {"type": "operator"})
    account = public_key(account_seed)
    account_jwt = issue_jwt(operator_seed, account, {"type": "account", "limits": ACCOUNT_LIMITS})
    system = public_key(new_seed(nkeys.PREFIX_BYTE_ACCOUNT))
    system_jwt = issue_jwt(operator_seed, system, {"type": "account", "limits": ACCOUNT_LIMITS})
    return (
        f"operator: {operator_jwt}\n"
        f"system_account: {system}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{ {account}: {account_jwt}, {system}: {system_jwt} }}\n"
    )


def write_creds(path: Path, account_seed: bytes) -> Path:
    user_seed = new_seed()
    user_jwt = issue_jwt(
        account_seed, public_key(user_seed), {"type": "user", "pub": {}, "sub": {}, **UNLIMITED}
    )
    path.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user_seed.decode()}\n"
        "------END USER NKEY SEED------\n"
    )
    return path


async def test_creds_file(start_server: StartServer, tmp_path: Path) -> None:
    account_seed = new_seed(nkeys.PREFIX_BYTE_ACCOUNT)
    server = start_server(operator_setup(account_seed))
    creds = write_creds(tmp_path / "user.creds", account_seed)

    client = await connect(NatsSettings(servers=(server.url,), creds=creds))
    try:
        assert await roundtrip(client) == b"ping"
    finally:
        await client.close()


async def test_creds_from_an_untrusted_account_are_refused_promptly(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server(operator_setup(new_seed(nkeys.PREFIX_BYTE_ACCOUNT)))
    creds = write_creds(tmp_path / "stranger.creds", new_seed(nkeys.PREFIX_BYTE_ACCOUNT))

    started = time.monotonic()
    with pytest.raises(NatsConnectError, match=r"authorization violation"):
        await asyncio.wait_for(connect(NatsSettings(servers=(server.url,), creds=creds)), TIMEOUT)
    assert time.monotonic() - started < PROMPT


async def test_unreachable_server_fails_promptly() -> None:
    url = f"nats://127.0.0.1:{free_port()}"

    started = time.monotonic()
    with pytest.raises(NatsConnectError) as info:
        await asyncio.wait_for(connect(NatsSettings(servers=(url,))), TIMEOUT)
    elapsed = time.monotonic() - started

    assert str(info.value).startswith(f"cannot reach NATS at {url}: ")
    assert elapsed < PROMPT


async def test_one_unreachable_server_in_the_list_is_skipped(start_server: StartServer) -> None:
    server = start_server(TOKEN_CONFIG)
    down = f"nats://127.0.0.1:{free_port()}"

    client = await connect(
        NatsSettings(servers=(down, server.url), token=SecretStr("s3cret-token"))
    )
    try:
        assert await roundtrip(client) == b"ping"
    finally:
        await client.close()


async def test_reconnects_after_server_restart(start_server: StartServer) -> None:
    server = start_server(TOKEN_CONFIG)
    disconnected, reconnected, closed = asyncio.Event(), asyncio.Event(), asyncio.Event()
    retried_while_down = asyncio.Event()
    failures: list[Exception] = []

    async def error_cb(exc: Exception) -> None:
        failures.append(exc)
        # More failures than the bounded first pass allows per server: proves the
        # client switched to unlimited reconnects after connecting.
        if len(failures) >= 4:
            retried_while_down.set()

    async def disconnected_cb() -> None:
        disconnected.set()

    async def reconnected_cb() -> None:
        reconnected.set()

    async def closed_cb() -> None:
        closed.set()

    settings = NatsSettings(
        servers=(server.url,), token=SecretStr("s3cret-token"), reconnect_wait=0.05
    )
    client = await connect(
        settings,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        closed_cb=closed_cb,
    )
    try:
        assert await roundtrip(client) == b"ping"

        await asyncio.to_thread(server.stop)
        await asyncio.wait_for(disconnected.wait(), TIMEOUT)
        await asyncio.wait_for(retried_while_down.wait(), TIMEOUT)
        assert not closed.is_set()

        await asyncio.to_thread(server.start)
        await asyncio.wait_for(reconnected.wait(), TIMEOUT)

        assert client.is_connected
        assert await roundtrip(client) == b"ping"
        assert not closed.is_set()
    finally:
        await client.close()
