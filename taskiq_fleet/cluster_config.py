"""What ``fleet up`` starts: the agents a TOML file (or ``--agents N``) describes.

Checked completely before any process starts, with the very parsers ``fleet agent``
uses for its flags (``worker_agent.inventory``), so a file that loads is one every agent
accepts, and each mistake is one line naming the file, the agent and the key.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = [
    "AGENT_KEYS",
    "DEFAULT_APP",
    "AgentConfig",
    "ConfigError",
    "identical_agents",
    "load_config",
    "parse_config",
]

DEFAULT_APP = "taskiq_fleet.demo.tasks:broker"
"""The demo tasks, shipped in the package, so ``fleet up`` serves something after a plain
install."""

TOP_KEYS = ("app", "agent")
AGENT_KEYS = ("name", "app", "cpus", "ram_mb", "gpus", "resources", "labels", "headroom")


class ConfigError(ValueError):
    """The cluster description cannot work; the message names the file, agent and key."""


@dataclass(frozen=True)
class AgentConfig:
    """One local agent: the overrides ``fleet agent`` takes, none meaning "detect"."""

    name: str
    app: str = DEFAULT_APP
    cpus: float | None = None
    ram_mb: int | None = None
    gpus: str | None = None
    """``--gpus`` spec (``1xA100:40960``); ``"0"`` for none; ``None``: detect through NVML."""
    resources: Mapping[str, float] = field(default_factory=dict)
    """Custom countable resources offered (``licenses = 2``): ``fleet agent --resources``."""
    labels: Mapping[str, str] = field(default_factory=dict)
    headroom: str | None = None

    def agent_options(self) -> list[str]:
        """The ``fleet agent`` options that describe this agent (capacity, labels)."""
        options = ["--name", self.name]
        if self.cpus is not None:
            options += ["--cpus", plain_number(self.cpus)]
        if self.ram_mb is not None:
            options += ["--ram-mb", str(self.ram_mb)]
        if self.gpus is not None:
            options += ["--gpus", self.gpus]
        if self.resources:
            options += ["--resources", _pairs(self.resources)]
        if self.labels:
            options += ["--labels", ",".join(f"{k}={v}" for k, v in self.labels.items())]
        if self.headroom is not None:
            options += ["--headroom", self.headroom]
        return options


def plain_number(value: float) -> str:
    """Exact text for the command line: ``2`` not ``2.0``, never ``1e+06``."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _pairs(amounts: Mapping[str, float | str]) -> str:
    """``k=v,...`` for a flag; numbers written exactly, text (``10%``) as given."""
    return ",".join(
        f"{k}={v if isinstance(v, str) else plain_number(v)}" for k, v in amounts.items()
    )


def identical_agents(count: int, app: str = DEFAULT_APP) -> tuple[AgentConfig, ...]:
    """``count`` agents named ``agent-1``...: each detects this host, as ``fleet agent`` does,
    so together they advertise more than the host has; a config file states capacities."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"the number of agents must be a whole number >= 1, got {count!r}")
    _check_app(app, "--app")
    return tuple(AgentConfig(name=f"agent-{i}", app=app) for i in range(1, count + 1))


def load_config(path: Path | str, *, default_app: str = DEFAULT_APP) -> tuple[AgentConfig, ...]:
    """The agents a TOML file describes; ``ConfigError`` (one line) for anything wrong.

    ::

        app = "myproject.tasks:broker"     # optional: default for every agent

        [[agent]]
        name = "gpu"
        cpus = 4
        ram_mb = 8192
        gpus = "1xA100:40960"
        resources = { licenses = 2 }          # or "licenses=2"
        labels = { gpu = true, zone = "eu" }   # or "gpu=true,zone=eu"
        headroom = "cpu=0.5"                   # or { cpu = 0.5, ram_mb = 512 }
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc.reason}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, default_app=default_app, source=str(path))


def parse_config(
    data: Mapping[str, Any], *, default_app: str = DEFAULT_APP, source: str = "config"
) -> tuple[AgentConfig, ...]:
    """Check a parsed cluster description completely: every key known, every value usable
    by ``fleet agent`` (same parsers), names unique; at least one agent."""
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r} (known: {', '.join(TOP_KEYS)}; "
            "agents go in [[agent]] tables)"
        )
    app = data.get("app", default_app)
    if "app" in data:
        _check_app(app, f"{source}: app")
    agents = data.get("agent")
    if agents is None:
        raise ConfigError(f"{source}: no [[agent]] table; describe at least one agent")
    if not isinstance(agents, list) or not all(isinstance(a, dict) for a in agents):
        raise ConfigError(f"{source}: 'agent' must be an array of tables: write [[agent]]")
    if not agents:
        raise ConfigError(f"{source}: no [[agent]] table; describe at least one agent")
    parsed: list[AgentConfig] = []
    seen: set[str] = set()
    for number, table in enumerate(agents, start=1):
        agent = _agent(table, number, app, source)
        if agent.name in seen:
            raise ConfigError(f"{source}: agent {number}: name {agent.name!r} is used twice")
        seen.add(agent.name)
        parsed.append(agent)
    return tuple(parsed)


