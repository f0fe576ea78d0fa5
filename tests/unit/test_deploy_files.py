"""deploy/ is checked without Docker, systemd or a cluster.

Every YAML file parses; compose, Kubernetes and systemd files have the structure the
walkthrough in deploy/README.md relies on; and every ``fleet ...`` command line they run
is accepted by the real ``fleet`` argument parser, with the environment it would run
with (env files, ConfigMaps, compose ``environment:``), so a renamed flag or a typo in a
``FLEET_*`` variable fails here rather than on a production host. Stop timeouts are
checked against the drain the command line asks for.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.connection import settings_from_args
from shared.wire.subjects import Subjects, token
from taskiq_fleet.cli import build_parser
from worker_agent.inventory import parse_gpu_spec, parse_headroom, parse_labels

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
ACCOUNTS = DEPLOY / "nats" / "accounts.conf"
NATS_VALUES = KUBERNETES / "nats-values.yaml"
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"

# After --drain-timeout the agent still stores its outcomes for up to 10 s, then
# deregisters (docs/architecture.md, "Drain"); a stop timeout must cover both.
OUTCOME_FLUSH_SECONDS = 10
# Sources of the FLEET_* variables `fleet agent` / `fleet coordinator` read.
ENV_SOURCES = {
    "agent": ("shared/connection.py", "shared/logging.py", "worker_agent/cli.py"),
    "coordinator": ("shared/connection.py", "shared/logging.py", "coordinator/cli.py"),
}

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# -- running a command line through the real parser ---------------------------------------------


def parse_fleet(
    argv: list[str], env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> argparse.Namespace:
    """``fleet``'s own parser on ``argv`` with ``env`` as the whole FLEET_* environment.

    The parser takes some defaults from the environment when it is built (agent name,
    labels, prefix, log level and format), so it is built after the environment is set.
    Beyond argparse, the checks ``fleet`` makes before connecting: NATS options, the
    worker name, labels, headroom and GPU spec.
    """
    assert argv, "empty command line"
    assert Path(argv[0]).name == "fleet", f"not a fleet command line: {shlex.join(argv)}"
    env = {k: v for k, v in env.items() if k.startswith("FLEET_")}
    for key in [k for k in os.environ if k.startswith("FLEET_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    parser, _ = build_parser()
    try:
        args = parser.parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"`fleet` rejects {shlex.join(argv)} (exit {exc.code}); see stderr")
    settings_from_args(args, environ=env)
    if args.command == "agent":
        assert re.fullmatch(r"[\w.]+:[\w.]+", args.app), f"APP {args.app!r} is not module:attr"
        if args.name:
            token(args.name)
        parse_labels(args.labels)
        parse_headroom(args.headroom)
        if args.gpus is not None:
            parse_gpu_spec(args.gpus)
    return args


def seconds(duration: str | int | float) -> float:
    """Compose durations: ``45s``, ``1m30s``, ``500ms``, or a plain number of seconds."""
    if isinstance(duration, int | float):
        return float(duration)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def nats_bytes(text: str) -> int:
    """NATS config sizes: ``64G`` is 64 * 10**9 bytes, ``56Gi`` 56 * 2**30."""
    match = re.fullmatch(r"(\d+)\s*([KMGT]?)(i?)B?", text.strip(), re.IGNORECASE)
    assert match, f"not a NATS size: {text!r}"
    number, unit, binary = match.groups()
    power = "KMGT".find(unit.upper()) + 1 if unit else 0
    return int(number) * (1024 if binary else 1000) ** power


# -- every YAML file -------------------------------------------------------------------------------


def test_deploy_has_yaml_files() -> None:
    assert COMPOSE in YAML_FILES
    assert NATS_VALUES in YAML_FILES
    assert len([p for p in YAML_FILES if p.parent == KUBERNETES]) >= 5


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_every_yaml_file_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{rel(path)} holds no document"
    assert all(isinstance(doc, dict) for doc in docs), f"{rel(path)}: a document is not a mapping"


# -- compose -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (doc,) = load_all(COMPOSE)
    return doc


def fleet_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services running the taskiq-fleet image, whose entrypoint is `fleet`."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if "build" in svc or str(svc.get("image", "")).startswith("taskiq-fleet")
    }


def service_argv(svc: dict[str, Any]) -> list[str]:
    command = svc["command"]
    return ["fleet", *(shlex.split(command) if isinstance(command, str) else map(str, command))]


def agent_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in fleet_services(compose).items() if service_argv(s)[1] == "agent"}


def service_env(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_has_nats_a_coordinator_and_three_agents(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"nats", "coordinator"} <= services.keys()
    assert service_argv(services["coordinator"])[1] == "coordinator"
    assert len(agent_services(compose)) >= 3


def test_compose_fleet_command_lines_parse(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, svc in fleet_services(compose).items():
        env = service_env(svc)
        parse_fleet(service_argv(svc), env, monkeypatch)
        test = (svc.get("healthcheck") or {}).get("test") or []
        if test[:2] == ["CMD", "fleet"]:
            parse_fleet(test[1:], env, monkeypatch)
        assert svc.get("depends_on", {}).get("nats", {}).get("condition") == "service_healthy", (
            f"{name} must wait for a healthy NATS"
        )


def test_compose_agents_differ_and_log_in_as_their_own_user(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    shapes, names = set(), []
    for name, svc in agent_services(compose).items():
        env = service_env(svc)
        args = parse_fleet(service_argv(svc), env, monkeypatch)
        assert args.name, f"{name}: give the agent a --name (its NATS user is agent-<name>)"
        names.append(args.name)
        assert env.get("FLEET_NATS_USER") == f"agent-{args.name}", name
        assert "FLEET_NATS_PASSWORD" in env, name
        shapes.add((args.cpus, args.ram_mb, svc.get("cpus"), svc.get("mem_limit"), args.labels))
    assert len(set(names)) == len(names), f"agent names repeat: {names}"
    assert len(shapes) == len(names), "the agents should differ in capacity or labels"


def test_compose_stop_grace_period_covers_the_drain(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, svc in agent_services(compose).items():
        args = parse_fleet(service_argv(svc), service_env(svc), monkeypatch)
        grace = seconds(svc.get("stop_grace_period", "10s"))  # Docker's default
        assert grace > args.drain_timeout + OUTCOME_FLUSH_SECONDS, (
            f"{name}: stop_grace_period {grace:g}s does not cover --drain-timeout "
            f"{args.drain_timeout:g} + {OUTCOME_FLUSH_SECONDS}s; Docker would SIGKILL mid-drain"
        )
        assert svc.get("stop_signal", "SIGTERM") == "SIGTERM", name


def test_compose_gpu_agent_reserves_an_nvidia_device(compose: dict[str, Any]) -> None:
    gpu_agents = []
    for name, svc in agent_services(compose).items():
        reservations = svc.get("deploy", {}).get("resources", {}).get("reservations", {})
        for device in reservations.get("devices", []):
            if device.get("driver") == "nvidia" and "gpu" in device.get("capabilities", []):
                gpu_agents.append(name)
    assert len(gpu_agents) == 1, gpu_agents
    # The --gpus override is offered, commented out, as the alternative without a GPU.
    assert re.search(r"#\s*- --gpus[= ]\S+", COMPOSE.read_text())


def test_compose_nats_is_checked_and_mounts_existing_files(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    assert "healthz" in " ".join(nats["healthcheck"]["test"])
    here = COMPOSE.parent
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (here / source).exists(), f"{name} mounts missing {source}"
        if "build" in svc:
            context = here / svc["build"]["context"]
            assert (context / svc["build"]["dockerfile"]).is_file(), name


# -- Kubernetes --------------------------------------------------------------------------------


def kubernetes_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in YAML_FILES:
        if path.parent == KUBERNETES and path not in (NATS_VALUES, KUSTOMIZATION):
            for doc in load_all(path):
                yield path, doc


def manifests(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in kubernetes_documents() if d["kind"] == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def test_every_kubernetes_document_is_a_named_object() -> None:
    for path, doc in kubernetes_documents():
        where = f"{rel(path)}: {doc.get('kind')}"
        assert doc.get("apiVersion"), f"{where} lacks apiVersion"
        assert doc.get("kind"), f"{where} lacks kind"
        assert doc.get("metadata", {}).get("name"), f"{where} has no metadata.name"


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = load_all(KUSTOMIZATION)
    listed = {KUBERNETES / r for r in kustomization["resources"]}
    assert all(p.is_file() for p in listed), listed
    examples = {KUBERNETES / "secrets.example.yaml"}
    assert listed == {p for p, _ in kubernetes_documents()} - examples


def test_two_coordinators_are_updated_one_at_a_time() -> None:
    deployment = manifests("Deployment")["fleet-coordinator"]
    assert deployment["spec"]["replicas"] == 2
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 1, "maxSurge": 0}


def test_compose_runs_two_coordinators(compose: dict[str, Any]) -> None:
    assert compose["services"]["coordinator"]["deploy"]["replicas"] == 2


def test_agent_daemonset_names_agents_after_their_node() -> None:
    (container,) = pod_spec(manifests("DaemonSet")["fleet-agent"])["containers"]
    env = {e["name"]: e for e in container["env"]}
    field = env["FLEET_AGENT_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "spec.nodeName"


def test_gpu_daemonset_runs_on_gpu_nodes_only_and_the_other_one_elsewhere() -> None:
    daemonsets = manifests("DaemonSet")
    gpu = pod_spec(daemonsets["fleet-agent-gpu"])
    assert gpu["nodeSelector"], "the GPU DaemonSet needs a nodeSelector"
    (container,) = gpu["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    # Both on one node would be two agents with one name (the node's).
    cpu = pod_spec(daemonsets["fleet-agent"])
    terms = cpu["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    excluded = {
        (e["key"], value)
        for term in terms["nodeSelectorTerms"]
        for e in term["matchExpressions"]
        if e["operator"] == "NotIn"
        for value in e["values"]
    }
    assert set(gpu["nodeSelector"].items()) <= excluded


def configmap_env() -> dict[str, str]:
    return {str(k): str(v) for k, v in manifests("ConfigMap")["fleet-config"]["data"].items()}


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment Kubernetes gives a container, with downward-API fields filled in."""
    env = configmap_env() if container.get("envFrom") else {}
    for item in container.get("env", []):
        field = item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        env[item["name"]] = (
            "ip-10-0-1-7.ec2.internal"
            if field == "spec.nodeName"
            else item.get("value", "from-a-secret")
        )
    for ref in container.get("envFrom", []):
        if "secretRef" in ref:  # FLEET_NATS_USER / FLEET_NATS_PASSWORD (secrets.example.yaml)
            secret = manifests("Secret")[ref["secretRef"]["name"]]
            env.update({k: str(v) for k, v in secret["stringData"].items()})
    return env


