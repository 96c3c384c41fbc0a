"""Table cells more than one screen shows: a run's status (with its phase while it runs) and its
epoch progress bar."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable

from db.models import Run
from db.vocabulary import CANCELLED, COMPLETED, FAILED, HELD, INTERRUPTED, PRUNED, QUEUED, RUNNING
from leuktui.formatting import status_text, visible

STATUS_STYLES = {
    RUNNING: "bold cyan", QUEUED: "yellow", HELD: "magenta", COMPLETED: "green",
    FAILED: "bold red", CANCELLED: "dim", INTERRUPTED: "dark_orange", PRUNED: "steel_blue",
}


def progress_cell(run: Run, width: int = 6) -> Text:
    total = int(run.config.get("epochs") or 1)
    done = min(run.epochs_done, total)
    filled = round(width * done / total)
    style = STATUS_STYLES.get(run.status, "")
    return Text.assemble(("█" * filled, style or "green"), ("░" * (width - filled), "dim"), f" {done}/{total}")


def status_cell(run: Run) -> Text:
    """The status as ``ls`` shows it too (``formatting.status_text``), in its status's colour."""
    return plain(status_text(run), style=STATUS_STYLES.get(run.status, ""))


def plain(value: object, style: str = "", *, newlines: bool = False) -> Text:
    """A user's string for a table cell or a Static: text, never markup; control characters
    visible (and newlines too, unless ``newlines`` keeps the lines of a text we made)."""
    return Text(visible(value, newlines=newlines), style=style)


def cell_width(cell: str | Text) -> int:
    """The columns a DataTable cell takes, as the table measures it."""
    return cell_len(cell) if isinstance(cell, str) else cell.cell_len


def refill(table: DataTable, labels: Sequence[str], rows: Iterable[Sequence[str | Text]],
           keys: Sequence[str] | None = None) -> None:
    """Replace a table's columns and rows at once, each column as wide as its widest cell (rows
    keyed by ``keys`` where given).

    A DataTable measures the cells of new rows only when it next goes idle, and a table filled
    from a background read did not always get there before the next key press or poll: it could
    show its columns as narrow as their labels, cut cells included. Widths given up front do not
    wait for that."""
    # A str cell would be read as markup by the table: a name like "[/]" would crash it.
    rows = [[plain(cell) if isinstance(cell, str) else cell for cell in row] for row in rows]
    table.clear(columns=True)
    for index, label in enumerate(labels):
        label = plain(label) if isinstance(label, str) else label
        width = max([cell_width(label), *(cell_width(row[index]) for row in rows if index < len(row))])
        table.add_column(label, width=width)
    for position, row in enumerate(rows):
        table.add_row(*row, key=None if keys is None else keys[position])
