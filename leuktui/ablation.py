"""Ablation tables: a pivot of runs by two factors with one metric per cell, as in the lab report.

Rows are one factor (a config field such as ``model``); columns another config field, or
``tta`` — the evaluation mode, whose cells come from evaluations of existing checkpoints
(single view, five-crop, ten-crop) without retraining. No textual, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from db.models import Evaluation, Run
from db.vocabulary import EVAL_MODE_BY_KEY, EVAL_MODE_KEYS, epoch_metrics, metric


@dataclass
class Pivot:
    row_factor: str
    column_factor: str
    metric: str
    rows: list[Any] = field(default_factory=list)
    columns: list[Any] = field(default_factory=list)
    cells: dict[tuple[Any, Any], float] = field(default_factory=dict)
    sources: dict[tuple[Any, Any], int] = field(default_factory=dict)  # the run behind each cell

    def value(self, row: Any, column: Any) -> float | None:
        return self.cells.get((row, column))

    def best_column(self, row: Any) -> Any | None:
        """The column of the row's best value, by the metric's direction."""
        best = None
        for column in self.columns:
            value = self.cells.get((row, column))
            if value is not None and metric(self.metric).better(value, self.cells[(row, best)] if best is not None else None):
                best = column
        return best

    def format(self, value: float | None) -> str:
        return metric(self.metric).format(value)

    def column_label(self, column: Any) -> str:
        if self.column_factor == "tta":
            return EVAL_MODE_BY_KEY[column].label if column in EVAL_MODE_BY_KEY else str(column)
        return f"{self.column_factor}={column}"

    def to_markdown(self) -> str:
        header = [self.row_factor] + [self.column_label(c) for c in self.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            best = self.best_column(row)
            cells = [str(row)]
            for column in self.columns:
                value = self.value(row, column)
                text = self.format(value)
                cells.append(f"**{text}**" if column == best and value is not None else text)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + f"\n\n{metric(self.metric).label} on the validation set; best in each row in bold.\n"


def _epoch_metric(run: Run, key: str) -> float | None:
    """The metric at the run's best epoch."""
    return epoch_metrics(run.summary or {}).get(key)


def _factor_value(run: Run, factor: str) -> Any:
    return run.config.get(factor)


def build(runs: Sequence[Run], evaluations: Sequence[Evaluation], row_factor: str, column_factor: str, metric_key: str) -> Pivot:
    """One cell per (row value, column value): the best run's metric there.

    With ``column_factor == "tta"`` a run contributes the validation metrics of its newest
    evaluation of the ``best`` checkpoint per mode; its own training-time eval mode counts too.
    """
    chosen = metric(metric_key)
    pivot = Pivot(row_factor, column_factor, chosen.key)

    def offer(row: Any, column: Any, value: float | None, run_id: int) -> None:
        if value is None:
            return
        if chosen.better(value, pivot.cells.get((row, column))):
            pivot.cells[(row, column)] = value
            pivot.sources[(row, column)] = run_id

    newest: dict[tuple[int, str], Evaluation] = {}
    for evaluation in evaluations:
        if evaluation.split == "valid" and evaluation.checkpoint == "best":
            newest[(evaluation.run_id, evaluation.tta)] = evaluation
    for run in runs:
        if run.best_epoch is None:
            continue
        row = _factor_value(run, row_factor)
        if column_factor == "tta":
            offer(row, run.config.get("eval_mode", "single"), _epoch_metric(run, chosen.key), run.id)
            for mode in EVAL_MODE_KEYS:
                evaluation = newest.get((run.id, mode))
                if evaluation is not None:
                    offer(row, mode, getattr(evaluation, chosen.key), run.id)
        else:
            offer(row, _factor_value(run, column_factor), _epoch_metric(run, chosen.key), run.id)
    rows = {row for row, _ in pivot.cells}
    columns = {column for _, column in pivot.cells}
    pivot.rows = sorted(rows, key=_sort_key)
    pivot.columns = [c for c in EVAL_MODE_KEYS if c in columns] if column_factor == "tta" else sorted(columns, key=_sort_key)
    return pivot


def _sort_key(value: Any) -> tuple:
    import re

    text = str(value)
    match = re.search(r"(\d+)$", text)
    return (text[: match.start()] if match else text, int(match.group(1)) if match else -1, text)


def suggest_factors(runs: Sequence[Run]) -> list[str]:
    """Config fields that vary across ``runs`` (the candidates for rows and columns)."""
    if not runs:
        return []
    fields = [key for key in runs[0].config if key not in ("data_dir", "seed", "test_csv", "workers", "pretrained")]
    return [key for key in fields if len({repr(r.config.get(key)) for r in runs}) > 1]
