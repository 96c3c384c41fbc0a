"""The report dialog (``r`` on Runs, Compare and Ablation): the runs, the output folder, a
progress bar while the report builds in a thread, and a notification naming the folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Static

from leuktui.actions import bindings
from leuktui.cells import plain
from leuktui.formatting import percent, visible
from leuktui.screens.job_dialog import JobDialog

LISTED = 6  # runs named one per line; the rest are counted


class ReportScreen(JobDialog):
    BINDINGS = bindings("report")
    prefix = "report"
    go_label = "Build (ctrl+s)"
    working = "building…"

    def __init__(self, run_ids: list[int], *, named: bool) -> None:
        """``named``: the user chose these runs (marked them), so a run without epochs is an
        error; otherwise (the filtered runs, a comparison) such runs are left out."""
        super().__init__()
        self.run_ids = run_ids
        self.named = named

    def compose(self) -> ComposeResult:
        runs = [self.app.runs[i] for i in self.run_ids if i in self.app.runs]
        lines = [f"{run.id:>4}  {visible(run.name)}  {visible(run.model.split(':')[-1])}  {percent(run.best_val_acc)}"
                 for run in runs[:LISTED]]
        if len(runs) > LISTED:
            lines.append(f"      … and {len(runs) - LISTED} more")
        folder = self.app.workspace.home / "reports" / time.strftime("%Y%m%d-%H%M%S")
        with Vertical(id="report-dialog", classes="dialog"):
            title = f"Report on {len(self.run_ids)} run{'s' if len(self.run_ids) != 1 else ''}"
            if not self.named and any(run.best_epoch is None for run in runs):
                title += " (those with epochs)"
            yield Static(title, classes="dialog-title")
            yield Static(plain("\n".join(lines) or "no runs", newlines=True), id="report-runs")
            with Horizontal(classes="form-row"):
                yield Label("output folder", classes="form-label")
                yield Input(value=str(folder), id="report-output", compact=True)
            yield from self.job_widgets("report.html, report.md, figures/ (PNG + SVG) and tables/ (CSV)")

    @on(Input.Submitted, "#report-output")
    def _submitted(self) -> None:
        self.start_job()

    def action_build(self) -> None:
        self.start_job()

    def parameters(self) -> dict[str, Any]:
        return {"folder": Path(self.query_one("#report-output", Input).value.strip()).expanduser()}

    def perform(self, parameters: dict[str, Any], report):
        from leuktui.report.build import build_report
        from leuktui.report.data import ReportError, select_runs

        db = self.app.db
        if self.named:
            runs = select_runs(db, self.run_ids)
        else:
            runs = [run for run in db.runs_by_id(self.run_ids) if run.best_epoch is not None]
            if not runs:
                raise ReportError("none of these runs has recorded epochs yet")
        return build_report(db, self.app.workspace, runs, parameters["folder"], progress=report)

    def finished(self, result) -> tuple[str, str]:
        message = f"report on {len(result.run_ids)} runs written"
        return message, f"to {result.folder}"
