"""Every rich table lightnets prints, built from plain data: column names, rows of text, a title.

The one place that knows rich's :class:`~rich.table.Table` and :class:`~rich.console.Console`
(imported when a table is built, so importing this module costs nothing). Callers turn their
own results into strings (:mod:`lightnets.analysis.render` for what the analysis counted and
measured, the commands for theirs); this module knows nothing of models, training or runtimes.

>>> table = rich_table(["metric", Column("value", justify="right")], [["top-1", "91.20%"]])
>>> [column.header for column in table.columns]
['metric', 'value']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

__all__ = ["PIPED_WIDTH", "Column", "rich_table", "terminal_console"]

#: Columns of a console whose output is piped or captured: wide enough that table rows stay on
#: one line instead of being squeezed into 80 columns.
PIPED_WIDTH = 160


#: How a column's cells are aligned.
Justify = Literal["left", "center", "right"]


@dataclass(frozen=True)
class Column:
    """One column: its header, alignment, whether its cells may wrap, and a rich style."""

    name: str
    justify: Justify = "left"
    no_wrap: bool = False
    style: str | None = None


def rich_table(
    columns: Sequence[Column | str],
    rows: Iterable[Sequence[str]],
    *,
    title: str | None = None,
    caption: str | None = None,
    header_style: str | None = None,
    box: str | None = None,
    padding: tuple[int, int] | None = None,
) -> Table:
    """A rich table of ``rows`` (strings, one per column) under ``columns``.

    ``box`` names one of rich's box styles (``"simple_head"``); ``title``, ``caption``,
    ``header_style``, ``box`` and ``padding`` left at ``None`` keep rich's defaults.
    """
    from rich import box as boxes
    from rich.table import Table

    options: dict = {"title": title, "header_style": header_style, "padding": padding}
    if box is not None:
        options["box"] = getattr(boxes, box.upper())
    table = Table(**{key: value for key, value in options.items() if value is not None})
    for column in columns:
        if isinstance(column, str):
            column = Column(column)
        table.add_column(
            column.name, justify=column.justify, no_wrap=column.no_wrap, style=column.style
        )
    for row in rows:
        table.add_row(*row)
    if caption is not None:
        table.caption = caption
    return table


def terminal_console(piped_width: int | None = PIPED_WIDTH) -> Console:
    """A rich console for standard output; when it is piped or captured, ``piped_width``
    columns (``None``: rich's own choice, 80 unless ``COLUMNS`` says otherwise)."""
    from rich.console import Console

    console = Console()
    if console.is_terminal or piped_width is None:
        return console
    return Console(width=piped_width)
