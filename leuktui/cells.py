"""Table cells more than one screen shows: a run's status (with its phase while it runs) and its
epoch progress bar."""

from __future__ import annotations

from rich.text import Text

from db.models import Run

STATUS_STYLES = {
    "running": "bold cyan", "queued": "yellow", "held": "magenta", "completed": "green",
    "failed": "bold red", "cancelled": "dim", "interrupted": "dark_orange",
}


def progress_cell(run: Run, width: int = 6) -> Text:
    total = int(run.config.get("epochs") or 1)
    done = min(run.epochs_done, total)
    filled = round(width * done / total)
    style = STATUS_STYLES.get(run.status, "")
    return Text.assemble(("█" * filled, style or "green"), ("░" * (width - filled), "dim"), f" {done}/{total}")


def status_cell(run: Run) -> Text:
    """The status; for a running run, what it is doing now (``epoch 2/6 step 12/40``)."""
    if run.status == "running":
        label = "cancelling" if run.cancel_requested_at else run.phase or run.status
    else:
        label = run.status
    return Text(label, style=STATUS_STYLES.get(run.status, ""))
