"""``fleet completion bash|zsh|fish``: a shell completion script for ``fleet``.

The script is generated from the same argparse parser that reads the command line,
so every subcommand, option and choice (a new subcommand too) completes without
being listed twice. It is static: pressing Tab runs the shell's own code, not
Python, so completion costs nothing. What it completes: subcommands (with their
help in zsh and fish), each subcommand's options, an option's choices
(``--log-format``, ``--on-error``), and file or directory names where an option
takes a ``FILE``, ``PATH`` or ``DIR``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

SHELLS = ("bash", "zsh", "fish")
Kind = Literal["flag", "file", "dir", "choice", "value"]

INSTALL = {
    "bash": 'eval "$(fleet completion bash)"  (in ~/.bashrc), or save it as '
    "~/.local/share/bash-completion/completions/fleet",
    "zsh": "fleet completion zsh > ~/.zfunc/_fleet  (with ~/.zfunc in fpath before "
    "compinit), or source <(fleet completion zsh) after compinit",
    "fish": "fleet completion fish > ~/.config/fish/completions/fleet.fish",
}


@dataclass(frozen=True, slots=True)
class Argument:
    flags: tuple[str, ...]
    """Empty for a positional argument."""
    help: str
    kind: Kind
    choices: tuple[str, ...] = ()
    metavar: str = ""
    repeats: bool = False


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    help: str
    arguments: tuple[Argument, ...]

    @property
    def options(self) -> tuple[Argument, ...]:
        return tuple(a for a in self.arguments if a.flags)

    @property
    def positionals(self) -> tuple[Argument, ...]:
        return tuple(a for a in self.arguments if not a.flags)


_CHOICES_METAVAR = re.compile(r"\{([^{}]+)\}")


def _kind(action: argparse.Action) -> tuple[Kind, tuple[str, ...]]:
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if action.nargs == 0:
        return "flag", ()
    if action.choices is not None:
        return "choice", tuple(map(str, action.choices))
    listed = _CHOICES_METAVAR.fullmatch(metavar)
    if listed:  # a checked choice argparse cannot list (a type does the checking)
        return "choice", tuple(listed.group(1).split(","))
    if metavar in ("FILE", "PATH"):
        return "file", ()
    if metavar == "DIR":
        return "dir", ()
    return "value", ()


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help as ``--help`` shows it (``%(default)s`` filled in), on one line, cut short."""
    if not action.help:
        return ""
    try:
        text = parser._get_formatter()._expand_help(action)
    except (KeyError, TypeError, ValueError):
        text = action.help
    text = " ".join(text.split())
    return text if len(text) <= 70 else text[:67].rstrip() + "..."


def _argument(parser: argparse.ArgumentParser, action: argparse.Action) -> Argument:
    kind, choices = _kind(action)
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    return Argument(
        flags=tuple(action.option_strings),
        help=_help(parser, action),
        kind=kind,
        choices=choices,
        metavar=metavar,
        repeats=isinstance(action, argparse._AppendAction),
    )


def commands(parser: argparse.ArgumentParser) -> tuple[Command, ...]:
    """The top level (named ``""``) and each subcommand, as completion needs them."""
    top = Command("", "", tuple(_argument(parser, a) for a in parser._actions if a.option_strings))
    found = [top]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {c.dest: c.help or "" for c in action._choices_actions}
            for name, sub in action.choices.items():
                arguments = tuple(
                    _argument(sub, a) for a in sub._actions if a.help != argparse.SUPPRESS
                )
                found.append(Command(name, helps.get(name, ""), arguments))
    return tuple(found)


# -- bash --------------------------------------------------------------------------------------


def _words(command: Command, names: Sequence[str]) -> str:
    """What a word that is not an option's value completes to: subcommand names at the top,
    else the first positional's choices (``fleet completion SHELL``)."""
    if not command.name:
        return " ".join(names)
    return " ".join(next((p.choices for p in command.positionals if p.choices), ()))


def _bash_case(command: Command, names: Sequence[str]) -> list[str]:
    label = command.name or '""'
    lines = [f"    {label})", "        case $prev in"]
    for option in command.options:
        flags = "|".join(option.flags)
        if option.kind == "choice":
            choices = " ".join(option.choices)
            lines.append(f'            {flags}) COMPREPLY=($(compgen -W "{choices}" -- "$cur"));'
                         " return ;;")  # fmt: skip
        elif option.kind in ("file", "dir"):
            lines.append(f"            {flags}) _fleet_paths -{option.kind[0]}; return ;;")
    valued = "|".join(f for o in command.options if o.kind == "value" for f in o.flags)
    if valued:
        lines.append(f"            {valued}) return ;;")
    flags = " ".join(f for o in command.options for f in o.flags)
    return [
        *lines,
        "        esac",
        "        if [[ $cur == -* ]]; then",
        f'            COMPREPLY=($(compgen -W "{flags}" -- "$cur"))',
        "        else",
        f'            COMPREPLY=($(compgen -W "{_words(command, names)}" -- "$cur"))',
        "        fi",
        "        ;;",
    ]


