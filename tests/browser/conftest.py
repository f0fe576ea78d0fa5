"""A real headless Chromium for the browser tests, found or installed as a fresh machine can.

Debian's ``chromium`` package is looked for on PATH (or ``FLEET_CHROMIUM`` names one);
without it, a root shell with ``apt-get`` installs it, as ``make test`` on a fresh Debian
machine would. Only where neither works does a browser test skip, with the reason.
Playwright drives it (``executable_path``); it never downloads a browser of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
INSTALL_TIMEOUT = 900


def find_chromium() -> str | None:
    named = os.environ.get("FLEET_CHROMIUM")
    if named:
        return named if shutil.which(named) else None
    return next((found for name in NAMES if (found := shutil.which(name))), None)


def install_chromium() -> str:
    """Install Debian's package; returns why that cannot be done here, or ''."""
    if shutil.which("apt-get") is None:
        return "no chromium on PATH and no apt-get to install it"
    if os.geteuid() != 0:
        return "no chromium on PATH; installing it needs root (apt-get install chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
        )
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {done.stderr.strip()[-300:]}"
    return ""


@pytest.fixture(scope="session")
def chromium() -> str:
    """The path of a Chromium executable, or the test is skipped with the reason."""
    found = find_chromium()
    if found is None:
        why = install_chromium()
        found = find_chromium()
        if found is None:
            pytest.skip(why or "apt-get installed chromium but it is not on PATH")
    return found


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[object]:
    playwright = pytest.importorskip(
        "playwright.async_api", reason="playwright is in the dev extra"
    )
    async with playwright.async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        try:
            yield launched
        finally:
            await launched.close()
