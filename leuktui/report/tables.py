"""The report's tables as pandas frames: results per run, recorded submissions, ablation pivots
(the very pivots of the app's Ablation screen) and each run's configuration."""

from __future__ import annotations

import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from db.models import Submission
from db.vocabulary import EVAL_MODE_BY_KEY, METRICS
from engine.config import RunConfig
from leuktui import ablation
from leuktui.formatting import visible
from leuktui.report.data import ReportData, RunRecord
from leuktui.results import LAST_K, best_evaluation, interval_text, last_k_mean

ABLATION_METRIC = "acc"  # the lab report's ablation tables compare validation accuracy
ACC = next(m for m in METRICS if m.key == ABLATION_METRIC)
# Config fields that say where or how fast a run ran, not what it computed.
NOT_FACTORS = ("data_dir", "test_csv", "workers", "device", "seed", "pretrained", "channels_last", "compile", "amp")


@dataclass
class Table:
    """A titled table: ``frame`` holds the values (for CSV), ``text`` the same cells as shown."""

    name: str
    title: str
    frame: pd.DataFrame
    text: pd.DataFrame
    caption: str = ""
    bold: set[tuple[int, str]] = field(default_factory=set)  # (row position, column) of best cells
    markdown: str | None = None  # a table that has its own Markdown (the app's ablation tables)