def bash(parser: argparse.ArgumentParser) -> str:
    found = commands(parser)
    names = [c.name for c in found[1:]]
    return "\n".join(
        [
            f"# fleet completion for bash: {INSTALL['bash']}",
            "_fleet_paths() {",
            "    compopt -o filenames 2>/dev/null",
            '    COMPREPLY=($(compgen "$1" -- "$cur"))',
            "}",
            "_fleet() {",
            "    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}",
            f'    local command="" i names=" {" ".join(names)} "',
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            '        if [[ $names == *" ${COMP_WORDS[i]} "* ]]; then',
            "            command=${COMP_WORDS[i]}",
            "            break",
            "        fi",
            "    done",
            "    case $command in",
            *(line for command in found for line in _bash_case(command, names)),
            "    esac",
            "}",
            "complete -F _fleet fleet",
            "",
        ]
    )


# -- zsh ---------------------------------------------------------------------------------------


def _zsh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _zsh_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _zsh_value(argument: Argument) -> str:
    """``:message:action`` for an argument that takes a value."""
    message = argument.metavar.lower().replace(":", "\\:") or "value"
    action = {
        "choice": "(" + " ".join(argument.choices) + ")",
        "file": "_files",
        "dir": "_files -/",
        "value": " ",
    }[argument.kind]
    return f":{message}:{action}"


def _zsh_spec(option: Argument) -> str:
    value = "" if option.kind == "flag" else _zsh_value(option)
    described = f"[{_zsh_help(option.help)}]{value}"
    if len(option.flags) == 1:
        return ("*" if option.repeats else "") + _zsh_quote(option.flags[0] + described)
    exclusive = _zsh_quote("(" + " ".join(option.flags) + ")")
    return exclusive + "{" + ",".join(option.flags) + "}" + _zsh_quote(described)


def _zsh_case(command: Command) -> list[str]:
    specs = [_zsh_spec(o) for o in command.options]
    specs += [_zsh_quote(f"{n}{_zsh_value(p)}") for n, p in enumerate(command.positionals, start=1)]
    joined = " \\\n                ".join(specs)
    return [f"            {command.name})", f"                _arguments {joined} ;;"]


def zsh(parser: argparse.ArgumentParser) -> str:
    top, *subs = commands(parser)
    described = [_zsh_quote(f"{c.name}:{c.help}") for c in subs]
    return "\n".join(
        [
            "#compdef fleet",
            f"# fleet completion for zsh: {INSTALL['zsh']}",
            "_fleet() {",
            "    local curcontext=$curcontext state line",
            "    local -a commands",
            "    commands=(",
            *(f"        {d}" for d in described),
            "    )",
            "    _arguments -C \\",
            *(f"        {_zsh_spec(o)} \\" for o in top.options),
            "        '1:command:->command' \\",
            "        '*::argument:->argument'",
            "    case $state in",
            "        command) _describe -t commands 'fleet command' commands ;;",
            "        argument)",
            "            case $words[1] in",
            *(line for command in subs for line in _zsh_case(command)),
            "            esac",
            "            ;;",
            "    esac",
            "}",
            'if [[ $funcstack[1] == _fleet ]]; then _fleet "$@"; else compdef _fleet fleet; fi',
            "",
        ]
    )


# -- fish --------------------------------------------------------------------------------------


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(option: Argument, condition: str) -> str:
    parts = [f"complete -c fleet -n {_fish_quote(condition)}"]
    for flag in option.flags:
        parts.append(f"-l {flag[2:]}" if flag.startswith("--") else f"-s {flag[1:]}")
    if option.kind == "choice":
        parts.append(f"-x -a {_fish_quote(' '.join(option.choices))}")
    elif option.kind == "file":
        parts.append("-r -F")
    elif option.kind == "dir":
        parts.append("-x -a '(__fish_complete_directories)'")
    elif option.kind == "value":
        parts.append("-x")
    if option.help:
        parts.append(f"-d {_fish_quote(option.help)}")
    return " ".join(parts)


def fish(parser: argparse.ArgumentParser) -> str:
    top, *subs = commands(parser)
    lines = [f"# fleet completion for fish: {INSTALL['fish']}", "complete -c fleet -f"]
    lines += [_fish_option(o, "__fish_use_subcommand") for o in top.options]
    lines += [
        f"complete -c fleet -n __fish_use_subcommand -a {c.name} -d {_fish_quote(c.help)}"
        for c in subs
    ]
    for command in subs:
        condition = f"__fish_seen_subcommand_from {command.name}"
        lines += [_fish_option(o, condition) for o in command.options]
        choices = _words(command, ())
        if choices:
            lines.append(f"complete -c fleet -n {_fish_quote(condition)} -a {_fish_quote(choices)}")
    return "\n".join([*lines, ""])


SCRIPTS: dict[str, Callable[[argparse.ArgumentParser], str]] = {
    "bash": bash,
    "zsh": zsh,
    "fish": fish,
}


def configure(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    parser.description = "Print a shell completion script for fleet. " + " ".join(
        f"{shell}: {how}." for shell, how in INSTALL.items()
    )
    parser.add_argument("shell", choices=SHELLS, help="the shell: bash, zsh or fish")
    return print_script


def print_script(args: argparse.Namespace) -> int:
    from taskiq_fleet.cli import build_parser

    parser, _ = build_parser()
    print(SCRIPTS[args.shell](parser), end="")
    return 0
