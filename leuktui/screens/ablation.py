"""Ablation tables: fair pivots of runs by two factors, seed replicates summarised, a row's best
highlighted only where it is significantly better (``leuktui.ablation`` says how)."""

from __future__ import annotations

import time

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Header, Label, Select, Static

from db.vocabulary import METRICS, MULTI_VIEW_MODES, metric
from leuktui.ablation import Pivot, build, default_columns, suggest_factors
from leuktui.actions import bindings
from leuktui.cells import plain, refill
from leuktui.widgets.keybar import KeyBar

METRIC_ORDER = [m.key for m in METRICS]


UNTESTED = "not tested ("  # a verdict's start when its row's comparisons could not be tested


class AblationScreen(Screen):
    BINDINGS = bindings("ablation")

    def __init__(self, run_ids: list[int]) -> None:
        super().__init__()
        self.run_ids = run_ids
        self.metric = "acc"
        self.selection = "best"
        self.table_index = 0
        self.runs = []
        self.evaluations = []
        self.epochs: dict[int, list] = {}
        self.tables: list[Pivot] = []
        self.pivot: Pivot | None = None
        self._building = 0
        self._opened = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="ablation-controls"):
            yield Label("rows")
            yield Select([("model", "model")], value="model", allow_blank=False, id="ablation-rows")
            yield Label("columns")
            yield Select([("eval mode (tta)", "tta")], value="tta", allow_blank=False, id="ablation-columns")
        yield Static("", id="ablation-title")
        yield DataTable(id="ablation-table", cursor_type="cell")
        yield Static("", id="ablation-legend")
        yield KeyBar()

    def on_mount(self) -> None:
        self.load()

    def action_report(self) -> None:
        from leuktui.screens.report_dialog import ReportScreen

        self.app.push_screen(ReportScreen(self.run_ids, named=False))

    def load(self) -> None:
        db = self.app.db
        self.app.run_task(
            "ablation", lambda: (db.runs_by_id(self.run_ids), db.evaluations_of(self.run_ids), db.epochs_of(self.run_ids)),
            done=self._loaded,
        )

    def _loaded(self, loaded) -> None:
        self.runs, self.evaluations, self.epochs = runs, _, _ = loaded
        varying = suggest_factors(runs)
        options = sorted(set(varying) | {"model"})
        rows = self.query_one("#ablation-rows", Select)
        columns = self.query_one("#ablation-columns", Select)
        current_rows, current_columns = rows.value, columns.value
        if not self._opened:  # first open: the runs' own factors (a sweep's), the views only when nothing else varies
            self._opened = True
            current_rows = "model" if "model" in varying or len(varying) < 2 else varying[0]
            current_columns = default_columns(runs, current_rows)
        rows.set_options([(name, name) for name in options])
        columns.set_options([("eval mode (tta)", "tta")] + [(name, name) for name in options])
        rows.value = current_rows if current_rows in options else "model"
        columns.value = current_columns if current_columns in ["tta", *options] else "tta"
        self.render_pivot()

    @on(Select.Changed)
    def _factor_changed(self) -> None:
        if self.runs:
            self.table_index = 0
            self.render_pivot()

    def render_pivot(self) -> None:
        """Build the tables off the event loop (a verdict may read predictions), then show one."""
        rows = str(self.query_one("#ablation-rows", Select).value)
        columns = str(self.query_one("#ablation-columns", Select).value)
        if rows == columns:
            self.query_one("#ablation-title", Static).update("rows and columns are the same field: pick another")
            return
        runs, evaluations, epochs, chosen, selection = self.runs, self.evaluations, self.epochs, self.metric, self.selection
        db = self.app.db
        self._building += 1
        ticket = self._building

        def work() -> list[Pivot]:
            return build(runs, evaluations, rows, columns, chosen, selection=selection, epochs=epochs, load_predictions=db.predictions_of)

        self.app.run_task("ablation table", work, done=lambda tables: self._built(ticket, tables))

    def _built(self, ticket: int, tables: list[Pivot]) -> None:
        if ticket != self._building:
            return  # a newer choice is being built
        self.tables = tables
        self.table_index = min(self.table_index, max(0, len(tables) - 1))
        self.show_table()

    def show_table(self) -> None:
        rows = str(self.query_one("#ablation-rows", Select).value)
        pivot = self.pivot = self.tables[self.table_index] if self.tables else None
        finished = sum(1 for run in self.runs if run.best_epoch is not None)
        legend = self.query_one("#ablation-legend", Static)
        if pivot is None:
            refill(self.query_one("#ablation-table", DataTable), [rows], [])
            self.query_one("#ablation-title", Static).update(
                f"{metric(self.metric).label} · {finished} of {len(self.runs)} runs with results — no finished runs here yet")
            legend.update("")
            return
        lines = []
        reasons: dict[str, int] = {}  # why rows are not tested, said once under the table, not in every row

        def verdict_cell(row) -> Text:
            text = pivot.verdict_text(row)
            if text.startswith(UNTESTED) and text.endswith(")"):
                mark = reasons.setdefault(text[len(UNTESTED):-1], len(reasons) + 1)
                return plain(f"not tested [{mark}]")
            return plain(text)

        for row in pivot.rows:
            best = pivot.best_column(row)
            cells = [Text(pivot.cell_text(row, c), style="bold black on green" if c == best else "") for c in pivot.columns]
            lines.append([plain(row), *cells, verdict_cell(row)])  # a config value (a model path) as text
        refill(self.query_one("#ablation-table", DataTable), [rows, *map(pivot.column_label, pivot.columns), "verdict"], lines)
        which = f"table {self.table_index + 1} of {len(self.tables)}: " if len(self.tables) > 1 else ""
        # What tells this table from the next first (its factors, the runs it holds), as `leuktui ablation`
        # titles it; on a narrow terminal the line's end is what is cut. The keys are on the key bar.
        self.query_one("#ablation-title", Static).update(plain(
            f"{which}{pivot.title} · {finished} of {len(self.runs)} runs with results · {pivot.source_text}"
        ))
        untested = "".join(f"[{mark}] not tested: {why}\n" for why, mark in reasons.items())
        warnings = "".join(f"\n⚠ {w}" for w in (*pivot.warnings, *pivot.row_warnings.values()))
        warnings += "".join(f"\nnote: {n}" for n in dict.fromkeys(pivot.notes))
        legend.update(plain(untested + pivot.method + warnings, newlines=True))  # the source is in the title

    def action_next_table(self) -> None:
        if len(self.tables) > 1:
            self.table_index = (self.table_index + 1) % len(self.tables)
            self.show_table()

    def action_toggle_selection(self) -> None:
        self.selection = "last" if self.selection == "best" else "best"
        self.render_pivot()

    def action_cycle_metric(self) -> None:
        self.metric = METRIC_ORDER[(METRIC_ORDER.index(self.metric) + 1) % len(METRIC_ORDER)]
        self.render_pivot()

    def action_save_markdown(self) -> None:
        if self.pivot is None or not self.pivot.rows:
            self.notify("nothing to save yet", severity="warning")
            return
        markdown = "\n".join(f"### {table.title}\n\n{table.to_markdown()}" for table in self.tables)
        path = self.app.workspace.exports_dir / f"ablation-{time.strftime('%Y%m%d-%H%M%S')}.md"

        def save() -> str:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(markdown)
            return str(path)

        self.app.copy_to_clipboard(markdown)
        self.app.run_task("save table", save, done=lambda where, app=self.app: app.notify(f"copied, and saved to {where}", title="ablation table"))

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
