"""deploy/nats: nats-server accepts every config, and the roles of accounts.conf work.

- ``nats-server -t`` accepts each ``deploy/nats/*.conf`` (the TLS one with certificates
  made by ``tls/gen-dev-certs.sh``), and refuses one whose password is not set.
- ``accounts.conf`` on a real server: a coordinator, agents and a client, each logged in
  as its own role, run DAGs end to end (values over 1 MiB included, so the payload stream
  permissions are exercised) without a single permission violation in the server's log;
  wrong credentials stop an agent with an authorization error; an agent's credentials
  cannot publish or subscribe on the coordinator's or another agent's subjects, and the
  fleet carries on.
- The cluster configs, plain and TLS, form a real 3-server cluster on loopback that
  carries the fleet. Only what cannot work on one host is changed: the test's flags give
  the addresses, routes and store directory.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from shared.connection import NatsConnectError, NatsSettings, connect, inbox_prefix
from shared.payloads import PayloadStore
from shared.resources import WorkerSpec
from shared.wire.protocol import AttemptRef, Deregister, Outcome, Register, encode
from shared.wire.runs import RunUpdate, Submit
from shared.wire.subjects import Subjects
from taskiq_fleet import CoordinatorClient, Dag, FleetError, Node, WorkerView
from tests.natsserver import NatsServer, find_nats_server, free_port
from tests.processes import ROOT, FleetProcess, agent, coordinator

pytestmark = pytest.mark.integration

DEPLOY = ROOT / "deploy" / "nats"
ACCOUNTS = DEPLOY / "accounts.conf"
GEN_CERTS = DEPLOY / "tls" / "gen-dev-certs.sh"
CONFIGS = sorted(DEPLOY.glob("*.conf"))
NODE_CONFIGS = ("nats-1.conf", "nats-2.conf", "nats-3.conf")

PASSWORD_ENV = {
    "coordinator": "NATS_COORDINATOR_PASSWORD",
    "client": "NATS_CLIENT_PASSWORD",
    "dashboard": "NATS_DASHBOARD_PASSWORD",
    "agent-a1": "NATS_AGENT_A1_PASSWORD",
    "agent-a2": "NATS_AGENT_A2_PASSWORD",
    "agent-a3": "NATS_AGENT_A3_PASSWORD",
    "sys": "NATS_SYS_PASSWORD",
}
TIMEOUT = 60.0
BIG = 1_200_000
"""Characters: over the 1 MiB inline limit, so the value travels through the payload stream."""
REFUSAL_WITHIN = 10.0
"""The server answers a forbidden publish at once; this only bounds a failing test."""
VIOLATION = re.compile(r"\b(Publish|Subscription) Violation\b")
"""How nats-server logs a refused publish or subscription."""


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh password per user, in the environment nats-server reads them from.

    Letters and digits, starting with a letter: nats-server parses a variable's value as
    config text, so ``12345`` would become a number and ``a#b`` would lose ``#b``.
    """
    values = {user: f"pw{secrets.token_hex(12)}" for user in PASSWORD_ENV}
    for user, variable in PASSWORD_ENV.items():
        monkeypatch.setenv(variable, values[user])
    return values


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH; deploy/nats/tls/gen-dev-certs.sh needs it")
    out = tmp_path / "certs"
    result = subprocess.run(
        [str(GEN_CERTS), str(out)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def tls_env(certs: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What nats-tls.conf reads from the environment."""
    monkeypatch.setenv("NATS_SERVER_NAME", "nats-test")
    monkeypatch.setenv("NATS_TLS_CERT", str(certs / "server.pem"))
    monkeypatch.setenv("NATS_TLS_KEY", str(certs / "server-key.pem"))
    monkeypatch.setenv("NATS_TLS_CA", str(certs / "ca.pem"))
    return certs


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(find_nats_server()), "-t", "-c", config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class Fleet:
    """Servers and fleet processes a test started; ``close`` stops the processes, then the
    servers, each by the handle that started it."""

    def __init__(self, tmp_path: Path, passwords: dict[str, str]) -> None:
        self.dir = tmp_path
        self.passwords = passwords
        self.servers: list[NatsServer] = []
        self.processes: list[FleetProcess] = []
        self.certs: Path | None = None
        """With TLS: where gen-dev-certs.sh put the CA and the client certificate."""

    def server(self, name: str, *extra_args: str) -> NatsServer:
        server = NatsServer(self.dir / name, extra_args=extra_args)
        self.servers.append(server)
        return server.start()

    def login(self, user: str, password: str | None = None) -> tuple[str, ...]:
        password = self.passwords[user] if password is None else password
        tls = [arg for field, path in self.tls_files().items() for arg in (f"--{field}", path)]
        return ("--nats-user", user, "--nats-password", password, *tls)

    def tls_files(self) -> dict[str, str]:
        """The client side of TLS, by flag name (``--tls-ca`` ...)."""
        if self.certs is None:
            return {}
        return {
            "tls-ca": str(self.certs / "ca.pem"),
            "tls-cert": str(self.certs / "client.pem"),
            "tls-key": str(self.certs / "client-key.pem"),
        }

    def coordinator(self, url: str) -> FleetProcess:
        proc = coordinator(url, self.dir, *self.login("coordinator"))
        self.processes.append(proc)
        return proc.start()

    def agent(self, url: str, name: str, *login: str) -> FleetProcess:
        proc = agent(url, name, self.dir, *(login or self.login(f"agent-{name}")))
        self.processes.append(proc)
        return proc.start()

    def settings(self, url: str, user: str) -> NatsSettings:
        tls = {flag.replace("-", "_"): path for flag, path in self.tls_files().items()}
        return NatsSettings.model_validate(
            {"servers": (url,), "user": user, "password": self.passwords[user], **tls}
        )

    async def client(self, url: str) -> CoordinatorClient:
        return await CoordinatorClient.connect(self.settings(url, "client"))

    def logs(self) -> str:
        return "\n".join(proc.log() for proc in self.processes)

    def violations(self) -> list[str]:
        """Permission violations every server logged (each server appends to its log)."""
        return [
            line
            for server in self.servers
            for line in server.log_path.read_text(errors="replace").splitlines()
            if VIOLATION.search(line)
        ]

    def close(self) -> None:
        for proc in self.processes:
            proc.stop()
        for server in self.servers:
            server.stop()


@pytest.fixture
def fleet(tmp_path: Path, passwords: dict[str, str]) -> Iterator[Fleet]:
    f = Fleet(tmp_path, passwords)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def server(fleet: Fleet) -> NatsServer:
    """One server with accounts.conf exactly as deployed; the test flags add the address,
    JetStream's store directory and a server name."""
    return fleet.server("nats", "-c", str(ACCOUNTS))


def adding_dag() -> Dag:
    return Dag(
        inputs=("text", "n"),
        nodes=(
            Node(id="shout", task="add", inputs={"a": "text"}, kwargs={"b": "!"}, outputs=("a",)),
            Node(id="louder", task="add", inputs={"a": "a"}, kwargs={"b": "?"}, outputs=("b",)),
            Node(id="sum", task="add", inputs={"a": "n"}, kwargs={"b": 2}, outputs=("total",)),
        ),
    )


async def run_dag(client: CoordinatorClient) -> None:
    """A DAG whose large values go through the payload stream both ways, then every control
    verb the client has."""
    text = "x" * BIG
    run = await client.submit(adding_dag(), {"text": text, "n": 40})
    outputs = await run.result(timeout=TIMEOUT)
    assert outputs["b"] == text + "!?"
    assert outputs["total"] == 42
    assert (await run.status()).status == "succeeded"
    assert run.run_id in {view.run_id for view in await client.runs()}
    with pytest.raises(FleetError, match="cannot cancel"):
        await run.cancel()


async def ready(client: CoordinatorClient, workers: int, fleet: Fleet) -> list[WorkerView]:
    try:
        return await client.wait_ready(workers, within=TIMEOUT)
    except TimeoutError:
        pytest.fail(f"no coordinator with {workers} workers; logs:\n{fleet.logs()[-6000:]}")


async def until_healthy(monitor_ports: list[int], within: float = TIMEOUT) -> None:
    """Until every server's /healthz says ok: routes up and a JetStream meta leader elected.
    Nothing announces that, so this asks every 50 ms."""

    def healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async with asyncio.timeout(within):
        for port in monitor_ports:
            while not await asyncio.to_thread(healthy, port):  # noqa: ASYNC110
                await asyncio.sleep(0.05)


# -- every config is accepted ------------------------------------------------------------------


def test_the_deploy_configs_exist() -> None:
    names = {config.name for config in CONFIGS}
    assert {"accounts.conf", *NODE_CONFIGS, "nats-tls.conf"} <= names
    assert GEN_CERTS.is_file()


@pytest.mark.usefixtures("passwords")
@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
def test_nats_server_accepts_the_config(config: Path, request: pytest.FixtureRequest) -> None:
    if "$NATS_TLS_CERT" in config.read_text():
        request.getfixturevalue("tls_env")
    result = check_config(config)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "is valid" in result.stderr + result.stdout


def test_a_missing_password_is_refused(
    passwords: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV["agent-a2"])
    result = check_config(DEPLOY / "nats-1.conf")
    assert result.returncode != 0
    assert PASSWORD_ENV["agent-a2"] in result.stderr


# -- the roles of accounts.conf on a real server -----------------------------------------------


@pytest.mark.parametrize(
    ("user", "password_of"),
    [("agent-a1", None), ("agent-a1", "agent-a2"), ("agent-a9", "agent-a1")],
    ids=["wrong-password", "another-agents-password", "unknown-user"],
)
def test_an_agent_with_wrong_credentials_exits_with_an_authorization_error(
    fleet: Fleet, server: NatsServer, user: str, password_of: str | None
) -> None:
    password = "pw-wrong" if password_of is None else fleet.passwords[password_of]
    proc = fleet.agent(server.url, "a1", *fleet.login(user, password))

    assert proc.wait(timeout=TIMEOUT) == 1
    log = proc.log()
    assert "NATS refused the credentials (authorization violation)" in log, log[-2000:]
    assert "agent serving" not in log
    assert re.search(rf'authentication error - User "{user}"', server.log_path.read_text())


async def test_each_role_with_its_own_credentials_runs_a_dag(
    fleet: Fleet, server: NatsServer
) -> None:
    fleet.coordinator(server.url)
    fleet.agent(server.url, "a1")
    async with await fleet.client(server.url) as client:
        workers = await ready(client, 1, fleet)
        assert [w.spec.name for w in workers] == ["a1"]
        await run_dag(client)

    fleet.close()  # shutdown paths too (drain, deregister, last checkpoint) must be allowed
    assert fleet.violations() == []


FORBIDDEN_PUBLISH = (
    "fleet.worker.a2.assign",
    "fleet.worker.a2.cancel",
    "fleet.submit",
    "fleet.ack.a2",
    "fleet.agent.heartbeat.a2",
    "fleet.agent.register.a2",
    "fleet.run.some-run",
    "fleet.ctl.cancel",
    "$KV.FLEET_RUNS.live.some-run",
    "$KV.FLEET_RUNS.queued.forged",  # a queued record is resumed as runs after a restart
    "$JS.API.STREAM.DELETE.FLEET_OUTCOMES",
    "$JS.API.CONSUMER.CREATE.FLEET_SUBMISSIONS",
)
FORBIDDEN_SUBSCRIBE = ("fleet.worker.a2.>", "fleet.worker.*.assign", "fleet.submit", "fleet.>")


@pytest.fixture
async def two_agents(fleet: Fleet, server: NatsServer) -> AsyncIterator[CoordinatorClient]:
    fleet.coordinator(server.url)
    fleet.agent(server.url, "a1")
    fleet.agent(server.url, "a2")
    async with await fleet.client(server.url) as client:
        await ready(client, 2, fleet)
        yield client


async def test_an_agent_cannot_act_as_the_coordinator_and_the_fleet_carries_on(
    fleet: Fleet, server: NatsServer, two_agents: CoordinatorClient
) -> None:
    client = two_agents
    errors: list[str] = []
    all_reported = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())
        if len(errors) >= len(FORBIDDEN_PUBLISH) + len(FORBIDDEN_SUBSCRIBE):
            all_reported.set()

    rogue = await as_role(fleet.settings(server.url, "agent-a1"), name="rogue", error_cb=on_error)
    try:
        for subject in FORBIDDEN_PUBLISH:
            await rogue.publish(subject, b'{"type":"heartbeat","version":1}')
        for subject in FORBIDDEN_SUBSCRIBE:
            await rogue.subscribe(subject)
        await rogue.flush(timeout=TIMEOUT)
        try:
            await asyncio.wait_for(all_reported.wait(), REFUSAL_WITHIN)
        except TimeoutError:
            pytest.fail(f"the server refused only these: {errors}")

        reported = "\n".join(errors)
        for subject in FORBIDDEN_PUBLISH:
            assert f'permissions violation for publish to "{subject.lower()}"' in reported
        for subject in FORBIDDEN_SUBSCRIBE:
            assert f'permissions violation for subscription to "{subject.lower()}"' in reported
        logged = "\n".join(fleet.violations())
        for subject in FORBIDDEN_PUBLISH:
            assert f'"FLEET/user:agent-a1" - Publish Violation - Subject "{subject}"' in logged
        for subject in FORBIDDEN_SUBSCRIBE:
            assert f'Subscription Violation - Subject "{subject}"' in logged

        # Refused, not thrown out: the connection may still do what an agent does.
        assert rogue.is_connected
        info = await rogue.jetstream().stream_info("FLEET_OUTCOMES")
        assert info.config.name == "FLEET_OUTCOMES"

        # The fleet is unharmed: both agents serve, and a DAG runs.
        await run_dag(client)
        assert sorted(w.spec.name for w in await client.workers()) == ["a1", "a2"]
    finally:
        await rogue.close()

    assert all(":rogue" in line for line in fleet.violations()), fleet.violations()
    # Nothing the rogue sent reached anyone: a delivered message would have been dropped
    # as malformed, with a log line.
    assert "dropped a malformed message" not in fleet.logs()


# -- the cluster configs, plain and TLS, as a real 3-server cluster ----------------------------


def loopback_copies(tmp_path: Path) -> Path:
    """deploy/nats/*.conf without their ``store_dir`` (nats-server refuses it together with
    the ``-sd`` the test servers get); nothing else differs."""
    out = tmp_path / "conf"
    out.mkdir()
    for config in CONFIGS:
        text, removed = re.subn(r"^[ \t]*store_dir:.*$", "", config.read_text(), flags=re.M)
        assert removed == (0 if config.name == "accounts.conf" else 1), config.name
        (out / config.name).write_text(text)
    return out


@pytest.mark.parametrize("variant", ["plain", "tls"])
async def test_the_cluster_configs_form_a_cluster_that_carries_the_fleet(
    fleet: Fleet, tmp_path: Path, variant: str, request: pytest.FixtureRequest
) -> None:
    configs = loopback_copies(tmp_path)
    if variant == "tls":
        fleet.certs = request.getfixturevalue("tls_env")
        files = [configs / "nats-tls.conf"] * 3
    else:
        files = [configs / name for name in NODE_CONFIGS]
    route_ports = [free_port() for _ in files]
    monitor_ports = [free_port() for _ in files]
    routes = ",".join(f"nats-route://127.0.0.1:{port}" for port in route_ports)
    servers = [
        fleet.server(
            f"nats-{i + 1}",
            *("-c", str(file), "--cluster", f"nats://127.0.0.1:{route_ports[i]}"),
            *("--routes", routes, "-m", str(monitor_ports[i])),
        )
        for i, file in enumerate(files)
    ]
    await until_healthy(monitor_ports)
    scheme = "tls" if variant == "tls" else "nats"
    url = [f"{scheme}://127.0.0.1:{s.port}" for s in servers]

    # The coordinator first: it creates the streams. A clustered nats-server sometimes never
    # answers one of several identical stream creations made at once, and an agent whose
    # creation times out exits (see shared/jetstream.py ensure_streams).
    fleet.coordinator(url[0])
    async with await fleet.client(url[2]) as client:
        await ready(client, 0, fleet)
        fleet.agent(url[1], "a1")
        fleet.agent(url[2], "a2")
        await ready(client, 2, fleet)
        await run_dag(client)

    if variant == "tls":
        plain = fleet.settings(url[0], "client").model_copy(
            update={"tls_cert": None, "tls_key": None}
        )
        # The same login without a client certificate is refused during the handshake: the
        # client sees the server's alert, or a closed connection when it wrote first.
        with pytest.raises(NatsConnectError, match=r"^(TLS with NATS|cannot reach NATS) at"):
            await connect(plain)
        nc = await as_role(fleet.settings(url[0], "client"))
        await nc.close()
    fleet.close()
    assert fleet.violations() == []


# -- hostile peers: an agent or client password reaches no further than its own role ----------

OTHER_AGENTS_SUBJECTS = (
    "fleet.outcome.a2.some-run.some-node",
    "fleet.outcome.a2._batch",
    "fleet.outcome.some-run.some-node",  # an outcome naming no worker at all
    "fleet.agent.register.a2",
    "fleet.agent.heartbeat.a2",
    "fleet.agent.deregister.a2",
    "fleet.client.some-client.a2",  # a direct answer in another agent's name
    "fleet.client.some-client",  # a client's inbox, as if the coordinator pushed to it
)


async def refused(fleet: Fleet, url: str, user: str, send: Any) -> list[str]:
    """What the server refused ``user`` while ``send(nc)`` ran (its error callback)."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await as_role(fleet.settings(url, user), name="rogue", error_cb=on_error)
    try:
        await send(nc)
        await nc.flush(timeout=TIMEOUT)
        async with asyncio.timeout(REFUSAL_WITHIN):
            while not errors:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # the rest of the refusals, if several
        assert nc.is_connected
    finally:
        await nc.close()
    return errors


@pytest.mark.parametrize("subject", OTHER_AGENTS_SUBJECTS)
async def test_an_agent_cannot_publish_on_another_agents_subjects(
    fleet: Fleet, server: NatsServer, subject: str
) -> None:
    async def send(nc: Any) -> None:
        await nc.publish(subject, b"{}")

    errors = await refused(fleet, server.url, "agent-a1", send)
    assert errors == [f'nats: permissions violation for publish to "{subject.lower()}"']


def sleeping_dag(seconds: float) -> Dag:
    return Dag(
        nodes=(Node(id="nap", task="sleep_for", kwargs={"seconds": seconds}, outputs=("s",)),)
    )


async def running_on(run: Any, worker: str) -> AttemptRef:
    """The attempt of node ``nap`` once it runs on ``worker`` (asked every 50 ms)."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            try:
                view = (await run.status()).node("nap")
            except FleetError:  # submitted, not yet applied by the coordinator
                await asyncio.sleep(0.05)
                continue
            if view.status == "running" and view.worker == worker:
                return AttemptRef(run_id=run.run_id, node_id="nap", attempt=view.attempt)
            await asyncio.sleep(0.05)


async def test_the_coordinator_believes_the_subject_not_the_message(
    fleet: Fleet, server: NatsServer
) -> None:
    """With agent a1's own password and only a1's subjects: a deregistration of a2, a ghost
    worker with 1,000 CPUs, and outcomes for the attempt a2 runs (one naming a2, one
    naming a1) are all dropped by the coordinator, logged, and change nothing."""
    fleet.coordinator(server.url)
    fleet.agent(server.url, "a2")
    s = Subjects()
    async with await fleet.client(server.url) as client:
        await ready(client, 1, fleet)
        run = await client.submit(sleeping_dag(3.0), {})
        ref = await running_on(run, "a2")
        ghost = Register(
            spec=WorkerSpec(name="ghost", cpu=1000, ram_mb=1 << 20),
            agent_version="forged",
            pid=1,
            started_at=1.0,
            heartbeat_interval=1.0,
        )
        forged = [
            Outcome(
                ref=ref,
                worker=w,
                status="succeeded",
                return_value="forged",
                started_at=1,
                finished_at=2,
            )
            for w in ("a2", "a1")
        ]
        rogue = await as_role(fleet.settings(server.url, "agent-a1"), name="rogue")
        try:
            await rogue.publish(s.deregister("a1"), encode(Deregister(worker="a2", reason="x")))
            await rogue.publish(s.register("a1"), encode(ghost))
            js = rogue.jetstream()
            for outcome in forged:  # s.outcome("a1", ...), spelt out as a deployment sees it
                await js.publish(f"fleet.outcome.a1.{ref.run_id}.nap", encode(outcome))
            await rogue.flush(timeout=TIMEOUT)
        finally:
            await rogue.close()

        assert (await run.result(timeout=TIMEOUT)) == {"s": 3.0}
        assert [w.spec.name for w in await client.workers()] == ["a2"]
    logged = fleet.logs()
    assert logged.count("dropped a message its sender may not send") == 4, logged[-4000:]
    assert "Traceback" not in logged
    assert "worker left" not in logged


@pytest.mark.parametrize("user", ["client", "agent-a1"])
async def test_no_role_can_replace_delete_or_purge_a_stored_value(
    fleet: Fleet, server: NatsServer, user: str
) -> None:
    """A client's stored value (a finished run's input) and the role's own: the API calls
    are refused by permission, a write on another user's subject by permission, and a
    second write, rollup or delete marker on its own subject by the stream itself."""
    s = Subjects()
    fleet.coordinator(server.url)
    async with await fleet.client(server.url) as client:
        await ready(client, 0, fleet)
        theirs = await PayloadStore(client.nc, s).save(b'"kept"')
    stream = s.payloads_stream

    async def send(nc: Any) -> None:
        for api_call in ("STREAM.PURGE", "STREAM.DELETE", "STREAM.MSG.DELETE"):
            await nc.publish(f"$JS.API.{api_call}.{stream}", b"{}")

    errors = await refused(fleet, server.url, user, send)
    for api_call in ("stream.purge", "stream.delete", "stream.msg.delete"):
        subject = f"$js.api.{api_call}.{stream.lower()}"
        assert f'nats: permissions violation for publish to "{subject}"' in errors, errors

    nc = await as_role(fleet.settings(server.url, user))
    try:
        store = PayloadStore(nc, s)
        mine = await store.save(b'"mine"')
        assert mine.name.startswith(f"{user}.")
        js = nc.jetstream()
        for subject, headers in [
            (s.payload_chunk(theirs.name, 0), None),
            (s.payload_chunk(mine.name, 0), None),
            (s.payload_chunk(mine.name, 0), {"Nats-Rollup": "sub"}),
            (s.payload_chunk(mine.name, 1), {"Nats-Rollup": "all"}),
        ]:
            with pytest.raises((nats.errors.Error, TimeoutError)):
                await js.publish(subject, b'"forged"', headers=headers, timeout=2)
        assert await store.load(theirs) == "kept"
        assert await store.load(mine) == "mine"
    finally:
        await nc.close()


async def test_a_submission_notifying_an_agents_subject_is_refused(
    fleet: Fleet, server: NatsServer
) -> None:
    fleet.coordinator(server.url)
    s = Subjects()
    async with await fleet.client(server.url) as client:
        await ready(client, 0, fleet)
    nc = await as_role(fleet.settings(server.url, "client"))
    try:
        updates: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_update(msg: Any) -> None:
            updates.put_nowait(msg.data)

        await nc.subscribe(s.run_updates("hostile-notify"), cb=on_update)
        submit = Submit(run_id="hostile-notify", dag=sleeping_dag(0.1), notify=s.assign("a1"))
        await nc.jetstream().publish(s.submit, encode(submit))
        update = RunUpdate.model_validate_json(await asyncio.wait_for(updates.get(), TIMEOUT))
    finally:
        await nc.close()
    assert update.status == "failed"
    assert update.run is not None
    assert update.run.error == (
        "submission refused: notify 'fleet.worker.a1.assign' is not a client inbox "
        "(fleet.client.<id>)"
    )


# -- inboxes: each role reads only its own replies -------------------------------------------


async def as_role(settings: NatsSettings, **options: Any) -> Client:
    """A connection as ``fleet agent`` or a client makes it: replies come to the user's own
    inbox prefix (``_INBOX_<user>``), the only inboxes accounts.conf lets it read."""
    return await connect(settings, inbox_prefix=inbox_prefix(settings), **options)