FAKE_FLEET = """#!{python}
import json, os, sys
with open(os.environ["CAPTURE"], "w") as out:
    json.dump({{"argv": ["fleet", *sys.argv[1:]], "env": dict(os.environ)}}, out)
"""


def run_wrapper(
    script: str, env: dict[str, str], tmp_path: Path, passwords: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run a container's `sh -c` script with a stand-in `fleet` that records how it ran."""
    sh = shutil.which("sh")
    if sh is None:
        pytest.skip("no POSIX sh here to run the container's wrapper script")
    bin_dir, secret_dir = tmp_path / "bin", tmp_path / "agent-passwords"
    for directory in (bin_dir, secret_dir):
        directory.mkdir(exist_ok=True)
    fake = bin_dir / "fleet"
    fake.write_text(FAKE_FLEET.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    for key, value in passwords.items():
        (secret_dir / key).write_text(value)
    script = script.replace("/etc/fleet/agent-passwords", str(secret_dir))
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    run_env = {**env, "PATH": path, "CAPTURE": str(tmp_path / "capture.json")}
    return subprocess.run(
        [sh, "-c", script], env=run_env, capture_output=True, text=True, timeout=30, check=False
    )


def kubernetes_argv(container: dict[str, Any], tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The fleet command line a container runs and its environment."""
    env = container_env(container)
    command, args = container.get("command"), list(container.get("args", []))
    if command is None:  # the image's entrypoint: fleet
        return ["fleet", *args], env
    assert command[:2] == ["/bin/sh", "-c"], command
    done = run_wrapper(args[0], env, tmp_path, {"ip-10-0-1-7-ec2-internal": "s3cret"})
    assert done.returncode == 0, done.stderr
    captured = json.loads((tmp_path / "capture.json").read_text())
    return captured["argv"], captured["env"]


def fleet_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
        for name, workload in manifests(kind).items():
            for container in pod_spec(workload)["containers"]:
                yield name, container


def test_kubernetes_fleet_command_lines_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = set()
    for name, container in fleet_containers():
        argv, env = kubernetes_argv(container, tmp_path)
        args = parse_fleet(argv, env, monkeypatch)
        seen.add(args.command)
        probe = container.get("livenessProbe", {}).get("exec", {}).get("command")
        if probe and probe[0] == "fleet":
            parse_fleet(probe, env, monkeypatch)
        if args.command == "agent":
            # What the agent wrapper made of the node name ip-10-0-1-7.ec2.internal.
            assert env["FLEET_AGENT_NAME"] == "ip-10-0-1-7-ec2-internal", name
            assert env["FLEET_NATS_USER"] == "agent-ip-10-0-1-7-ec2-internal", name
            assert env["FLEET_NATS_PASSWORD"] == "s3cret", name
    assert seen == {"agent", "coordinator"}


def test_agent_wrapper_refuses_a_node_without_a_password(tmp_path: Path) -> None:
    (container,) = pod_spec(manifests("DaemonSet")["fleet-agent"])["containers"]
    done = run_wrapper(container["args"][0], container_env(container), tmp_path, {})
    assert done.returncode == 2
    assert "fleet-agent-passwords" in done.stderr
    assert not (tmp_path / "capture.json").exists()


def test_termination_grace_covers_the_agents_drain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, daemonset in manifests("DaemonSet").items():
        spec = pod_spec(daemonset)
        (container,) = spec["containers"]
        args = parse_fleet(*kubernetes_argv(container, tmp_path), monkeypatch)
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > args.drain_timeout + OUTCOME_FLUSH_SECONDS, (
            f"{name}: terminationGracePeriodSeconds {grace} does not cover --drain-timeout "
            f"{args.drain_timeout:g} + {OUTCOME_FLUSH_SECONDS}s; the kubelet SIGKILLs mid-drain"
        )


def test_kubernetes_references_name_objects_that_exist() -> None:
    configmaps, secrets = manifests("ConfigMap"), manifests("Secret")
    for name, container in fleet_containers():
        for ref in container.get("envFrom", []):
            if "configMapRef" in ref:
                assert ref["configMapRef"]["name"] in configmaps, name
            if "secretRef" in ref:
                assert ref["secretRef"]["name"] in secrets, name
    for name, workload in manifests("DaemonSet").items():
        for volume in pod_spec(workload).get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, name
    (values,) = load_all(NATS_VALUES)
    for ref in values["container"]["merge"]["envFrom"]:
        assert ref["secretRef"]["name"] in secrets


# -- NATS Helm values and JetStream limits ------------------------------------------------------


def account_limits() -> dict[str, int]:
    """The FLEET account's JetStream limits in accounts.conf (a server must offer as much)."""
    if not ACCOUNTS.is_file():
        pytest.skip(f"{rel(ACCOUNTS)} is not there")
    text = ACCOUNTS.read_text()
    limits = {k: re.search(rf"\b{k}\s*[:=]\s*(\w+)", text) for k in ("max_memory", "max_file")}
    return {k: nats_bytes(m.group(1)) for k, m in limits.items() if m is not None}


def test_nats_values_make_a_three_server_jetstream_cluster() -> None:
    (values,) = load_all(NATS_VALUES)
    config = values["config"]
    assert config["cluster"]["enabled"] is True
    assert config["cluster"]["replicas"] == 3
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert any(key.endswith("$include") for key in config["merge"])


def test_servers_offer_at_least_the_account_jetstream_limits() -> None:
    limits = account_limits()
    (values,) = load_all(NATS_VALUES)
    jetstream = values["config"]["jetstream"]
    offered = {
        "helm max_file": nats_bytes(jetstream["fileStore"]["maxSize"]),
        "helm max_memory": nats_bytes(jetstream["memoryStore"]["maxSize"])
        if jetstream["memoryStore"]["enabled"]
        else 0,
    }
    assert nats_bytes(jetstream["fileStore"]["maxSize"]) <= nats_bytes(
        jetstream["fileStore"]["pvc"]["size"]
    )
    compose_conf = (COMPOSE.parent / "nats.conf").read_text()
    for key in ("max_memory", "max_file"):
        found = re.search(rf"\b{key}_store\s*[:=]\s*(\w+)", compose_conf)
        assert found, f"compose nats.conf sets no {key}_store"
        offered[f"compose {key}"] = nats_bytes(found.group(1))
    for where, amount in offered.items():
        needed = limits.get(where.split()[1], 0)
        assert amount >= needed, f"{where} {amount} < the FLEET account's {needed}: no JetStream"


def test_compose_agents_have_nats_users() -> None:
    if not ACCOUNTS.is_file():
        pytest.skip(f"{rel(ACCOUNTS)} is not there")
    users = set(re.findall(r"\buser\s*:\s*([\w-]+)", ACCOUNTS.read_text()))
    (compose,) = load_all(COMPOSE)
    for name, svc in agent_services(compose).items():
        user = service_env(svc)["FLEET_NATS_USER"]
        assert user in users, f"{name} logs in as {user}, which {rel(ACCOUNTS)} does not define"


AGENT_USERS = DEPLOY / "nats" / "agent-users.sh"


def agent_users(*names: str, prefix: str = "fleet") -> str:
    env = {**os.environ, "FLEET_PREFIX": prefix}
    result = subprocess.run(
        ["sh", str(AGENT_USERS), *names], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout


def allowed(block: str, direction: str) -> list[str]:
    """The subjects of one user's ``<direction> = { allow = [...] }``."""
    found = re.search(rf"{direction}\s*=\s*{{\s*allow\s*=\s*\[(.*?)\]", block, re.S)
    assert found, direction
    return re.findall(r'"([^"]+)"', found.group(1))


def test_agent_users_in_accounts_conf_are_what_the_script_prints() -> None:
    """One block per agent (nats-server has no permission templates for config users);
    the script makes them, so the three examples cannot drift apart."""
    text = ACCOUNTS.read_text()
    names = re.findall(r"\buser\s*:\s*agent-([\w-]+)", text)
    assert names == ["a1", "a2", "a3"]
    assert agent_users(*names) in text


@pytest.mark.parametrize("prefix", ["fleet", "prod.fleet-2"])
def test_an_agent_user_may_publish_only_on_subjects_naming_it(prefix: str) -> None:
    s = Subjects(prefix)
    publish = allowed(agent_users("gpu-1", prefix=prefix), "publish")
    fleet_subjects = [p for p in publish if p.startswith(f"{prefix}.")]
    assert tuple(fleet_subjects) == (*s.agent_publish("gpu-1"), s.payload_writer("agent-gpu-1"))
    assert allowed(agent_users("gpu-1", prefix=prefix), "subscribe") == [
        *s.agent_subscribe("gpu-1"),
        "_INBOX_agent-gpu-1.>",
    ]
    assert {p for p in publish if p.startswith("$")} == {
        f"$JS.API.STREAM.{verb}.{stream}"
        for verb in ("INFO", "CREATE")
        for stream in (s.outcomes_stream, s.submissions_stream, s.payloads_stream)
    } | {f"$JS.API.DIRECT.GET.{s.payloads_stream}.>"}
    assert s.payload_writer("agent-gpu-1") in publish


def test_the_script_refuses_a_name_that_is_no_worker_name() -> None:
    result = subprocess.run(
        ["sh", str(AGENT_USERS), "a.b"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2
    assert "not a worker name" in result.stderr


def test_no_agent_or_client_may_purge_delete_or_write_another_users_payloads() -> None:
    text = ACCOUNTS.read_text()
    client = text[text.index("CLIENT_PERMISSIONS = {") : text.index("accounts {")]
    agents = re.split(r"\buser\s*:\s*agent-", text)[1:]
    blocks = [("client", client)] + [(f"agent-{b.split()[0]}", b) for b in agents]
    for user, block in blocks:
        for subject in allowed(block, "publish"):
            assert not re.search(r"PURGE|DELETE|\$O\.|\$KV\.", subject), subject
            assert not subject.startswith("$JS.API.>"), subject
            if ".payload." in subject:
                assert subject == Subjects().payload_writer(user), (user, subject)


# -- systemd -----------------------------------------------------------------------------------

UNITS = {
    "agent": SYSTEMD / "fleet-agent@.service",
    "coordinator": SYSTEMD / "fleet-coordinator.service",
}
ENV_EXAMPLES = {
    "agent": SYSTEMD / "agent.env.example",
    "coordinator": SYSTEMD / "coordinator.env.example",
}
INSTANCE = "a1"
SPECIFIERS = {"%i": INSTANCE, "%I": INSTANCE, "%S": "/var/lib", "%C": "/var/cache", "%%": "%"}


def unit_lines(path: Path) -> list[str]:
    """Logical lines: systemd joins a line ending in a backslash with the next one."""
    return path.read_text().replace("\\\n", " ").splitlines()


def unit_values(path: Path, key: str) -> list[str]:
    prefix = f"{key}="
    return [line[len(prefix) :].strip() for line in unit_lines(path) if line.startswith(prefix)]


def specifiers(text: str) -> str:
    return re.sub(r"%.", lambda m: SPECIFIERS.get(m.group(0), m.group(0)), text)


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as systemd reads them; commented-out examples are not set."""
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("\"'")
    return env


def unit_env(role: str) -> dict[str, str]:
    """Environment= defaults of the unit, then its EnvironmentFile= (which wins)."""
    env = {}
    for value in unit_values(UNITS[role], "Environment"):
        for assignment in shlex.split(specifiers(value)):
            key, _, val = assignment.partition("=")
            env[key] = val
    return env | env_file(ENV_EXAMPLES[role])


def exec_start(role: str) -> list[str]:
    """ExecStart= with specifiers and $VAR / ${VAR} expanded as systemd does."""
    (line,) = unit_values(UNITS[role], "ExecStart")
    env, argv = unit_env(role), []
    for word in shlex.split(specifiers(line)):
        whole = re.fullmatch(r"\$(\w+)", word)
        if whole:  # $VAR: split on whitespace, zero or more words
            argv.extend(env.get(whole.group(1), "").split())
        else:  # ${VAR}: one word
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


@pytest.mark.parametrize("role", sorted(UNITS))
def test_units_parse_with_the_sections_systemd_needs(role: str) -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string(UNITS[role].read_text())
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert service["ExecStart"].split()[1] == role
    assert service["Restart"] == "on-failure"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] in ("strict", "full")
    assert any(
        v.startswith(f"/etc/fleet/{role}") for v in unit_values(UNITS[role], "EnvironmentFile")
    )


@pytest.mark.parametrize("role", sorted(UNITS))
def test_unit_command_lines_parse_with_the_example_environment(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = exec_start(role)
    assert Path(argv[0]).is_absolute(), f"systemd wants an absolute path: {argv[0]}"
    args = parse_fleet(argv, unit_env(role), monkeypatch)
    assert args.command == role


@pytest.mark.parametrize("role", sorted(UNITS))
def test_env_examples_use_only_variables_fleet_or_the_unit_reads(role: str) -> None:
    read = set()
    for source in ENV_SOURCES[role]:
        read |= set(re.findall(r"\bFLEET_[A-Z0-9_]+\b", (ROOT / source).read_text()))
    (line,) = unit_values(UNITS[role], "ExecStart")
    read |= set(re.findall(r"\$\{?(FLEET_\w+)", line))
    mentioned = set(re.findall(r"^#?(FLEET_\w+)=", ENV_EXAMPLES[role].read_text(), re.MULTILINE))
    mentioned |= {k for k in unit_env(role) if k.startswith("FLEET_")}
    assert mentioned - read == set(), f"{role}: variables nothing reads"
    assert {"FLEET_NATS", "FLEET_NATS_PASSWORD", "FLEET_LOG_FORMAT"} <= mentioned


def test_agent_unit_drains_before_systemd_kills() -> None:
    unit = UNITS["agent"]
    (line,) = unit_values(unit, "ExecStart")
    drain = float(re.search(r"--drain-timeout[= ](\S+)", line).group(1))
    (stop,) = unit_values(unit, "TimeoutStopSec")
    assert float(stop) > drain + OUTCOME_FLUSH_SECONDS
    assert unit_values(unit, "KillSignal") == ["SIGTERM"]
    # SIGTERM to the agent only; processes its tasks started are not killed mid-drain.
    assert unit_values(unit, "KillMode") == ["mixed"]
    assert unit_values(unit, "EnvironmentFile") == ["/etc/fleet/agent-%i.env"]


def test_agent_unit_hardening_keeps_capacity_detection_working() -> None:
    """Options that would hide what the agent measures: /proc/meminfo, the GPU devices."""
    unit = UNITS["agent"]
    assert unit_values(unit, "NoNewPrivileges") == ["yes"]
    assert unit_values(unit, "ProcSubset") in ([], ["all"])
    for hides_gpus in ("PrivateDevices", "DeviceAllow", "ProtectClock"):
        assert unit_values(unit, hides_gpus) in ([], ["no"]), hides_gpus
    assert unit_values(unit, "DevicePolicy") in ([], ["auto"])


# -- the image ---------------------------------------------------------------------------------


def test_dockerfile_installs_the_package_with_fleet_as_entrypoint() -> None:
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["fleet"\]$', dockerfile, re.MULTILINE)
    for line in re.findall(r"^COPY (?!--)(.+)$", dockerfile, re.MULTILINE):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"the Dockerfile copies missing {source}"


# -- inboxes: each user reads only its own replies ------------------------------------------------


@pytest.mark.parametrize("name", ["a1", "gpu-node-1", "x_2"])
def test_an_agent_user_subscribes_to_the_inbox_prefix_its_connection_uses(name: str) -> None:
    """The script's inbox permission and the prefix ``fleet agent`` connects with agree."""
    from shared.connection import NatsSettings, inbox_prefix

    settings = NatsSettings.model_validate({"user": f"agent-{name}", "password": "pw"})
    subscribe = allowed(agent_users(name), "subscribe")
    assert f"{inbox_prefix(settings)}.>" in subscribe
    assert not any(s.startswith("_INBOX.") for s in subscribe)


def test_no_client_or_agent_may_subscribe_to_every_inbox() -> None:
    text = ACCOUNTS.read_text()
    client = text[text.index("CLIENT_PERMISSIONS = {") : text.index("accounts {")]
    assert allowed(client, "subscribe") == ["fleet.run.>", "fleet.client.>", "_INBOX_client.>"]
    for block in re.split(r"\buser\s*:\s*agent-", text)[1:]:
        name = re.match(r"[\w-]+", block)
        assert name is not None
        assert allowed(block, "subscribe")[-1] == f"_INBOX_agent-{name.group(0)}.>"
    coordinator = text[text.index("COORDINATOR_PERMISSIONS = {") : text.index("CLIENT_PERMISSIONS")]
    assert re.search(r"allow_responses\s*=\s*true", coordinator)
