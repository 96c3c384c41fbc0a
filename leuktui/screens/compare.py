"""Compare marked runs: validation curves overlaid, best metrics with their 95% intervals and the
last-5 mean, the config diff, and each pair's paired test on the same validation images."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static

from db.vocabulary import METRICS, epoch_metrics
from leuktui.actions import bindings
from leuktui.cells import plain, refill, status_cell
from leuktui.formatting import number, percent, shared_start, short_name
from leuktui.results import LAST_K, best_evaluation, config_diff, interval_text, last_k_mean
from leuktui.widgets.charts import MetricChart, charted
from leuktui.widgets.keybar import KeyBar


class CompareScreen(Screen):
    BINDINGS = bindings("compare")

    def __init__(self, run_ids: list[int]) -> None:
        super().__init__()
        self.run_ids = run_ids
        self.pairs: list[str] | None = None  # the paired tests' lines, once computed
        self.chart_index = 0  # which of charted() the left chart overlays (m cycles)
        self.loaded = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"Comparing runs {', '.join(map(str, self.run_ids))} · the metrics at each run's best epoch (best ep)",
                     id="compare-title")
        with Vertical():
            with Horizontal(classes="chart-row"):
                yield MetricChart("validation accuracy", id="compare-acc", markers=True)
                yield MetricChart("validation loss", id="compare-loss", markers=True)
            with Vertical(id="compare-tables"):
                yield DataTable(id="compare-metrics", cursor_type="row")
                yield DataTable(id="compare-diff", cursor_type="row")
            yield Static("", id="compare-pairs")
        yield KeyBar()

    def on_mount(self) -> None:
        self.load()

    def action_report(self) -> None:
        from leuktui.screens.report_dialog import ReportScreen

        self.app.push_screen(ReportScreen(self.run_ids, named=False))

    def load(self) -> None:
        db = self.app.db
        self.app.run_task(
            "compare", lambda: (db.runs_by_id(self.run_ids), db.epochs_of(self.run_ids), db.evaluations_of(self.run_ids)), done=self.show
        )
        self.app.run_task("paired tests", self._pairs, done=self.show_pairs)

    def _pairs(self) -> list[str]:
        """One line per pair of runs: the paired test on their validation images, or why not."""
        from leuktui.results import ComparisonError, compare_pairs

        try:
            pairs = compare_pairs(self.app.db, [[run_id] for run_id in self.run_ids])
        except ComparisonError as exc:
            return [f"paired tests: {exc}"]
        lines = []
        for pair in pairs:
            (_, only_a), (only_b, _) = pair["table"]
            low, high = pair["diff_ci"]
            verdict = "significant" if pair["significant"] else "no significant difference"
            lines.append(
                f"run {pair['a']} vs {pair['b']} on {pair['n']} images: only {pair['a']} right {only_a}, only {pair['b']} right "
                f"{only_b} · acc difference {100 * pair['diff']:+.2f} points [{100 * low:+.2f}, {100 * high:+.2f}] · "
                f"McNemar p = {pair['mcnemar_p']:.3g}: {verdict}"
            )
        return lines

    def show_pairs(self, lines: list[str]) -> None:
        self.query_one("#compare-pairs", Static).update(plain("\n".join(lines), newlines=True))
        self.pairs = lines

    def action_cycle_chart(self) -> None:
        self.chart_index = (self.chart_index + 1) % len(charted())
        if self.loaded is not None:
            self._chart(*self.loaded[:2])

    def _chart(self, runs, epochs) -> None:
        key, title, column = charted()[self.chart_index]
        shared = shared_start(run.name for run in runs)
        label = {run.id: f"{run.id} {short_name(run.name, shared=shared)}" for run in runs}  # the legend names the runs
        self.query_one("#compare-acc", MetricChart).replot(
            [(label[r.id], [e.epoch for e in known], [getattr(e, column) for e in known])
             for r in runs for known in [[e for e in epochs[r.id] if getattr(e, column) is not None]]],
            title=title if key == "lr" else f"validation {title}",
        )

    def show(self, loaded) -> None:
        runs, epochs, evaluations = loaded
        self.loaded = loaded
        shared = shared_start(run.name for run in runs)
        label = {run.id: f"{run.id} {short_name(run.name, shared=shared)}" for run in runs}
        self._chart(runs, epochs)
        self.query_one("#compare-loss", MetricChart).replot(
            [(label[r.id], [e.epoch for e in epochs[r.id]], [e.val_loss or 0 for e in epochs[r.id]]) for r in runs]
        )
        shown = [m for m in METRICS if m.key != "loss"]
        lines = []
        for run in runs:
            last = epochs[run.id][-1] if epochs[run.id] else None
            at_best = epoch_metrics(run.summary or {})
            source = best_evaluation(run, evaluations)
            interval = interval_text("acc", source.interval("acc")) if source is not None else ""
            # Accuracy with its interval and last-5 mean first: on a narrow terminal the right-hand columns are cut.
            lines.append([Text(label[run.id]), status_cell(run), str(run.best_epoch or "-"), shown[0].format(at_best.get(shown[0].key)),
                          interval or "-", percent(last_k_mean(epochs[run.id], "acc", LAST_K)),
                          *(m.format(at_best.get(m.key)) for m in shown[1:]),
                          percent(last.val_acc if last else None), number(last.images_per_s if last else None, 1)])
        refill(self.query_one("#compare-metrics", DataTable),
               ["run", "status", "best ep", shown[0].title, f"{shown[0].title} 95% CI", f"last-{LAST_K} {shown[0].title}",
                *(m.title for m in shown[1:]), "final acc", "img/s"],
               lines)
        differing = config_diff({run.id: run.config for run in runs})
        refill(self.query_one("#compare-diff", DataTable), ["config", *(label[r.id] for r in runs)],
               [[Text(key), *(Text(str(v)) for v in values)] for key, values in differing]
               or [[Text("(identical configs)"), *("" for _ in runs)]])
