"""How ``fleet submit`` and ``fleet status RUN --watch`` show a run while it goes.

On a terminal: a bar of the nodes by state and their counts, redrawn in place
(rich's ``Live``), with a line above it for each node that fails, so a run of a
thousand nodes takes three lines, not a thousand. Anywhere else (a pipe, a file, a
CI log): one plain line per node status change, which ``grep`` and log viewers read
as they are written, with no cursor movement in them.

``frame`` is pure (nodes and time in, styled text out); ``LiveProgress`` and
``LineProgress`` do the printing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Protocol, Self

from rich.console import Console
from rich.live import Live
from rich.text import Text

from shared.wire.runs import TERMINAL_NODE, NodeView
from taskiq_fleet.tables import duration, node_change

STATES = ("succeeded", "failed", "cancelled", "skipped", "running", "placed", "ready", "pending")
"""The order of the bar's segments and of the counts: finished first."""

GLYPHS: Mapping[str, tuple[str, str]] = {
    "succeeded": ("█", "green"),
    "failed": ("X", "bold red"),
    "cancelled": ("x", "red"),
    "skipped": ("/", "yellow"),
    "running": ("▒", "cyan"),
    "placed": ("░", "blue"),
    "ready": ("░", "blue"),
    "pending": ("·", "bright_black"),
}
"""Each state's character and colour: the characters alone tell the states apart
(``NO_COLOR``, a monochrome terminal)."""

BAR_WIDTH = 40


def counts(nodes: Iterable[NodeView]) -> Counter[str]:
    return Counter(node.status for node in nodes)


def bar(tally: Mapping[str, int], width: int) -> Text:
    """``width`` cells split among the states in proportion to their counts (boundaries
    rounded, so the cells always add up to ``width``)."""
    total = sum(tally.values())
    text = Text()
    if total == 0:
        return text.append(GLYPHS["pending"][0] * width, GLYPHS["pending"][1])
    before = 0
    for state in STATES:
        after = before + tally.get(state, 0)
        cells = round(after * width / total) - round(before * width / total)
        glyph, style = GLYPHS[state]
        text.append(glyph * cells, style)
        before = after
    return text


def summary(tally: Mapping[str, int]) -> str:
    """``3 succeeded, 1 failed, 2 running, 4 pending``: the states that have nodes."""
    return ", ".join(f"{tally[s]} {s}" for s in STATES if tally.get(s))


def frame(nodes: Iterable[NodeView], elapsed: float | None, width: int) -> Text:
    """Two lines: the bar with nodes done of total and the time so far; the counts."""
    tally = counts(nodes)
    total = sum(tally.values())
    done = sum(tally[s] for s in TERMINAL_NODE)
    tail = f" {done}/{total} done" + (f"  {duration(elapsed)}" if elapsed is not None else "")
    room = max(10, min(BAR_WIDTH, width - len(tail) - 2))
    text = Text("[").append_text(bar(tally, room)).append("]").append(tail)
    return text.append("\n").append(summary(tally) or "no nodes", "dim")


class Progress(Protocol):
    """What the commands call as updates come; used as a context manager."""

    def update(self, nodes: Iterable[NodeView]) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class LineProgress:
    """A line per node status change: ``  node x: running on w1``."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write or (lambda line: print(line, flush=True))
        self._seen: dict[str, str] = {}

    def update(self, nodes: Iterable[NodeView]) -> None:
        for node in nodes:
            if self._seen.get(node.id) != node.status:
                self._seen[node.id] = node.status
                self._write(node_change(node))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class LiveProgress:
    """The bar, redrawn in place; a failed node's line printed above it once.

    rich redraws from its own thread (so the time goes on between updates); that thread
    reads only ``self._nodes``, a tuple replaced whole on each update, never changed.
    """

    def __init__(
        self, console: Console, started: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._console = console
        self._started = started
        self._clock = clock
        self._all: dict[str, NodeView] = {}
        self._nodes: tuple[NodeView, ...] = ()
        self._failed: set[str] = set()
        self._live = Live(
            console=console,
            get_renderable=self._render,
            refresh_per_second=4,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def _render(self) -> Text:
        return frame(self._nodes, self._clock() - self._started, self._console.width)

    def update(self, nodes: Iterable[NodeView]) -> None:
        for node in nodes:
            self._all[node.id] = node
            if node.status == "failed" and node.id not in self._failed:
                self._failed.add(node.id)
                self._console.print(node_change(node), highlight=False, markup=False)
        self._nodes = tuple(self._all.values())
        if self._live.is_started:
            self._live.refresh()

    def __enter__(self) -> Self:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()


def progress_for(started: float) -> Progress:
    """``LiveProgress`` when stdout is a terminal that can redraw, else ``LineProgress``."""
    console = Console(highlight=False)
    if not console.is_terminal or console.is_dumb_terminal:
        return LineProgress()
    return LiveProgress(console, started)
