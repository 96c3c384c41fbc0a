"""The report dialog (``r`` on Runs, Compare and Ablation): the runs, the output folder, a
progress bar while the report builds in a thread, and a notification naming the folder."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static

from engine.errors import UserError
from leuktui.actions import bindings
from leuktui.formatting import percent

LISTED = 6  # runs named one per line; the rest are counted


@dataclass
class ReportProgress(Message):
    done: int
    total: int
    what: str


@dataclass
class ReportFinished(Message):
    folder: Path | None
    runs: int = 0
    error: str | None = None


class ReportScreen(ModalScreen):
    BINDINGS = bindings("report")

    def __init__(self, run_ids: list[int], *, named: bool) -> None:
        """``named``: the user chose these runs (marked them), so a run without epochs is an
        error; otherwise (the filtered runs, a comparison) such runs are left out."""
        super().__init__()
        self.run_ids = run_ids
        self.named = named

    def compose(self) -> ComposeResult:
        runs = [self.app.runs[i] for i in self.run_ids if i in self.app.runs]
        lines = [f"{run.id:>4}  {run.name}  {run.model.split(':')[-1]}  {percent(run.best_val_acc)}" for run in runs[:LISTED]]
        if len(runs) > LISTED:
            lines.append(f"      … and {len(runs) - LISTED} more")
        folder = self.app.workspace.home / "reports" / time.strftime("%Y%m%d-%H%M%S")
        with Vertical(id="report-dialog", classes="dialog"):
            title = f"Report on {len(self.run_ids)} run{'s' if len(self.run_ids) != 1 else ''}"
            if not self.named and any(run.best_epoch is None for run in runs):
                title += " (those with epochs)"
            yield Static(title, classes="dialog-title")
            yield Static("\n".join(lines) or "no runs", id="report-runs")
            with Horizontal(classes="form-row"):
                yield Label("output folder", classes="form-label")
                yield Input(value=str(folder), id="report-output", compact=True)
            yield ProgressBar(id="report-progress", show_eta=False)
            yield Static("report.html, report.md, figures/ (PNG + SVG) and tables/ (CSV)", id="report-result")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Build (ctrl+s)", variant="primary", id="report-go", compact=True)
                yield Button("Close", id="report-close", compact=True)

    def on_mount(self) -> None:
        self.query_one("#report-progress").display = False

    @on(Button.Pressed, "#report-close")
    def _close(self) -> None:
        self.dismiss()

    @on(Button.Pressed, "#report-go")
    def _go(self) -> None:
        self.action_build()

    @on(Input.Submitted, "#report-output")
    def _submitted(self) -> None:
        self.action_build()

    def action_build(self) -> None:
        button = self.query_one("#report-go", Button)
        if button.disabled:
            return
        button.disabled = True
        progress = self.query_one("#report-progress", ProgressBar)
        progress.display = True
        progress.update(total=None, progress=0)
        self.query_one("#report-result", Static).update("building…")
        self.build(Path(self.query_one("#report-output", Input).value.strip()).expanduser())

    @work(thread=True, exclusive=True, group="report", exit_on_error=False)
    def build(self, folder: Path) -> None:
        from db import NotFound
        from leuktui.report.build import build_report
        from leuktui.report.data import ReportError, select_runs

        db = self.app.db
        try:
            if self.named:
                runs = select_runs(db, self.run_ids)
            else:
                runs = [run for run in db.runs_by_id(self.run_ids) if run.best_epoch is not None]
                if not runs:
                    raise ReportError("none of these runs has recorded epochs yet")
            result = build_report(db, self.app.workspace, runs, folder,
                                  progress=lambda done, total, what: self.post_message(ReportProgress(done, total, what)))
        except (UserError, NotFound) as exc:
            self.post_message(ReportFinished(None, error=str(exc)))
            return
        self.post_message(ReportFinished(result.folder, len(result.run_ids)))

    def on_report_progress(self, message: ReportProgress) -> None:
        self.query_one("#report-progress", ProgressBar).update(total=message.total, progress=message.done)
        self.query_one("#report-result", Static).update(f"{message.what}…")

    def on_report_finished(self, message: ReportFinished) -> None:
        result = self.query_one("#report-result", Static)
        self.query_one("#report-go", Button).disabled = False
        self.query_one("#report-progress").display = False
        if message.error:
            result.update(Text(message.error, style="red"))
            self.notify(message.error, title="report", severity="error")
            return
        result.update(Text.assemble((f"report on {message.runs} runs written", "green"), f" to {message.folder}"))
        self.notify(f"report on {message.runs} runs written to {message.folder}", title="report", timeout=10)
