"""The report dialog (``r`` on Runs, Compare and Ablation): the runs, the output folder, what to
do first (``report --evaluate`` and ``--cam``), a progress bar while the report builds in a
thread, and a notification naming the folder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Checkbox, Input, Label, Static

from db.vocabulary import COMPLETED
from leuktui.actions import bindings
from leuktui.cells import plain
from leuktui.formatting import best_accuracy_text, is_final_fit, visible
from leuktui.report.data import reportable
from leuktui.report_jobs import draw_gallery_maps, evaluate_for_roc
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
        known = [self.app.runs[i] for i in self.run_ids if i in self.app.runs]
        # The header, the list and the report name the same runs: without epochs a run has
        # nothing to report, so (unless the user named it, which is an error) it is left out here.
        runs = known if self.named else [run for run in known if reportable(run)]
        left_out = [run.id for run in known if run not in runs]
        lines = [f"{run.id:>4}  {visible(run.name)}  {visible(run.model.split(':')[-1])}  {best_accuracy_text(run)}"
                 for run in runs[:LISTED]]
        fits = self.final_fits_of(runs)
        if len(runs) > LISTED:
            lines.append(f"      … and {len(runs) - LISTED} more")
        folder = self.app.workspace.home / "reports" / time.strftime("%Y%m%d-%H%M%S")
        with Vertical(id="report-dialog", classes="dialog"):
            title = f"Report on {len(runs)} run{'s' if len(runs) != 1 else ''}"
            if fits:
                title += (f" and the {len(fits)} final fit{'s' if len(fits) != 1 else ''} made from {'them' if len(runs) > 1 else 'it'} "
                          f"({', '.join(map(str, fits))})")
            if left_out:
                shown = ", ".join(map(str, left_out[:LISTED])) + (" …" if len(left_out) > LISTED else "")
                title += f" ({len(left_out)} without epochs left out: {shown})"
            yield Static(title, classes="dialog-title")
            yield Static(plain("\n".join(lines) or "no runs", newlines=True), id="report-runs")
            with Horizontal(classes="form-row"):
                yield Label("output folder", classes="form-label")
                yield Input(value=str(folder), id="report-output", compact=True)
            yield Checkbox("evaluate runs without validation predictions first (ROC curves)", id="report-evaluate", compact=True)
            yield Checkbox("draw the mistakes' missing Grad-CAM maps first", id="report-cam", compact=True)
            yield from self.job_widgets("report.html, report.md, figures/ (PNG + SVG) and tables/ (CSV)")

    def final_fits_of(self, runs) -> list[int]:
        """The completed final fits made from ``runs`` (and from their retries): the report adds them."""
        chosen = {run.id for run in runs}
        fits: list[int] = []
        grown = True
        while grown:
            grown = False
            for run in self.app.runs.values():
                if run.parent_id in chosen and run.id not in chosen and is_final_fit(run):
                    chosen.add(run.id)
                    grown = True
                    if run.status == COMPLETED and run.epochs_done:
                        fits.append(run.id)
        return sorted(fits)

    @on(Input.Submitted, "#report-output")
    def _submitted(self) -> None:
        self.start_job()

    def action_build(self) -> None:
        self.start_job()

    def parameters(self) -> dict[str, Any]:
        return {"folder": Path(self.query_one("#report-output", Input).value.strip()).expanduser(),
                "evaluate": self.query_one("#report-evaluate", Checkbox).value, "cam": self.query_one("#report-cam", Checkbox).value}

    def perform(self, parameters: dict[str, Any], report):
        from leuktui.report.build import build_report
        from leuktui.report.data import ReportError, select_runs

        db = self.app.db
        if self.named:
            runs = select_runs(db, self.run_ids)
        else:
            shown = [run.id for run in db.runs_by_id(self.run_ids) if reportable(run)]
            if not shown:
                raise ReportError("none of these runs has recorded epochs yet")
            runs = select_runs(db, shown)  # with the final fits made from them

        def say(line: str) -> None:  # "evaluating run 3 (...)" as the progress line; what it could not do the report says
            report(0, None, line.strip().rstrip("…"))

        if parameters["evaluate"]:
            evaluate_for_roc(db, self.app.workspace, runs, say=say)
        if parameters["cam"]:
            draw_gallery_maps(db, self.app.workspace, runs, say=say)
        return build_report(db, self.app.workspace, runs, parameters["folder"], progress=report)

    def finished(self, result) -> tuple[str, str]:
        message = f"report on {len(result.run_ids)} runs written"
        return message, f"to {result.folder}"
