"""A 2x2 confusion matrix as a coloured grid with counts, percentages and the derived metrics."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from db.vocabulary import METRICS
from leuktui.formatting import visible


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


class ConfusionMatrix(Static):
    """Rows: the true class; columns: the predicted one. Correct cells green, errors red."""

    DEFAULT_CSS = """
    ConfusionMatrix { height: auto; padding: 0 1; }
    """

    shown: tuple[str, list[list[int]] | None, dict] = ("", None, {})

    def show(self, confusion: list[list[int]] | None, metrics: dict | None = None, title: str = "") -> None:
        self.shown = (title, confusion, metrics or {})
        if not confusion:
            self.update(Text("no confusion matrix yet", style="dim"))
            return
        (tn, fp), (fn, tp) = confusion
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("true \\ predicted")
        table.add_column("HEM (0)", justify="center")
        table.add_column("ALL (1)", justify="center")
        hem_total, all_total = tn + fp, fn + tp

        def cell(count: int, total: int, correct: bool) -> Text:
            style = "bold white on dark_green" if correct else ("bold white on dark_red" if count else "dim")
            return Text(f" {count} ({_share(count, total)}) ", style=style)

        table.add_row("HEM (0)", cell(tn, hem_total, True), cell(fp, hem_total, False))
        table.add_row("ALL (1)", cell(fn, all_total, False), cell(tp, all_total, True))
        metrics = metrics or {}
        summary = Text()
        for index, metric in enumerate(m for m in METRICS if m.key != "loss"):
            summary.append(("\n" if index % 2 == 0 else "   ") if index else "")
            summary.append(f"{metric.label} ", "dim")
            summary.append(metric.format(metrics.get(metric.key)))
        parts = [Text(visible(title), style="bold")] if title else []
        self.update(Group(*parts, table, summary))
