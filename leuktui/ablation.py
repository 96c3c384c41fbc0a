"""Ablation tables a student can defend: a pivot of runs by two factors, one metric per cell.

Rows are one factor (a config field such as ``model``); columns another config field, or ``tta``
(the views: each run's best checkpoint scored in single view, five- and ten-crop). A table only
holds runs that agree on every other field that changes what is computed: runs that differ
elsewhere go to separate tables, each named by what sets it apart. In a cell, the runs that differ
only in seed are replicates: the cell shows their mean ± std (n) and a 95% interval (the
t-interval of the mean; for one run, its bootstrap interval over the validation images). A row's
best cell is marked only where it differs significantly from every other cell of the row
(Welch's t-test between replicates, the exact McNemar test between single runs on the same
images; Holm-adjusted at 0.05); otherwise the row says so. No textual, no torch; scipy and
statsmodels load when a verdict is computed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from db.models import Epoch, Evaluation, Run
from db.vocabulary import COMPLETED, EVAL_MODE_KEYS, metric
from leuktui.results import (
    LAST_K,
    NOT_COMPARED,
    REPLICATE_FIELD,
    best_evaluation,
    interval_text,
    run_value,
    view_label,
    view_of,
)

TTA = "tta"
Loader = Callable[[list[int]], dict[int, list[tuple[str, float, int, int | None]]]]


@dataclass
class Cell:
    row: Any
    column: Any
    runs: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    evaluations: list[Evaluation | None] = field(default_factory=list)  # the source of each value
    mean: float | None = None
    std: float | None = None
    ci: list[float] | None = None
    ci_kind: str | None = None  # "t" (replicates) or "bootstrap" (one run's images)

    @property
    def n(self) -> int:
        return len(self.values)


@dataclass
class Verdict:
    """A row's answer: the significantly best column, or why there is none."""

    best: Any | None
    text: str
    tests: list[dict[str, Any]] = field(default_factory=list)  # {"column", "test", "p"} per comparison