def _formatted(frame: pd.DataFrame, formats: dict[str, Any]) -> pd.DataFrame:
    text = frame.astype(object).copy()
    for column in frame.columns:
        fmt = formats.get(column, lambda v: "-" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
        text[column] = [fmt(v) for v in frame[column]]
    return text


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def _score(value: Any) -> str:
    return "-" if _missing(value) else f"{value:.5f}"


def best_scores(submissions: Sequence[Submission]) -> dict[int, float]:
    """The best recorded score of each run's own (single-run) submissions."""
    out: dict[int, float] = {}
    for submission in submissions:
        if submission.score is None or len(submission.run_ids) != 1:
            continue
        run_id = submission.run_ids[0]
        out[run_id] = max(out.get(run_id, submission.score), submission.score)
    return out


def shown_metrics(records: Sequence[RunRecord]):
    """The registered metrics that at least one run has a value for, in registry order."""
    values = [record.best_metrics() for record in records]
    return [m for m in METRICS if any(v.get(m.key) is not None for v in values)]


def results_table(data: ReportData) -> Table:
    """Per run: its best epoch's validation metrics, the training choices the lab report lists,
    and the best leaderboard or answer-key score of its submissions."""
    metrics = shown_metrics(data.records)
    scores = best_scores(data.submissions)
    rows = []
    intervals: list[str] = []
    for record in data.records:
        config, values = record.config, record.best_metrics()
        source = best_evaluation(record.run, record.evaluations)
        intervals.append(interval_text("acc", source.interval("acc")) if source is not None else "")
        rows.append({
            "run": record.label, "model": record.run.model, "best epoch": record.run.best_epoch,
            **{f"val {m.title}": values.get(m.key) for m in metrics},
            "acc 95% CI": intervals[-1] or None,
            f"last-{LAST_K} acc": last_k_mean(record.epochs, "acc", LAST_K),
            "optimizer": config.get("optimizer"), "learning rate": config.get("lr"), "loss": config.get("loss"),
            "batch size": config.get("batch_size"), "epochs": f"{record.run.epochs_done}/{config.get('epochs')}",
            "score": scores.get(record.id),
        })
    frame = pd.DataFrame(rows)
    formats: dict[str, Any] = {f"val {m.title}": m.format for m in metrics}
    formats["learning rate"] = lambda v: "-" if _missing(v) else f"{v:g}"
    formats["optimizer"] = lambda v: str(v).capitalize() if v == "adam" else ("AdamW" if v == "adamw" else str(v).upper())
    formats["loss"] = lambda v: str(v).upper()
    formats["score"] = _score
    formats[f"last-{LAST_K} acc"] = ACC.format
    text = _formatted(frame, formats)
    bold = set()
    for m in metrics:
        column = f"val {m.title}"
        values = [(i, v) for i, v in enumerate(frame[column]) if not _missing(v)]
        if len(values) > 1:
            best = (max if m.higher_is_better else min)(values, key=lambda item: item[1])[1]
            bold |= {(i, column) for i, v in values if v == best}
    caption = ("Validation metrics at each run's best epoch (the checkpoint `best`, in the views the run validated with), "
               "with the 95% bootstrap interval of the accuracy over the validation images; the best epoch is picked on "
               f"that same set, so the last-{LAST_K} acc (the mean of the last {LAST_K} epochs) is the less optimistic "
               "figure. Score: the best recorded test score of the run's own submissions. Best value of each column in bold.")
    return Table("results", "Results per run", frame, text, caption, bold)


def _models(submission: Submission, records: dict[int, RunRecord]) -> str:
    names = [records[run_id].run.model if run_id in records else f"run {run_id}" for run_id in submission.run_ids]
    return names[0] if len(names) == 1 else "ensemble: " + " + ".join(names)


def submission_tables(data: ReportData) -> list[Table]:
    """Like the leaderboard: the best scored entry per model, then every entry."""
    if not data.submissions:
        return []
    records = {record.id: record for record in [*data.records, *data.final_fits]}
    entries = pd.DataFrame([
        {
            "submission": s.id, "model": _models(s, records), "runs": ", ".join(map(str, s.run_ids)), "checkpoint": s.checkpoint,
            "TTA": EVAL_MODE_BY_KEY[s.tta].label if s.tta in EVAL_MODE_BY_KEY else s.tta, "test CSV": s.test_csv.rsplit("/", 1)[-1],
            "rows": s.rows, "score": s.score, "scored by": {"key": "answer key", "leaderboard": "leaderboard"}.get(s.score_source or "", "-"),
            "written": time.strftime("%Y-%m-%d %H:%M", time.localtime(s.created_at)), "file": s.path.rsplit("/", 1)[-1],
        }
        for s in data.submissions
    ])
    scored = entries[entries["score"].notna()]
    tables = []
    if not scored.empty:
        best = scored.loc[scored.groupby("model", sort=False)["score"].idxmax()].sort_values("score", ascending=False)
        best = best[["model", "score", "submission", "runs", "TTA", "scored by", "written"]].reset_index(drop=True)
        tables.append(Table("leaderboard", "Best submission per model", best, _formatted(best, {"score": _score}),
                            "The best recorded score of each model's submissions (ensembles count as their own entry)."))
    entries = entries.reset_index(drop=True)
    tables.append(Table("submissions", "Every submission", entries, _formatted(entries, {"score": _score}),
                        "Every file `leuktui export` wrote for these runs, oldest first; `leuktui submissions score ID VALUE` "
                        "records a leaderboard score."))
    return tables


def final_fits_table(data: ReportData) -> Table:
    """The final fits: the run each was made from, its seed and epochs, and its last epoch's
    training loss and accuracy (there is no validation set left to score it on)."""
    rows = []
    for record in data.final_fits:
        last = record.epochs[-1] if record.epochs else None
        rows.append({"run": record.id, "made from": record.run.parent_id, "model": record.run.model.split(":")[-1],
                     "seed": record.config.get("seed"), "epochs": f"{record.run.epochs_done}/{record.config.get('epochs')}",
                     "train loss": last.train_loss if last else None, "train acc": last.train_acc if last else None,
                     "status": record.run.status})
    frame = pd.DataFrame(rows, columns=["run", "made from", "model", "seed", "epochs", "train loss", "train acc", "status"])
    text = _formatted(frame, {"train loss": lambda v: "-" if _missing(v) else f"{v:.4f}",
                              "train acc": lambda v: "-" if _missing(v) else f"{100 * v:.2f}%"})
    fits = {record.id for record in data.final_fits}
    exported = any(set(submission.run_ids) <= fits for submission in data.submissions)
    where = ("their ensemble is among the submissions above" if exported
             else "`leuktui finalize RUN --export` (F in the app) writes their ensemble, the submission to hand in")
    return Table("final-fits", "Final fits", frame, text,
                 f"Each retrained on train + valid for its source run's best epoch count (`leuktui finalize`), so no "
                 f"validation score; {where}.")


def ablation_factors(data: ReportData) -> list[str]:
    """The factors of the ablation tables: config fields that differ between the runs (but the
    model, which makes the rows, and fields that do not change what is computed), and the eval
    mode when five- or ten-crop evaluations are recorded."""
    factors = [f for f in ablation.suggest_factors(data.runs) if f != "model" and f not in NOT_FACTORS]
    multi_view = {e.tta for e in data.evaluations if e.split == "valid" and e.checkpoint == "best"} - {"single"}
    modes = {record.config.get("eval_mode", "single") for record in data.records}
    if multi_view or len(modes) > 1:
        factors = ["tta", *(f for f in factors if f != "eval_mode")]
    return factors


def ablation_tables(data: ReportData, load_predictions: ablation.Loader | None = None, *, selection: str = "best",
                    k: int = LAST_K) -> list[Table]:
    """The fair pivots of each factor, rows the model, built by the app's own
    ``leuktui.ablation.build``: one table per group of runs that agree on every other field;
    a group with a single column compares nothing and is named in the next table's caption."""
    out = []
    epochs = {record.id: record.epochs for record in data.records}
    for factor in ablation_factors(data):
        pivots = ablation.build(data.runs, data.evaluations, "model", factor, ABLATION_METRIC, epochs=epochs,
                                load_predictions=load_predictions, selection=selection, k=k)
        shown = [pivot for pivot in pivots if pivot.rows and len(pivot.columns) >= 2]
        apart = [pivot for pivot in pivots if pivot not in shown]
        left_out = "; ".join(
            f"runs {', '.join(map(str, p.run_ids))} ({', '.join(f'{k}={v}' for k, v in p.context.items()) or 'one column'})"
            for p in apart
        )
        for number, pivot in enumerate(shown, start=1):
            labels = [pivot.column_label(column) for column in pivot.columns]
            frame = pd.DataFrame(
                [[row, *(pivot.value(row, column) for column in pivot.columns), pivot.verdict_text(row)] for row in pivot.rows],
                columns=["model", *labels, "verdict"],
            )
            text = frame.astype(object).copy()
            for position, row in enumerate(pivot.rows):
                for column, label in zip(pivot.columns, labels, strict=True):
                    text.at[position, label] = pivot.cell_text(row, column)
            bold = {
                (position, pivot.column_label(pivot.best_column(row)))
                for position, row in enumerate(pivot.rows) if pivot.best_column(row) is not None
            }
            title = "Eval mode: single view vs five- and ten-crop" if factor == "tta" else f"Ablation: {factor}"
            if pivot.context:
                title += " (" + ", ".join(f"{k}={v}" for k, v in pivot.context.items()) + ")"
            sources = ", ".join(
                f"{pivot.column_label(c)} of {r}: run{'s' if len(cell.runs) > 1 else ''} {', '.join(map(str, cell.runs))}"
                for (r, c), cell in pivot.cells.items()
            )
            extra = f"Runs behind the cells: {sources}."
            if left_out and number == len(shown):
                extra += f" Not compared here, because they differ in other fields: {left_out}."
            caption = f"{pivot.legend} {extra}" + "".join(f" Warning: {w}." for w in (*pivot.warnings, *pivot.row_warnings.values()))
            caption += "".join(f" Note: {n}." for n in dict.fromkeys(pivot.notes))
            name = f"ablation-{factor}" + (f"-{number}" if number > 1 else "")
            out.append(Table(name, title, frame, text, caption, bold, markdown=f"{pivot.to_markdown()}\n{extra}\n"))
    return out


# -- the appendix -----------------------------------------------------------------------------------


def reproduce_command(record: RunRecord) -> str:
    """The ``leuktui run`` command that trains this run's config again (defaults left out)."""
    defaults = RunConfig().to_dict()
    words = ["leuktui", "run"]
    for name, value in record.config.items():
        if name not in defaults or value == defaults[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + name.replace("_", "-"))
        elif value is not None:
            words += [flag, str(value)]
    words += ["--name", visible(record.run.name)]
    return " ".join(shlex.quote(word) for word in words)


def duration(record: RunRecord) -> str:
    run = record.run
    if run.started_at is None or run.finished_at is None:
        seconds = sum(e.seconds or 0 for e in record.epochs)
        return f"{seconds / 60:.1f} min of epochs" if seconds else "-"
    seconds = max(0.0, run.finished_at - run.started_at)
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def environment_line(record: RunRecord) -> str:
    env = record.run.environment or {}
    if not env:
        return "not recorded"
    parts = [
        f"host {env.get('host', '-')}", f"device {env.get('device', '-')} ({env.get('device_name', '-')})",
        f"precision {env.get('precision', '-')}", f"torch {env.get('torch', '-')}",
    ]
    if env.get("cuda"):
        parts.append(f"CUDA {env['cuda']}")
    if env.get("python"):
        parts.append(f"Python {env['python']}")
    return " · ".join(parts)


def config_table(record: RunRecord) -> Table:
    frame = pd.DataFrame([{"field": key, "value": value} for key, value in sorted(record.config.items())])
    return Table(f"config-run-{record.id}", f"Run {record.prose_label}", frame, _formatted(frame, {}))


def study_table(summary: dict[str, Any]) -> Table:
    """A study's trials: number, run, how it ended, its parameters, its value and epochs."""
    from db.vocabulary import metric

    chosen = metric(summary["metric"])
    names = list(summary["trials"][0]["params"]) if summary["trials"] else []
    rows = [{"trial": t["trial"], "run": t["run_id"], "status": t["status"], **{n: t["params"][n] for n in names},
             summary["metric"]: t["value"], "epochs done": f"{t['epochs_done']}/{t['epochs']}"} for t in summary["trials"]]
    frame = pd.DataFrame(rows, columns=["trial", "run", "status", *names, summary["metric"], "epochs done"])

    def param(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    text = _formatted(frame, {**{n: param for n in names}, summary["metric"]: chosen.format})
    best = summary["best"]
    bold = set()
    if best is not None:
        position = next(i for i, t in enumerate(summary["trials"]) if t["trial"] == best["trial"])
        bold = {(position, summary["metric"])}
    caption = (f"{summary['sampler']} sampler, {summary['pruner']} pruner, {summary['direction']} {summary['metric']} at each "
               f"trial's best epoch (a pruned trial: its last epoch's, as Optuna takes it); space `{summary['space']}`.")
    return Table(f"study-{summary['id']}", f"Study '{summary['name']}': its trials", frame, text, caption, bold)
