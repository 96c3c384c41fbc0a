"""The export dialog: checkpoint, test-time augmentation, test CSV and output path; several runs
make an ensemble (their ALL probabilities averaged)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Select, Static

from db.models import Run
from db.vocabulary import CHECKPOINTS, EVAL_MODES
from engine.datasets import TEST_CSVS
from engine.errors import UserError
from leuktui.actions import bindings


@dataclass
class ExportProgress(Message):
    done: int
    total: int


@dataclass
class ExportFinished(Message):
    path: Path | None
    rows: int = 0
    error: str | None = None


def default_test_csv_name(run: Run) -> str:
    depth = run.config.get("model", "")
    for d, name in TEST_CSVS.items():
        if str(depth).endswith(f"resnet{d}"):
            return name
    return TEST_CSVS[18]


class ExportScreen(ModalScreen):
    BINDINGS = bindings("export")

    def __init__(self, run: Run | Sequence[Run]) -> None:
        super().__init__()
        self.runs = [run] if isinstance(run, Run) else list(run)
        self.run = self.runs[0]

    def compose(self) -> ComposeResult:
        workspace = self.app.workspace
        with Vertical(id="export-dialog", classes="dialog"):
            if len(self.runs) > 1:
                yield Static(f"Export an ensemble of runs {', '.join(str(r.id) for r in self.runs)} (mean ALL probability)", classes="dialog-title")
            else:
                yield Static(f"Export the submission of run {self.run.id} ({self.run.name})", classes="dialog-title")
            with Horizontal(classes="form-row"):
                yield Label("checkpoint", classes="form-label")
                yield Select([(name, name) for name in CHECKPOINTS], value=CHECKPOINTS[0], allow_blank=False, id="export-checkpoint", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("TTA", classes="form-label")
                yield Select([(mode.label, mode.key) for mode in EVAL_MODES], value=EVAL_MODES[0].key, allow_blank=False, id="export-tta", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("test CSV", classes="form-label")
                yield Input(value=str(Path(self.run.config.get("data_dir", ".")) / default_test_csv_name(self.run)), id="export-csv", compact=True)
            with Horizontal(classes="form-row"):
                yield Label("output", classes="form-label")
                name = f"run-{self.run.id}" if len(self.runs) == 1 else "ensemble-" + "-".join(str(r.id) for r in self.runs)
                yield Input(value=str(workspace.exports_dir / f"{name}.csv"), id="export-output", compact=True)
            yield ProgressBar(id="export-progress", show_eta=False)
            yield Static("", id="export-result")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Export (ctrl+s)", variant="primary", id="export-go", compact=True)
                yield Button("Close", id="export-close", compact=True)

    def on_mount(self) -> None:
        self.query_one("#export-progress").display = False

    @on(Button.Pressed, "#export-close")
    def _close(self) -> None:
        self.dismiss()

    @on(Button.Pressed, "#export-go")
    def _go(self) -> None:
        self.action_export()

    def action_export(self) -> None:
        if self.query_one("#export-go", Button).disabled:
            return
        output = Path(self.query_one("#export-output", Input).value.strip()).expanduser()
        test_csv = self.query_one("#export-csv", Input).value.strip() or None
        tta = self.query_one("#export-tta", Select).value
        checkpoint = self.query_one("#export-checkpoint", Select).value
        self.query_one("#export-go", Button).disabled = True
        progress = self.query_one("#export-progress", ProgressBar)
        progress.display = True
        progress.update(total=None, progress=0)
        self.query_one("#export-result", Static).update("predicting…")
        self.export(output, test_csv, str(tta), str(checkpoint))

    @work(thread=True, exclusive=True, group="export", exit_on_error=False)
    def export(self, output: Path, test_csv: str | None, tta: str, checkpoint: str) -> None:
        from db import NotFound

        try:
            from engine.ensemble import export_ensemble
            from engine.predict import export_submission

            if output == self.app.workspace.exports_dir / output.name:
                output.parent.mkdir(parents=True, exist_ok=True)
            options = {"test_csv": test_csv, "tta": tta, "checkpoint": checkpoint,
                       "on_batch": lambda done, total: self.post_message(ExportProgress(done, total))}
            if len(self.runs) > 1:
                path, rows = export_ensemble(self.app.db, self.app.workspace, [r.id for r in self.runs], output, **options)
            else:
                path, rows = export_submission(self.app.db, self.app.workspace, self.run.id, output, **options)
        except (UserError, NotFound, OSError) as exc:
            self.post_message(ExportFinished(None, error=str(exc)))
            return
        self.post_message(ExportFinished(path, rows))

    def on_export_progress(self, message: ExportProgress) -> None:
        self.query_one("#export-progress", ProgressBar).update(total=message.total, progress=message.done)

    def on_export_finished(self, message: ExportFinished) -> None:
        result = self.query_one("#export-result", Static)
        self.query_one("#export-go", Button).disabled = False
        self.query_one("#export-progress").display = False
        if message.error:
            result.update(f"[red]{message.error}[/]")
            self.notify(message.error, title="export", severity="error")
            return
        result.update(f"[green]wrote {message.rows} rows[/] to {message.path}")
        self.notify(f"wrote {message.rows} rows to {message.path}", title="export")
