"""The package layout holds: who may import whom, no import cycles, a pure core.

Every import counts here, including those inside functions and under ``TYPE_CHECKING``:
a lazy import hides a cycle from the interpreter, not from a reader.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("taskiq_fleet", "coordinator", "worker_agent", "shared")
MAY_IMPORT = {
    "taskiq_fleet": {"taskiq_fleet", "coordinator", "worker_agent", "shared"},
    "coordinator": {"coordinator", "shared"},
    "worker_agent": {"worker_agent", "shared"},
    "shared": {"shared"},
}
PURE_CORE = (
    "coordinator.placement.pool",
    "coordinator.placement.explain",
    "coordinator.placement.policies",
    "coordinator.placement.stack",
    "coordinator.scheduling.machine",
    "coordinator.scheduling.views",
    "coordinator.scheduling.batches",
    "coordinator.leadership",
)
IO_MODULES = ("taskiq", "nats", "asyncio", "structlog")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(path: Path, known: set[str]) -> Iterator[str]:
    """Our modules that ``path`` imports anywhere in its text."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in known:
                yield name
                if isinstance(node, ast.ImportFrom):
                    break


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imported(path, known)) - {name} for name, path in found.items()}


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return seen


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others."""
    reach = {node: reachable(edges, node) for node in edges}
    groups = {tuple(sorted(n for n in reach[node] if node in reach[n])) for node in edges}
    return sorted(list(group) for group in groups if group)


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_it_may(package: str) -> None:
    wrong = {
        (module, target)
        for module, targets in graph().items()
        if module.split(".")[0] == package
        for target in targets
        if target.split(".")[0] not in MAY_IMPORT[package]
    }
    assert wrong == set()


def test_the_pure_core_loads_no_io_library() -> None:
    """In a fresh interpreter: the pool, placement and the run state machine load neither
    taskiq, nats, asyncio nor structlog."""
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in PURE_CORE)
        + f"print(sorted(n for n in {IO_MODULES!r} if n in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_in_process_fleet_needs_no_nats_code() -> None:
    """``LocalFleetBroker`` runs without a server: the in-process fleet shares the
    scheduler core and the agent's executor, not the NATS services or the client."""
    needs = reachable(graph(), "taskiq_fleet.inprocess")
    assert "coordinator.scheduling.machine" in needs
    nats_side = {
        "coordinator.control",
        "coordinator.service",
        "shared.connection",
        "shared.jetstream",
        "taskiq_fleet.client",
        "worker_agent.service",
    }
    assert needs & nats_side == set()