def _agent(table: Mapping[str, Any], number: int, app: str, source: str) -> AgentConfig:
    from shared.wire.subjects import token

    name = table.get("name", f"agent-{number}")
    where = f"{source}: agent {number}" + (f" ({name!r})" if isinstance(name, str) else "")
    unknown = sorted(set(table) - set(AGENT_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(AGENT_KEYS)})")
    try:
        if not isinstance(name, str):
            raise ValueError(f"must be a string, got {_shown(name)}")
        token(name)
    except ValueError as exc:
        raise ConfigError(f"{where}: name: {exc}") from None
    agent_app = table.get("app", app)
    if "app" in table:
        _check_app(agent_app, f"{where}: app")
    return AgentConfig(
        name=name,
        app=agent_app,
        cpus=_checked(where, "cpus", table, _cpus),
        ram_mb=_checked(where, "ram_mb", table, _ram_mb),
        gpus=_checked(where, "gpus", table, _gpus),
        resources=_checked(where, "resources", table, _resources) or {},
        labels=_checked(where, "labels", table, _labels) or {},
        headroom=_checked(where, "headroom", table, _headroom),
    )


def _checked(
    where: str, key: str, table: Mapping[str, Any], check: Callable[[object], T]
) -> T | None:
    if key not in table:
        return None
    try:
        return check(table[key])
    except ValueError as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None


def _shown(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _check_app(app: object, where: str) -> None:
    if not isinstance(app, str):
        raise ConfigError(f"{where}: must be a string 'module:broker', got {_shown(app)}")
    module, sep, attribute = app.partition(":")
    if not sep or not module.strip() or not attribute.strip():
        raise ConfigError(f"{where}: must look like 'module:broker', got {app!r}")


def _cpus(value: object) -> float:
    from shared.resources import to_milli

    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number of cores, got {_shown(value)}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    to_milli(value, "cpus")
    return float(value)


def _ram_mb(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be a whole number of MB, got {_shown(value)}")
    if value <= 0:
        raise ValueError(f"must be > 0, got {value!r}")
    return value


def _gpus(value: object) -> str:
    from worker_agent.inventory import parse_gpu_spec

    if value == 0 and not isinstance(value, bool):
        return "0"
    if not isinstance(value, str):
        raise ValueError(f"must be a spec like '1xA100:40960' or 0 for none, got {_shown(value)}")
    parse_gpu_spec(value)
    return value.strip() or "0"


def _labels(value: object) -> dict[str, str]:
    from shared.labels import check_label_key, label_value
    from worker_agent.inventory import parse_labels

    if isinstance(value, str):
        return parse_labels(value)
    if not isinstance(value, dict):
        raise ValueError(f"must be a table {{ key = value }} or 'k=v,...', got {_shown(value)}")
    labels: dict[str, str] = {}
    for key, raw in value.items():
        check_label_key(key)
        if isinstance(raw, dict | list) or raw is None:
            raise ValueError(f"{key}: must be a string, number or boolean, got {_shown(raw)}")
        text = label_value(raw)
        if not text or "," in text:
            raise ValueError(f"{key}: value {text!r} must be non-empty and without ','")
        labels[key] = text
    return labels


def _resources(value: object) -> dict[str, float]:
    from worker_agent.inventory import parse_resources

    if isinstance(value, str):
        return parse_resources(value)
    if not isinstance(value, dict):
        raise ValueError(f"must be a table {{ licenses = 2 }} or 'k=N,...', got {_shown(value)}")
    for key, amount in value.items():
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise ValueError(f"{key}: must be a number, got {_shown(amount)}")
    return parse_resources(_pairs(value))


def _headroom(value: object) -> str:
    from worker_agent.inventory import parse_headroom

    if isinstance(value, dict):
        for key, amount in value.items():
            if isinstance(amount, bool) or not isinstance(amount, int | float | str):
                raise ValueError(f"{key}: must be an amount or 'N%', got {_shown(amount)}")
        text = _pairs(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"must be 'cpu=0.5,ram_mb=1024', '10%' or a table, got {_shown(value)}")
    parse_headroom(text)
    return text
