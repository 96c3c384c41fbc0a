"""Ablation tables: a pivot of runs by two factors, the best of each row highlighted."""

from __future__ import annotations

import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Header, Label, Select, Static

from db.vocabulary import METRICS, MULTI_VIEW_MODES, metric
from leuktui.ablation import Pivot, build, suggest_factors
from leuktui.actions import bindings
from leuktui.cells import refill
from leuktui.widgets.keybar import KeyBar

METRIC_ORDER = [m.key for m in METRICS]


class AblationScreen(Screen):
    BINDINGS = bindings("ablation")

    def __init__(self, run_ids: list[int]) -> None:
        super().__init__()
        self.run_ids = run_ids
        self.metric = "acc"
        self.runs = []
        self.evaluations = []
        self.pivot: Pivot | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="ablation-controls"):
            yield Label("rows")
            yield Select([("model", "model")], value="model", allow_blank=False, id="ablation-rows")
            yield Label("columns")
            yield Select([("eval mode (tta)", "tta")], value="tta", allow_blank=False, id="ablation-columns")
        yield Static("", id="ablation-title")
        yield DataTable(id="ablation-table", cursor_type="cell")
        yield KeyBar()

    def on_mount(self) -> None:
        self.load()

    def action_report(self) -> None:
        from leuktui.screens.report_dialog import ReportScreen

        self.app.push_screen(ReportScreen(self.run_ids, named=False))

    def load(self) -> None:
        db = self.app.db
        self.app.run_task("ablation", lambda: (db.runs_by_id(self.run_ids), db.evaluations_of(self.run_ids)), done=self._loaded)

    def _loaded(self, loaded) -> None:
        self.runs, self.evaluations = runs, evaluations = loaded
        varying = suggest_factors(runs)
        options = sorted(set(varying) | {"model"})
        rows = self.query_one("#ablation-rows", Select)
        columns = self.query_one("#ablation-columns", Select)
        current_rows, current_columns = rows.value, columns.value
        rows.set_options([(name, name) for name in options])
        columns.set_options([("eval mode (tta)", "tta")] + [(name, name) for name in options])
        rows.value = current_rows if current_rows in options else "model"
        columns.value = current_columns if current_columns in ["tta", *options] else "tta"
        self.render_pivot()

    @on(Select.Changed)
    def _factor_changed(self) -> None:
        if self.runs:
            self.render_pivot()

    def render_pivot(self) -> None:
        rows = str(self.query_one("#ablation-rows", Select).value)
        columns = str(self.query_one("#ablation-columns", Select).value)
        self.pivot = build(self.runs, self.evaluations, rows, columns, self.metric)
        fmt = self.pivot.format
        lines = []
        for row in self.pivot.rows:
            best = self.pivot.best_column(row)
            cells = []
            for column in self.pivot.columns:
                value = self.pivot.value(row, column)
                cells.append(Text(fmt(value), style="bold black on green" if column == best and value is not None else ""))
            lines.append([Text(str(row)), *cells])
        refill(self.query_one("#ablation-table", DataTable), [rows, *map(self.pivot.column_label, self.pivot.columns)], lines)
        finished = sum(1 for run in self.runs if run.best_epoch is not None)
        note = "" if self.pivot.rows else "  — no finished runs here yet"
        self.query_one("#ablation-title", Static).update(
            f"{metric(self.metric).label} on the validation set · {finished} of {len(self.runs)} runs with results · m: metric · y: Markdown · v: evaluate 5/10-crop{note}"
        )

    def action_cycle_metric(self) -> None:
        self.metric = METRIC_ORDER[(METRIC_ORDER.index(self.metric) + 1) % len(METRIC_ORDER)]
        self.render_pivot()

    def action_save_markdown(self) -> None:
        if self.pivot is None or not self.pivot.rows:
            self.notify("nothing to save yet", severity="warning")
            return
        markdown = self.pivot.to_markdown()
        path = self.app.workspace.exports_dir / f"ablation-{time.strftime('%Y%m%d-%H%M%S')}.md"

        def save() -> str:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(markdown)
            return str(path)

        self.app.copy_to_clipboard(markdown)
        self.app.run_task("save table", save, done=lambda where: self.notify(f"copied, and saved to {where}", title="ablation table"))

    def action_evaluate_missing(self) -> None:
        """Evaluate the best checkpoints with five- and ten-crop where that is not recorded yet."""
        have = {(e.run_id, e.tta) for e in self.evaluations if e.split == "valid" and e.checkpoint == "best"}
        todo = [(run.id, mode) for run in self.runs if run.best_epoch is not None for mode in MULTI_VIEW_MODES if (run.id, mode) not in have]
        if not todo:
            self.notify("every run already has five- and ten-crop evaluations")
            return

        def evaluate() -> int:
            from engine.predict import evaluate_run

            for run_id, mode in todo:
                evaluate_run(self.app.db, self.app.workspace, run_id, tta=mode)
            return len(todo)

        self.notify(f"evaluating {len(todo)} checkpoint/mode pairs…")
        self.app.run_task("evaluate", evaluate, done=lambda n: (self.notify(f"{n} evaluations recorded"), self.load()))
