"""Compare marked runs: validation curves overlaid, best/final metrics, and the config diff."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from db.vocabulary import METRICS, epoch_metrics
from leuktui.actions import bindings
from leuktui.cells import refill, status_cell
from leuktui.formatting import number, percent
from leuktui.widgets.charts import MetricChart
from leuktui.widgets.keybar import KeyBar


def config_diff(configs: dict[int, dict]) -> list[tuple[str, list]]:
    """Fields whose values differ between the runs, each with the values in run order."""
    keys = sorted({key for config in configs.values() for key in config})
    rows = []
    for key in keys:
        values = [config.get(key) for config in configs.values()]
        if len({repr(v) for v in values}) > 1:
            rows.append((key, values))
    return rows


class CompareScreen(Screen):
    BINDINGS = bindings("compare")

    def __init__(self, run_ids: list[int]) -> None:
        super().__init__()
        self.run_ids = run_ids

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Comparing runs {', '.join(map(str, self.run_ids))}", id="compare-title")
        with Vertical():
            with Horizontal(classes="chart-row"):
                yield MetricChart("validation accuracy", id="compare-acc")
                yield MetricChart("validation loss", id="compare-loss")
            with Horizontal(id="compare-tables"):
                yield DataTable(id="compare-metrics", cursor_type="row")
                yield DataTable(id="compare-diff", cursor_type="row")
        yield KeyBar()

    def on_mount(self) -> None:
        self.load()

    def action_report(self) -> None:
        from leuktui.screens.report_dialog import ReportScreen

        self.app.push_screen(ReportScreen(self.run_ids, named=False))

    def load(self) -> None:
        db = self.app.db
        self.app.run_task("compare", lambda: (db.runs_by_id(self.run_ids), db.epochs_of(self.run_ids)), done=self.show)

    def show(self, loaded) -> None:
        runs, epochs = loaded
        label = {run.id: f"{run.id} {run.model.split(':')[-1]}" for run in runs}
        self.query_one("#compare-acc", MetricChart).replot(
            [(label[r.id], [e.epoch for e in epochs[r.id]], [e.val_acc or 0 for e in epochs[r.id]]) for r in runs]
        )
        self.query_one("#compare-loss", MetricChart).replot(
            [(label[r.id], [e.epoch for e in epochs[r.id]], [e.val_loss or 0 for e in epochs[r.id]]) for r in runs]
        )
        shown = [m for m in METRICS if m.key != "loss"]
        lines = []
        for run in runs:
            last = epochs[run.id][-1] if epochs[run.id] else None
            at_best = epoch_metrics(run.summary or {})
            lines.append([Text(label[run.id]), status_cell(run), str(run.best_epoch or "-"), *(m.format(at_best.get(m.key)) for m in shown),
                          percent(last.val_acc if last else None), number(last.images_per_s if last else None, 1)])
        refill(self.query_one("#compare-metrics", DataTable),
               ["run", "status", "best ep", *(f"best {m.title}" for m in shown), "final acc", "img/s"], lines)
        differing = config_diff({run.id: run.config for run in runs})
        refill(self.query_one("#compare-diff", DataTable), ["config", *(label[r.id] for r in runs)],
               [[Text(key), *(Text(str(v)) for v in values)] for key, values in differing]
               or [[Text("(identical configs)"), *("" for _ in runs)]])
