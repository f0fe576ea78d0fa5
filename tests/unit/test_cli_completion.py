"""``fleet completion bash|zsh|fish``: each script loaded into the real shell, which is then
asked what it completes. zsh and fish tests skip (saying so) where the shell is missing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskiq_fleet.cli import build_parser, main
from taskiq_fleet.completion import SCRIPTS, commands

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# (words typed, what must be offered, what must not be)
CASES = [
    ("fleet su", {"submit"}, {"status"}),
    ("fleet ", {"agent", "submit", "status", "workers", "completion", "up"}, set()),
    ("fleet status --wa", {"--watch"}, set()),
    ("fleet workers --", {"--json", "--nats", "--prefix"}, {"--watch"}),
    ("fleet agent --log-format ", {"auto", "json", "console"}, set()),
    ("fleet coordinator --log-level w", {"warning"}, {"info"}),
    ("fleet submit x --on-error c", {"continue"}, {"stop"}),
    ("fleet completion ", {"bash", "zsh", "fish"}, set()),
    ("fleet coordinator --policy ", {"binpack", "spread", "hybrid"}, set()),
]


def script(shell: str, tmp_path: Path) -> Path:
    path = tmp_path / ("_fleet" if shell == "zsh" else f"fleet.{shell}")
    path.write_text(SCRIPTS[shell](build_parser()[0]))
    return path


def shell_or_skip(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install {name})")
    return found


def complete(shell: str, path: Path, line: str) -> set[str]:
    words = line.split(" ")
    if shell == "bash":
        array = " ".join(f"'{w}'" for w in words)
        command = [shell_or_skip("bash"), "-c", f'source "$0"; COMP_WORDS=({array}); '
                   f'COMP_CWORD={len(words) - 1}; _fleet; printf "%s\\n" "${{COMPREPLY[@]}}"',
                   str(path)]  # fmt: skip
    elif shell == "fish":
        command = [shell_or_skip("fish"), "-c", f"source {path}; complete -C '{line}'"]
    else:
        command = [shell_or_skip("zsh"), str(HERE / "zsh_complete.zsh"), str(path.parent), line]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return {row.split("\t")[0] for row in done.stdout.splitlines() if row}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
@pytest.mark.parametrize(("line", "offered", "not_offered"), CASES, ids=[c[0] for c in CASES])
def test_the_shell_completes(
    shell: str, line: str, offered: set[str], not_offered: set[str], tmp_path: Path
) -> None:
    shell_or_skip(shell)
    got = complete(shell, script(shell, tmp_path), line)
    assert offered <= got, got
    assert not (not_offered & got), got


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_files_for_an_option_that_takes_one(shell: str, tmp_path: Path) -> None:
    shell_or_skip(shell)
    (tmp_path / "creds-dir").mkdir()
    (tmp_path / "creds.txt").write_text("")
    got = complete(shell, script(shell, tmp_path), f"fleet workers --nats-creds {tmp_path}/cre")
    assert {p.rstrip("/").rsplit("/", 1)[-1] for p in got} >= {"creds-dir", "creds.txt"}


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_scripts_parse(shell: str, tmp_path: Path) -> None:
    binary = shell_or_skip(shell)
    subprocess.run([binary, "-n", str(script(shell, tmp_path))], check=True, timeout=60)


def test_every_subcommand_is_in_the_scripts() -> None:
    names = [c.name for c in commands(build_parser()[0])[1:]]
    assert {"agent", "coordinator", "submit", "status", "workers", "up", "completion"} <= set(names)
    for make in SCRIPTS.values():
        text = make(build_parser()[0])
        assert all(name in text for name in names)


def test_fleet_completion_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "fish"]) == 0
    assert capsys.readouterr().out == SCRIPTS["fish"](build_parser()[0])


def test_an_unknown_shell_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskiq_fleet", "completion", "tcsh"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "invalid choice: 'tcsh'" in done.stderr
    assert "Traceback" not in done.stderr
