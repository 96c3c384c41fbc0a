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

METRICS = {"acc": "accuracy", "f1": "weighted F1", "auc": "ROC AUC", "sensitivity": "sensitivity", "specificity": "specificity"}
TTA_COLUMNS = ("single", "five", "ten")
TTA_LABELS = {"single": "single view", "five": "5-crop", "ten": "10-crop"}


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
        values = [(self.cells[(row, c)], c) for c in self.columns if (row, c) in self.cells]
        return max(values, key=lambda item: item[0])[1] if values else None

    def column_label(self, column: Any) -> str:
        if self.column_factor == "tta":
            return TTA_LABELS.get(column, str(column))
        return f"{self.column_factor}={column}"

    def to_markdown(self) -> str:
        header = [self.row_factor] + [self.column_label(c) for c in self.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            best = self.best_column(row)
            cells = [str(row)]
            for column in self.columns:
                value = self.value(row, column)
                text = "-" if value is None else f"{100 * value:.2f}%" if self.metric != "auc" else f"{value:.4f}"
                cells.append(f"**{text}**" if column == best and value is not None else text)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + f"\n\n{METRICS[self.metric]} on the validation set; best in each row in bold.\n"


def _epoch_metric(run: Run, metric: str) -> float | None:
    summary = run.summary or {}
    return {
        "acc": run.best_val_acc, "f1": run.best_val_f1, "auc": run.best_val_auc,
        "sensitivity": summary.get("sensitivity"), "specificity": summary.get("specificity"),
    }[metric]


def _factor_value(run: Run, factor: str) -> Any:
    return run.config.get(factor)


def build(runs: Sequence[Run], evaluations: Sequence[Evaluation], row_factor: str, column_factor: str, metric: str) -> Pivot:
    """One cell per (row value, column value): the best run's metric there.

    With ``column_factor == "tta"`` a run contributes the validation metrics of its newest
    evaluation of the ``best`` checkpoint per mode; its own training-time eval mode counts too.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    pivot = Pivot(row_factor, column_factor, metric)

    def offer(row: Any, column: Any, value: float | None, run_id: int) -> None:
        if value is None:
            return
        if (row, column) not in pivot.cells or value > pivot.cells[(row, column)]:
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
            offer(row, run.config.get("eval_mode", "single"), _epoch_metric(run, metric), run.id)
            for mode in TTA_COLUMNS:
                evaluation = newest.get((run.id, mode))
                if evaluation is not None:
                    offer(row, mode, getattr(evaluation, metric), run.id)
        else:
            offer(row, _factor_value(run, column_factor), _epoch_metric(run, metric), run.id)
    rows = {row for row, _ in pivot.cells}
    columns = {column for _, column in pivot.cells}
    pivot.rows = sorted(rows, key=_sort_key)
    pivot.columns = [c for c in TTA_COLUMNS if c in columns] if column_factor == "tta" else sorted(columns, key=_sort_key)
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
