"""Tables that fit a terminal's width, rendered by rich as plain text.

A table wider than the terminal is unreadable once the terminal wraps its lines, so
fitting happens in steps. The columns a reader can best do without (each
``Column.keep`` says how much it is needed) are dropped, least needed first, until
the rest fit with no word cut; each dropped column that still fits then comes back,
most needed first. Every kept column gets its narrowest width, and the space left
goes to the ``wrap`` columns (labels, errors), the least needy served whole first;
rich wraps their cells within it. Identifiers (worker names, run ids) never wrap: they are
what people copy into the next command. Only when dropping every droppable column is
not enough may ``fold`` columns cut long words.

The widths are computed here rather than left to rich, whose own collapsing can cut a
short column's words while a wide one keeps spare room.

``width=None`` means no limit (output to a pipe or a file): every column, one line per
row, so ``grep`` and ``awk`` see whole rows.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

GAP = 2
"""Spaces between two columns."""

RULE = box.Box(
    "    \n"  # top
    "    \n"  # head
    " -  \n"  # head_row: a dashed rule under the header, a space where columns meet
    "    \n"  # mid
    "    \n"  # row
    "    \n"  # foot_row
    "    \n"  # foot
    "    \n",  # bottom
    ascii=True,
)
"""Header, a dashed rule, rows; ASCII so any terminal and any encoding can show it."""


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    keep: int = 100
    """How much the column is needed: on a narrow terminal the lowest go first; 100 and
    above are never dropped."""
    wrap: bool = False
    """Its cells may wrap onto more lines, at spaces."""
    fold: int = 0
    """With ``wrap``: as a last resort, words longer than this may be cut across lines."""
    least: int = 0
    """With ``wrap``: narrower than this, a column is too hard to read (an error message
    a word a line), so others are dropped first."""
    right: bool = False

    @property
    def droppable(self) -> bool:
        return self.keep < 100


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def _longest_line(text: str) -> int:
    return max((cell_len(line) for line in text.splitlines()), default=0)


def widest(column: Column, cells: Sequence[str]) -> int:
    """Its width with every cell on one line."""
    return max(_longest_line(text) for text in (column.header, *cells))


def narrowest(column: Column, cells: Sequence[str], *, folding: bool = False) -> int:
    """Its width with its cells wrapped as far as they may be; a header never wraps."""
    if not column.wrap:
        return widest(column, cells)
    word = max((_longest_word(text) for text in cells), default=0)
    if folding and column.fold:
        word = min(word, column.fold)
    readable = 0 if folding else min(column.least, widest(column, cells))
    return max(1, word, readable, cell_len(column.header))


def min_width(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], *, folding: bool = False
) -> int:
    """The narrowest the table can be without cutting a word of a cell (``folding``: but
    for the long words of ``fold`` columns)."""
    if not columns:
        return 0
    cells = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    narrow = (narrowest(c, col, folding=folding) for c, col in zip(columns, cells, strict=True))
    return sum(narrow) + GAP * (len(columns) - 1)


def fitting(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None
) -> tuple[list[int], bool]:
    """Indexes of the columns kept at ``width``, and whether long words must be cut."""
    everything = list(range(len(columns)))
    if width is None:
        return everything, False
    order = sorted((i for i in everything if columns[i].droppable), key=lambda i: columns[i].keep)
    for folding in (False, True):

        def fits(kept: set[int], folding: bool = folding) -> bool:
            chosen = sorted(kept)
            cells = [[row[i] for i in chosen] for row in rows]
            return min_width([columns[i] for i in chosen], cells, folding=folding) <= width

        kept = set(everything)
        dropped = []
        for index in order:
            if fits(kept):
                break
            kept.discard(index)
            dropped.append(index)
        if fits(kept):
            for index in reversed(dropped):
                if fits(kept | {index}):
                    kept.add(index)
            return sorted(kept), folding
    return [i for i in everything if i not in order], True


def widths(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None, folding: bool
) -> list[int]:
    """Each column's narrowest width, plus the spare room shared among the wrapping ones:
    the least needy are served whole first, the rest share what remains evenly, so a
    short labels cell is not wrapped to leave a long GPU list a little more room."""
    cells = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    low = [narrowest(c, col, folding=folding) for c, col in zip(columns, cells, strict=True)]
    high = [widest(c, col) for c, col in zip(columns, cells, strict=True)]
    if width is None:
        return high
    spare = width - sum(low) - GAP * (len(columns) - 1)
    sizes = list(low)
    needy = sorted(
        (i for i in range(len(columns)) if high[i] > low[i]), key=lambda i: high[i] - low[i]
    )
    for served, index in enumerate(needy):
        if spare <= 0:
            break
        share = min(high[index] - low[index], spare // (len(needy) - served))
        sizes[index] += share
        spare -= share
    return sizes


def fit_table(
    columns: Sequence[Column], rows: Iterable[Sequence[str]], width: int | None = None
) -> str:
    """The table as text no wider than ``width`` (when it can be: see the module)."""
    body = [list(map(str, row)) for row in rows]
    for row in body:
        if len(row) != len(columns):
            raise ValueError(f"row {row} has {len(row)} cells for {len(columns)} columns")
    kept, folding = fitting(columns, body, width)
    shown = [columns[i] for i in kept]
    cells = [[row[i] for i in kept] for row in body]
    table = Table(box=RULE, show_edge=False, pad_edge=False, padding=(0, GAP - 1, 0, 0))
    for column, size in zip(shown, widths(shown, cells, width, folding), strict=True):
        table.add_column(
            column.header,
            width=size,
            no_wrap=not column.wrap,
            overflow="fold",
            justify="right" if column.right else "left",
        )
    for row in cells:
        table.add_row(*row)
    out = io.StringIO()
    Console(file=out, width=sum_width(table), color_system=None, force_terminal=False).print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


def sum_width(table: Table) -> int:
    """The width the table's fixed columns take, so rich neither squeezes nor pads them."""
    sizes = [c.width or 0 for c in table.columns]
    return sum(sizes) + GAP * max(0, len(sizes) - 1)


def output_width() -> int | None:
    """The width tables printed now must fit: ``COLUMNS`` when set (as rich and the shell
    honour it), the terminal's when stdout is one, else no limit (a pipe or a file)."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None