@dataclass
class Pivot:
    row_factor: str
    column_factor: str
    metric: str
    selection: str = "best"
    k: int = LAST_K
    context: dict[str, Any] = field(default_factory=dict)  # what sets this table apart from the others
    rows: list[Any] = field(default_factory=list)
    columns: list[Any] = field(default_factory=list)
    cells: dict[tuple[Any, Any], Cell] = field(default_factory=dict)
    verdicts: dict[Any, Verdict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # the whole table: no best is marked
    notes: list[str] = field(default_factory=list)  # said beside the table, marking nothing
    row_warnings: dict[Any, str] = field(default_factory=dict)  # one row: no best is marked there

    # -- reading -------------------------------------------------------------------------------

    def cell(self, row: Any, column: Any) -> Cell | None:
        return self.cells.get((row, column))

    def value(self, row: Any, column: Any) -> float | None:
        cell = self.cells.get((row, column))
        return cell.mean if cell is not None else None

    @property
    def run_ids(self) -> list[int]:
        return sorted({run_id for cell in self.cells.values() for run_id in cell.runs})

    def leading_column(self, row: Any) -> Any | None:
        """The column with the row's best mean, significant or not."""
        best = None
        for column in self.columns:
            value = self.value(row, column)
            if value is not None and metric(self.metric).better(value, self.value(row, best) if best is not None else None):
                best = column
        return best

    def best_column(self, row: Any) -> Any | None:
        """The row's best column where the difference to every other is significant, else None."""
        verdict = self.verdicts.get(row)
        if verdict is None or self.warnings or row in self.row_warnings:
            return None
        return verdict.best

    # -- text ----------------------------------------------------------------------------------

    def format(self, value: float | None) -> str:
        return metric(self.metric).format(value)

    def spread(self, value: float | None) -> str:
        """A std in the metric's units (percentage points for ratios)."""
        if value is None:
            return "-"
        return f"{100 * value:.2f}" if metric(self.metric).kind == "ratio" else f"{value:.4f}"

    def cell_text(self, row: Any, column: Any) -> str:
        cell = self.cells.get((row, column))
        if cell is None or cell.mean is None:
            return "-"
        text = self.format(cell.mean)
        if cell.std is not None:
            text += f" ± {self.spread(cell.std)}"
        text += f" (n={cell.n})"
        if cell.ci:
            text += " " + interval_text(self.metric, cell.ci)
        return text

    def verdict_text(self, row: Any) -> str:
        verdict = self.verdicts.get(row)
        if verdict is None:
            return ""
        if verdict.best is not None and self.best_column(row) is None:
            return f"{verdict.text}, not marked: see the warning"
        return verdict.text

    def column_label(self, column: Any) -> str:
        if self.column_factor == TTA:
            return view_label(column)
        return f"{self.column_factor}={column}"

    @property
    def title(self) -> str:
        apart = ", ".join(f"{k}={v}" for k, v in self.context.items())
        return f"{self.row_factor} x {self.column_factor}" + (f" ({apart})" if apart else "")

    @property
    def source_text(self) -> str:
        chosen = metric(self.metric).label
        chosen = chosen[0].upper() + chosen[1:]
        if self.column_factor == TTA:
            return f"{chosen} of each run's best checkpoint on the validation set, in each view"
        if self.selection == "last":
            return f"{chosen} on the validation set, mean of each run's last {self.k} epochs"
        return f"{chosen} on the validation set at each run's best epoch (picked on that same set)"

    @property
    def legend(self) -> str:
        return f"{self.source_text}. {self.method}"

    @property
    def method(self) -> str:
        """What a cell and the bold mean (the legend without the source, which the screen's title says)."""
        return (
            "Each cell: mean ± std over its n runs, which differ only in seed, and the 95% interval "
            "(t-interval of the mean; for n=1 the bootstrap interval over the validation images). Bold: a row's best cell, "
            "only where it differs significantly from every other cell of the row (Welch's t-test between seeds, the paired "
            "t-test between views of the same runs, and between single runs on the same images the exact McNemar test for "
            "accuracy or a paired bootstrap for other metrics; Holm-adjusted, p < 0.05)."
        )

    def to_markdown(self) -> str:
        header = [self.row_factor] + [self.column_label(c) for c in self.columns] + ["verdict"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.rows:
            best = self.best_column(row)
            cells = [str(row)]
            for column in self.columns:
                text = self.cell_text(row, column)
                cells.append(f"**{text}**" if column == best and text != "-" else text)
            cells.append(self.verdict_text(row))
            lines.append("| " + " | ".join(cells) + " |")
        notes = "".join(f"\n> warning: {w}" for w in (*self.warnings, *self.row_warnings.values()))
        notes += "".join(f"\n> note: {n}" for n in dict.fromkeys(self.notes))
        apart = f"Runs with {', '.join(f'{k}={v}' for k, v in self.context.items())}. " if self.context else ""
        return "\n".join(lines) + f"\n\n{apart}{self.legend}\n" + (notes + "\n" if notes else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_factor": self.row_factor, "cols_factor": self.column_factor, "metric": self.metric,
            "selection": self.selection, "last_k": self.k if self.selection == "last" else None,
            "context": self.context, "warnings": [*self.warnings, *self.row_warnings.values()], "notes": list(dict.fromkeys(self.notes)),
            "cells": [
                {"row": cell.row, "col": cell.column, "n": cell.n, "mean": cell.mean, "std": cell.std, "ci": cell.ci,
                 "ci_kind": cell.ci_kind, "runs": cell.runs, "values": cell.values}
                for (row, column) in ((r, c) for r in self.rows for c in self.columns) if (cell := self.cells.get((row, column)))
            ],
            "verdicts": [
                {"row": row, "best": self.best_column(row), "significant": self.best_column(row) is not None,
                 "text": self.verdict_text(row), "tests": verdict.tests}
                for row, verdict in self.verdicts.items()
            ],
        }


# -- building --------------------------------------------------------------------------------------


def _hashable(value: Any) -> Any:
    return repr(value) if isinstance(value, (list, dict)) else value


def context_of(run: Run, row_factor: str, column_factor: str) -> tuple:
    """The fields that must agree for two runs to share a table (a field a run was recorded
    without counts at its default: it was added later, and the default is what the run did)."""
    from engine.config import RunConfig

    skip = {row_factor, column_factor, REPLICATE_FIELD, *NOT_COMPARED}
    values = {**RunConfig().to_dict(), **run.config}
    return tuple(sorted((key, _hashable(value)) for key, value in values.items() if key not in skip))


def _observations(run: Run, column_factor: str, evaluations: Sequence[Evaluation], key: str, selection: str,
                  epochs: Sequence[Epoch], k: int) -> list[tuple[Any, float, Evaluation | None]]:
    """(column, value, its evaluation) of one run: one per view for ``tta``, else one."""
    if column_factor == TTA:
        out = []
        own = view_of(run)
        for mode in EVAL_MODE_KEYS:
            evaluation = best_evaluation(run, evaluations, mode)
            if mode == own:
                value = run_value(run, key)  # what training measured, the same images and views
            else:
                value = getattr(evaluation, metric(key).key) if evaluation is not None else None
            if value is not None:
                out.append((mode, value, evaluation))
        return out
    value = run_value(run, key, selection=selection, epochs=epochs, k=k)
    evaluation = best_evaluation(run, evaluations) if selection == "best" else None
    return [(run.config.get(column_factor), value, evaluation)] if value is not None else []


def _preferred(a: Run, b: Run) -> bool:
    """Whether run ``a`` stands for its seed rather than ``b``: a completed run over an unfinished
    one, else the newer (a retry over what it retried)."""
    return (a.status == COMPLETED, a.id) > (b.status == COMPLETED, b.id)


def metric_range(key: str) -> tuple[float | None, float | None]:
    """The values a metric can take: a t-interval is cut to them (with two seeds it can reach past
    100% otherwise)."""
    if key == "mcc":
        return -1.0, 1.0
    if key == "loss":
        return 0.0, None
    return 0.0, 1.0


def clip_interval(key: str, interval: list[float]) -> list[float]:
    low, high = metric_range(key)
    return [max(interval[0], low) if low is not None else interval[0], min(interval[1], high) if high is not None else interval[1]]


def _summarise(pivot: Pivot) -> None:
    from engine.stats import replicates

    for cell in pivot.cells.values():
        summary = replicates(cell.values)
        cell.mean, cell.std = summary.mean, summary.std
        if summary.ci is not None:
            cell.ci, cell.ci_kind = clip_interval(pivot.metric, summary.ci), "t"
        elif cell.evaluations and cell.evaluations[0] is not None and cell.evaluations[0].interval(pivot.metric):
            cell.ci, cell.ci_kind = cell.evaluations[0].interval(pivot.metric), "bootstrap"


def _rows(load: Loader, cache: dict[int, dict[str, tuple[float, int, int]]], evaluations: Sequence[Evaluation]) -> None:
    missing = [e.id for e in evaluations if e.id not in cache]
    if missing:
        for evaluation_id, rows in load(missing).items():
            cache[evaluation_id] = {path: (probability, predicted, label) for path, probability, predicted, label in rows if label is not None}


def _test(pivot: Pivot, a: Cell, b: Cell, load: Loader | None, cache: dict[int, dict[str, tuple[float, int, int]]]) -> dict[str, Any]:
    """The p-value of cell ``a`` (the row's leader) against ``b``, and which test gave it:
    the paired t-test for the same runs seen two ways (views), Welch's between seed replicates,
    and between single runs on the same images the exact McNemar test (accuracy) or a paired
    bootstrap of the metric's difference (any other metric)."""
    from engine.stats import mcnemar_p, paired_metric_p, paired_t_p, welch_p

    if a.n >= 2 and b.n >= 2:
        if sorted(a.runs) == sorted(b.runs):
            order_a = [v for _, v in sorted(zip(a.runs, a.values, strict=True))]
            order_b = [v for _, v in sorted(zip(b.runs, b.values, strict=True))]
            p = paired_t_p(order_a, order_b)
            return {"test": "paired-t", "p": p, "why": None if p is not None else "no spread between the runs to test"}
        p = welch_p(a.values, b.values)
        return {"test": "welch", "p": p, "why": None if p is not None else "no spread between seeds to test"}
    if a.n == 1 and b.n == 1:
        if pivot.selection == "last":
            return {"test": None, "p": None, "why": "a mean of last epochs of one run has no test; queue seeds (--seeds)"}
        ea, eb = a.evaluations[0], b.evaluations[0]
        if ea is None or eb is None or load is None:
            return {"test": None, "p": None, "why": "no recorded validation predictions"}
        _rows(load, cache, (ea, eb))
        shared = sorted(set(cache[ea.id]) & set(cache[eb.id]))
        if not shared or any(cache[ea.id][p][2] != cache[eb.id][p][2] for p in shared):
            return {"test": None, "p": None, "why": "not the same validation images"}
        labels = [cache[ea.id][p][2] for p in shared]
        if pivot.metric == "acc":
            return {"test": "mcnemar", "p": mcnemar_p(_table(cache[ea.id], cache[eb.id], shared)), "why": None}
        sides = [([cache[e.id][p][0] for p in shared], [cache[e.id][p][1] for p in shared]) for e in (ea, eb)]
        p = paired_metric_p(pivot.metric, labels, sides[0], sides[1])
        return {"test": "paired-bootstrap", "p": p, "why": None if p is not None else "the metric is undefined on these images"}
    return {"test": None, "p": None, "why": f"n={a.n} against n={b.n}"}


def _table(a: dict[str, tuple[float, int, int]], b: dict[str, tuple[float, int, int]], shared: Sequence[str]) -> list[list[int]]:
    right_a = [a[p][1] == a[p][2] for p in shared]
    right_b = [b[p][1] == b[p][2] for p in shared]
    pairs = list(zip(right_a, right_b, strict=True))
    return [[pairs.count((True, True)), pairs.count((True, False))], [pairs.count((False, True)), pairs.count((False, False))]]


def _judge(pivot: Pivot, load: Loader | None) -> None:
    from engine.stats import ALPHA, holm

    cache: dict[int, dict[str, tuple[float, int, int]]] = {}
    for row in pivot.rows:
        present = [c for c in pivot.columns if pivot.value(row, c) is not None]
        if len(present) < 2:
            pivot.verdicts[row] = Verdict(None, "one column: nothing to compare")
            continue
        leader = pivot.leading_column(row)
        tests = []
        for column in present:
            if column == leader:
                continue
            outcome = _test(pivot, pivot.cells[(row, leader)], pivot.cells[(row, column)], load, cache)
            tests.append({"column": column, **outcome})
        untested = [t for t in tests if t["p"] is None]
        if untested:
            why = "; ".join(dict.fromkeys(t["why"] for t in untested))
            pivot.verdicts[row] = Verdict(None, f"not tested ({why})", tests)
            continue
        rejected = holm([t["p"] for t in tests], ALPHA)
        worst = max(t["p"] for t in tests)
        if all(rejected):
            pivot.verdicts[row] = Verdict(leader, f"{pivot.column_label(leader)} best (p = {_p(worst)})", tests)
        else:
            pivot.verdicts[row] = Verdict(None, f"no significant difference (p = {_p(worst)})", tests)


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def build(
    runs: Sequence[Run],
    evaluations: Sequence[Evaluation],
    row_factor: str,
    column_factor: str,
    metric_key: str,
    *,
    selection: str = "best",
    k: int = LAST_K,
    epochs: dict[int, list[Epoch]] | None = None,
    load_predictions: Loader | None = None,
) -> list[Pivot]:
    """The fair tables of ``runs``: one per group of runs that agree on every other field.

    ``epochs`` (per run) is needed for ``selection="last"``; ``load_predictions`` (evaluation ids
    to their rows, ``Database.predictions_of``) lets single runs be tested against each other.
    The tables come largest first."""
    chosen = metric(metric_key)
    asked = selection
    if column_factor == TTA:
        selection = "best"  # the views exist for the best checkpoint only
    from engine.config import RunConfig

    defaults = RunConfig().to_dict()
    groups: dict[tuple, Pivot] = {}
    # (context, row, column) -> {seed: (run, value, evaluation)}: one run per seed in a cell, so a
    # retry or a forced repeat is never counted as another replicate.
    entries: dict[tuple, dict[Any, tuple[Run, float, Evaluation | None]]] = {}
    for run in runs:
        if run.best_epoch is None:
            continue
        observations = _observations(run, column_factor, evaluations, chosen.key, selection, (epochs or {}).get(run.id, ()), k)
        if not observations:
            continue
        context = context_of(run, row_factor, column_factor)
        pivot = groups.setdefault(context, Pivot(row_factor, column_factor, chosen.key, selection, k))
        values = {**defaults, **run.config}  # a field the run was recorded without: its default
        row = _hashable(values.get(row_factor))
        for column, value, evaluation in observations:
            column = _hashable(values.get(column_factor) if column_factor != TTA else column)
            seeds = entries.setdefault((context, row, column), {})
            seed = values.get(REPLICATE_FIELD)
            kept = seeds.get(seed)
            if kept is not None:
                keep, drop = (kept[0], run) if _preferred(kept[0], run) else (run, kept[0])
                pivot.notes.append(f"run {drop.id} repeats seed {seed} of run {keep.id} in its cell: only run {keep.id} counts")
                if keep is kept[0]:
                    continue
            seeds[seed] = (run, float(value), evaluation)
    for (context, row, column), seeds in entries.items():
        pivot = groups[context]
        cell = pivot.cells.setdefault((row, column), Cell(row, column))
        for run, value, evaluation in sorted(seeds.values(), key=lambda item: item[0].id):
            cell.runs.append(run.id)
            cell.values.append(value)
            cell.evaluations.append(evaluation)
            if run.status != COMPLETED:
                warning = f"run {run.id} is {run.status} at epoch {run.epochs_done} of {run.config.get('epochs')}"
                if warning not in pivot.warnings:
                    pivot.warnings.append(warning)
    groups = {context: pivot for context, pivot in groups.items() if pivot.cells}
    contexts = list(groups)
    varying = [key for key, _ in contexts[0] if len({dict(c).get(key) for c in contexts} ) > 1] if len(contexts) > 1 else []
    tables = []
    for context, pivot in groups.items():
        values = dict(context)
        pivot.context = {key: values.get(key) for key in varying}
        rows = {row for row, _ in pivot.cells}
        columns = {column for _, column in pivot.cells}
        pivot.rows = sorted(rows, key=_sort_key)
        pivot.columns = [c for c in EVAL_MODE_KEYS if c in columns] if column_factor == TTA else sorted(columns, key=_sort_key)
        if column_factor == TTA:
            for row in pivot.rows:
                sets = {column: sorted(pivot.cells[(row, column)].runs) for column in pivot.columns if (row, column) in pivot.cells}
                if len({tuple(v) for v in sets.values()}) > 1:
                    detail = "; ".join(f"{view_label(c)}: runs {', '.join(map(str, v))}" for c, v in sets.items())
                    pivot.row_warnings[row] = f"row {row}: the views come from different runs ({detail})"
        if asked != selection:
            pivot.notes.append("the views are those of each run's best checkpoint, so this table uses the best epoch, not the last-k mean")
        _summarise(pivot)
        _judge(pivot, load_predictions)
        tables.append(pivot)
    tables.sort(key=lambda p: (-len(p.run_ids), p.run_ids))
    return tables


def _sort_key(value: Any) -> tuple:
    text = str(value)
    match = re.search(r"(\d+)$", text)
    return (text[: match.start()] if match else text, int(match.group(1)) if match else -1, text)


def suggest_factors(runs: Sequence[Run]) -> list[str]:
    """Config fields that vary across ``runs`` (the candidates for rows and columns)."""
    if not runs:
        return []
    fields = [key for key in runs[0].config if key not in ("data_dir", REPLICATE_FIELD, "test_csv", "workers", "pretrained")]
    return [key for key in fields if len({repr(r.config.get(key)) for r in runs}) > 1]


def default_columns(runs: Sequence[Run], rows: str) -> str:
    """The columns an ablation of ``runs`` opens with, on the Ablation screen and in `leuktui
    ablation`: the first other field the runs differ in (a sweep's factor), else the views."""
    return next((factor for factor in suggest_factors(runs) if factor != rows), "tta")
