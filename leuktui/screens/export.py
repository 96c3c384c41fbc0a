"""The export dialog: checkpoint, test-time augmentation, test CSV and output path; several runs
make an ensemble (their ALL probabilities averaged)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, Label, Select, Static

from db.models import Run
from db.vocabulary import CHECKPOINTS, EVAL_MODES
from engine.config import RunConfig, model_depth
from engine.datasets import TEST_CSVS, resolve_test_csv
from engine.errors import UserError
from leuktui.actions import bindings
from leuktui.cells import plain
from leuktui.screens.job_dialog import JobDialog


def expected_test_csv(run: Run) -> Path:
    """The test CSV run ``run`` predicts when none is chosen, as an export resolves it; where its
    data folder has none (moved, or not mounted here), the file its model's depth names."""
    try:
        return resolve_test_csv(RunConfig.from_dict(run.config))
    except UserError:  # no test CSV there, or a stored config this version no longer takes: the export says which
        values = run.config
        return Path(values.get("data_dir") or ".") / (values.get("test_csv") or TEST_CSVS.get(model_depth(values.get("model", "")) or 18,
                                                                                               TEST_CSVS[18]))


class ExportScreen(JobDialog):
    BINDINGS = bindings("export")
    prefix = "export"
    go_label = "Export (ctrl+s)"
    working = "predicting…"

    def __init__(self, run: Run | Sequence[Run]) -> None:
        super().__init__()
        self.runs = [run] if isinstance(run, Run) else list(run)
        self.run = self.runs[0]
        # An ensemble averages its runs on one test CSV: where theirs differ, the user picks it
        # (the field starts empty, and stays required), as `leuktui export` asks for --test-csv.
        expected = {r.id: expected_test_csv(r) for r in self.runs}
        self.test_csv = str(expected[self.run.id]) if len({path.resolve() for path in expected.values()}) == 1 else ""
        names = {run_id: path.name for run_id, path in expected.items()}
        if len(set(names.values())) < len(set(expected.values())):
            names = {run_id: str(path) for run_id, path in expected.items()}  # one name in two folders
        self.test_csv_choice = "" if self.test_csv else (
            "these runs predict different test CSVs (" + ", ".join(f"run {run_id}: {name}" for run_id, name in names.items())
            + "): type the one to use")

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog", classes="dialog"):
            if len(self.runs) > 1:
                yield Static(f"Export an ensemble of runs {', '.join(str(r.id) for r in self.runs)} (mean ALL probability)", classes="dialog-title")
            else:
                yield Static(plain(f"Export the submission of run {self.run.id} ({self.run.name})"), classes="dialog-title")
            with Horizontal(classes="form-row"):
                yield Label("checkpoint", classes="form-label")
                yield Select([(name, name) for name in CHECKPOINTS], value=CHECKPOINTS[0], allow_blank=False, id="export-checkpoint", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("TTA", classes="form-label")
                yield Select([(mode.label, mode.key) for mode in EVAL_MODES], value=EVAL_MODES[0].key, allow_blank=False, id="export-tta", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("test CSV", classes="form-label")
                yield Input(value=self.test_csv, placeholder="the test CSV every run predicts", id="export-csv", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("output", classes="form-label")
                yield Input(value=str(self.default_output(EVAL_MODES[0].key)), id="export-output", compact=True)
            yield from self.job_widgets(self.test_csv_choice)

    def default_output(self, tta: str) -> Path:
        return self.app.workspace.export_path([r.id for r in self.runs], tta)

    @on(Select.Changed, "#export-tta")
    def _tta_changed(self, event: Select.Changed) -> None:
        """The file's default name follows the views, unless the user typed a path of their own."""
        output = self.query_one("#export-output", Input)
        if any(output.value == str(self.default_output(mode.key)) for mode in EVAL_MODES):
            output.value = str(self.default_output(str(event.value)))

    def action_export(self) -> None:
        self.start_job()

    def start_job(self) -> None:
        if self.test_csv_choice and not self.query_one("#export-csv", Input).value.strip():
            self.query_one("#export-result", Static).update(plain(self.test_csv_choice, style="red"))
            self.query_one("#export-csv", Input).focus()
            return
        super().start_job()

    def parameters(self) -> dict[str, Any]:
        return {
            "output": Path(self.query_one("#export-output", Input).value.strip()).expanduser(),
            "test_csv": self.query_one("#export-csv", Input).value.strip() or None,
            "tta": str(self.query_one("#export-tta", Select).value),
            "checkpoint": str(self.query_one("#export-checkpoint", Select).value),
        }

    def perform(self, parameters: dict[str, Any], report) -> tuple[Path, int]:
        from engine.ensemble import export_runs

        output = parameters.pop("output")
        if output == self.app.workspace.exports_dir / output.name:
            output.parent.mkdir(parents=True, exist_ok=True)
        return export_runs(self.app.db, self.app.workspace, [r.id for r in self.runs], output,
                           on_phase=lambda what, done, total: report(done, total, f"{what} {done}/{total}" if total > 1 else what),
                           **parameters)

    def finished(self, result: tuple[Path, int]) -> tuple[str, str]:
        path, rows = result
        output = self.query_one("#export-output", Input)
        if output.value == str(path):  # the next export gets a name of its own, not this file's
            output.value = str(self.default_output(str(self.query_one("#export-tta", Select).value)))
        return f"wrote {rows} rows", f"to {path}"
