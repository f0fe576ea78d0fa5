"""Apps written for taskiq-nats move to the fleet by changing the broker line (issue 13,
item 9), with a real nats-server, ``fleet coordinator`` and ``fleet agent`` processes.

One app module, ``tests_app``, is written out for three hosts from ``taskiq_nats_app.py``:
one agent serves it on taskiq-nats's ``NatsBroker``, another on its
``PullBasedJetStreamBroker``, and the submitting process has ``FleetBroker`` in their
place. Only the broker line and its import differ, so the task names (``tests_app:add``)
are the same everywhere, as when a project changes the line in place.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from nats.js.errors import NotFoundError

from tests.e2e.cluster import Cluster
from tests.e2e.test_examples import run_example, worker_of
from tests.processes import ROOT, agent

TEMPLATE = Path(__file__).with_name("taskiq_nats_app.py")
MODULE = "tests_app"
IMPORT = "from taskiq_nats import NatsBroker\n"
BROKER = 'broker = NatsBroker(NATS_URL, queue="tests_app")'
VERSIONS = {
    "nats": (IMPORT, BROKER),
    "jetstream": (
        "from taskiq_nats import PullBasedJetStreamBroker\n",
        "broker = PullBasedJetStreamBroker(NATS_URL)",
    ),
    "fleet": ("from taskiq_fleet import FleetBroker\n", "broker = FleetBroker(NATS_URL)"),
}
"""Per version, the import line and the start of the broker line: the rest of that line
(``.with_middlewares(ResourceLabelsMiddleware())``) and of the module stay as they are."""
UNREACHABLE = "nats://127.0.0.1:1"
"""Where the app's own broker points on the NatsBroker host: a port nothing listens on,
as a host that cannot reach (or has no credentials for) the NATS the app names."""


def write_app(host: Path, version: str) -> Path:
    """``host/tests_app.py``: the template with ``version``'s import and broker lines."""
    source = TEMPLATE.read_text()
    assert source.count(IMPORT) == 1, "the template's import line changed"
    assert source.count(BROKER) == 1, "the template's broker line changed"
    new_import, new_broker = VERSIONS[version]
    host.mkdir(parents=True)
    (host / f"{MODULE}.py").write_text(
        source.replace(IMPORT, new_import).replace(BROKER, new_broker)
    )
    return host


def load_app(host: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``tests_app`` from ``host``, in this process until the test ends."""
    spec = importlib.util.spec_from_file_location(MODULE, host / f"{MODULE}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, MODULE, module)  # taskiq's decorator looks it up there
    spec.loader.exec_module(module)
    return module


async def start(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_coordinator()
    hosts = {
        "nats": ("big", UNREACHABLE, ["--cpus", "4", "--ram-mb", "8192"]),
        "jetstream": (
            "ssd",
            cluster.url,
            ["--cpus", "2", "--ram-mb", "2048", "--labels", "disk=ssd"],
        ),
    }
    for version, (name, app_nats, flags) in hosts.items():
        env = {
            "PYTHONPATH": str(write_app(tmp_path / "hosts" / version, version)),
            "APP_NATS": app_nats,
        }
        cluster.agents[name] = agent(
            cluster.url, name, cluster.log_dir, *flags, app=f"{MODULE}:broker", env=env
        ).start()
    try:
        await cluster.connect(workers=len(hosts))
    except TimeoutError:
        pytest.fail(f"the agents did not all register; their logs:\n{cluster.logs()[-3000:]}")


async def test_taskiq_nats_tasks_are_served_and_submitted_by_swapping_the_broker(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await start(cluster, tmp_path)
    monkeypatch.setenv("APP_NATS", cluster.url)
    app = load_app(write_app(tmp_path / "hosts" / "client", "fleet"), monkeypatch)
    await app.broker.startup()
    try:
        tasks = [await app.add.kiq(2, 3), await app.heavy.kiq(10), await app.checksum.kiq("ab")]
        results = [await task.wait_result(timeout=30) for task in tasks]
        assert [r.return_value for r in results] == [5, 45, 195], [r.error for r in results]
        views = [await app.broker.connected().status(task.task_id) for task in tasks]
    finally:
        await app.broker.shutdown()
    assert None not in views
    assert [view.nodes[0].task for view in views if view] == [
        "tests_app:add",
        "tests_app:heavy",
        "tests_app:checksum",
    ]
    workers = [view.nodes[0].worker for view in views if view]
    assert workers[1:] == ["big", "ssd"]  # 4 GB: only the NatsBroker host; disk=ssd: the other
    assert cluster.client is not None
    with pytest.raises(NotFoundError):  # the JetStream app's transport was never set up
        await cluster.client.nc.jetstream().stream_info("taskiq_jetstream")


def test_the_examples_moved_module_differs_in_the_broker_line_and_imports_only() -> None:
    def body(name: str) -> list[str]:
        lines = (ROOT / "examples" / f"{name}.py").read_text().splitlines()
        return [line for line in lines if line and not line.startswith(("from ", "broker ="))]

    assert body("taskiq_nats_tasks") == body("taskiq_nats_moved")


def test_the_example_serves_a_taskiq_nats_app_and_submits_through_the_fleet() -> None:
    out = run_example("from_taskiq_nats")
    assert "resize('cat.png', 64) -> 'cat.png@64px'" in out
    assert worker_of(out, "images.resize") == "bigmem"
    assert "count_words('to be or not to be') -> 6" in out
    assert worker_of(out, "text.count_words") in {"cpu", "bigmem"}
