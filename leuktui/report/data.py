"""What a report shows, read from the database: the chosen runs, their epochs, evaluations,
validation predictions and submissions (no matplotlib, no pandas, no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from db import Database, NotFound
from db.models import Epoch, Evaluation, Run, Submission
from db.vocabulary import COMPLETED, METRICS, epoch_metrics
from engine.errors import UserError
from leuktui.formatting import is_final_fit, visible

SINGLE_VIEW = "single"


class ReportError(UserError):
    """A report that cannot be built as asked; the message names the run, sweep or folder."""


# A user's text (a run's name) among the report's own prose: the characters Markdown would take as
# formatting, and the backtick the HTML page's `code` spans are told by, stand in as private-use
# characters until each document writes them out literally (build._md, build._h).
LITERAL = {"`": "\ue000", "*": "\ue001", "_": "\ue002", "[": "\ue003", "]": "\ue004", "\\": "\ue005", "|": "\ue006"}
_LITERAL = str.maketrans(LITERAL)


def literal(text: object) -> str:
    """``text`` (made visible) to be shown as it is in the report's prose, never as formatting."""
    return visible(text).translate(_LITERAL)


@dataclass
class RunRecord:
    """One run of the report and everything recorded about it."""

    run: Run
    epochs: list[Epoch]
    evaluations: list[Evaluation]
    # The labelled validation predictions behind the ROC curve, and the evaluation they belong to.
    roc_evaluation: Evaluation | None = None
    roc_points: list[tuple[float, int]] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.run.id

    @property
    def label(self) -> str:
        return f"{self.run.id} {visible(self.run.name)}"  # a control character as its escape: figures, CSV, Markdown

    @property
    def prose_label(self) -> str:
        """``label`` for a sentence, a caption or a heading of the report (``literal``)."""
        return literal(self.label)

    @property
    def config(self) -> dict[str, Any]:
        return self.run.config

    @property
    def best(self) -> Epoch | None:
        """The epoch row at the run's best epoch (the one ``show`` reports)."""
        return next((e for e in self.epochs if e.epoch == self.run.best_epoch), None)

    def best_metrics(self) -> dict[str, float | None]:
        """``{metric key: value}`` at the best epoch; the run's summary fills a missing row."""
        best = self.best
        if best is not None:
            return epoch_metrics(best)
        summary = self.run.summary or {}
        return {m.key: summary.get(m.epoch_column, summary.get(m.key)) for m in METRICS}


@dataclass
class ReportData:
    records: list[RunRecord]
    submissions: list[Submission]
    evaluations: list[Evaluation]
    # Final fits (trained on train + valid: no validation score), shown apart, with their submissions.
    final_fits: list[RunRecord] = field(default_factory=list)

    @property
    def runs(self) -> list[Run]:
        return [record.run for record in self.records]


def select_runs(
    db: Database, run_ids: Sequence[int] = (), *, tag: str | None = None, sweep: int | None = None,
    marked: Sequence[int] = (),
) -> list[Run]:
    """The runs a report is about: those named, tagged or in the sweep; by default the runs
    ``marked`` in the app (those that still exist and have epochs), else each model's best config
    by mean validation accuracy, with all its seed replicates. Named runs must exist and have epochs; runs found by tag or sweep
    without epochs yet are left out. The completed final fits made from any chosen run come with
    it (their ensemble is the submission a lab hands in)."""
    chosen: dict[int, Run] = {}
    if run_ids:
        found = {run.id: run for run in db.runs_by_id(list(run_ids))}
        for run_id in run_ids:
            if run_id not in found:
                raise ReportError(f"run {run_id}: no such run")
            run = found[run_id]
            if not reportable(run):
                raise ReportError(f"run {run_id}: no epochs recorded yet (status {run.status}); nothing to report")
            chosen[run_id] = run
    if tag is not None or sweep is not None:
        candidates = db.list_runs()
        if tag is not None:
            candidates = [run for run in candidates if tag in (run.tags or [])]
        if sweep is not None:
            try:
                db.get_sweep(sweep)
            except NotFound as exc:
                raise ReportError(str(exc)) from None
            candidates = [run for run in candidates if run.sweep_id == sweep]
        with_epochs = [run for run in candidates if reportable(run)]
        if not with_epochs and not chosen:
            what = " and ".join(part for part in (f"tag {tag!r}" if tag else "", f"sweep {sweep}" if sweep else "") if part)
            raise ReportError(f"no runs with recorded epochs have {what}")
        chosen.update({run.id: run for run in with_epochs})
    if not run_ids and tag is None and sweep is None and marked:
        chosen = {run.id: run for run in db.runs_by_id(list(marked)) if reportable(run)}
    if not run_ids and tag is None and sweep is None and not chosen:
        chosen = {run.id: run for run in best_config_per_model(db.list_runs())}
        if not chosen:
            raise ReportError("no run has recorded epochs yet; train one first (leuktui run)")
    for run in list(chosen.values()):
        if not is_final_fit(run):
            chosen.update({fit.id: fit for fit in db.final_fits(run.id) if fit.status == COMPLETED and fit.epochs_done})
    if all(is_final_fit(run) for run in chosen.values()):
        raise final_fits_alone(list(chosen.values()))
    return sorted(chosen.values(), key=lambda run: run.id)


def final_fits_alone(fits: Sequence[Run]) -> ReportError:
    """The error of a report on final fits alone: nothing validated to compare; their source's has them."""
    ids = sorted(run.id for run in fits)
    sources = sorted({run.parent_id for run in fits if run.parent_id is not None})
    many = "s" if len(ids) > 1 else ""
    they, them = ("they were", "them") if many else ("it was", "it")
    made_from = (f"; a report on the run{'s' if len(sources) > 1 else ''} {they} made from ({', '.join(map(str, sources))}) "
                 f"includes {them}") if sources else ""
    return ReportError(f"run{many} {', '.join(map(str, ids))}: final fit{many}, trained on train + valid, with no validation "
                       f"score to report{made_from}")


def reportable(run: Run) -> bool:
    """A run with something to report: a best epoch, or a final fit's epochs (it has no best)."""
    return run.best_epoch is not None or (is_final_fit(run) and bool(run.epochs_done))


def best_config_per_model(runs: Sequence[Run]) -> list[Run]:
    """Each model's best config by the mean validation accuracy of its seed replicates, with every
    one of those replicates (never the luckiest seed alone)."""
    from leuktui.ablation import context_of
    from leuktui.results import REPLICATE_FIELD

    groups: dict[tuple[str, tuple], list[Run]] = {}
    for run in runs:
        if run.best_epoch is None or run.best_val_acc is None:
            continue
        # The ablation tables' own rule of what replicates share, with the model as the row.
        groups.setdefault((run.model, context_of(run, "model", REPLICATE_FIELD)), []).append(run)
    def standing(members: list[Run]) -> tuple[float, int]:  # a tie goes to the config with more seeds
        return round(sum(run.best_val_acc for run in members) / len(members), 12), len(members)

    best: dict[str, list[Run]] = {}
    for (model, _), members in groups.items():
        if model not in best or standing(members) > standing(best[model]):
            best[model] = members
    return [run for members in best.values() for run in members]


def newest_labelled_evaluation(evaluations: Sequence[Evaluation], run: Run | None = None) -> Evaluation | None:
    """The evaluation whose predictions draw a run's ROC curve: the one that holds the numbers of
    the results table (the best epoch, in the views the run validated with), so the legend's AUC
    is the table's; for a run recorded before training kept its predictions, the newest on the
    validation set of the best checkpoint, preferring the single view."""
    if run is not None:
        from leuktui.results import best_evaluation

        own = best_evaluation(run, evaluations)
        if own is not None:
            return own
    valid = [e for e in evaluations if e.split == "valid" and e.checkpoint == "best"]
    single = [e for e in valid if e.tta == SINGLE_VIEW]
    pool = single or valid
    return max(pool, key=lambda e: e.id) if pool else None


def collect(db: Database, runs: Sequence[Run]) -> ReportData:
    """Everything the report shows about ``runs``, in a handful of queries."""
    run_ids = [run.id for run in runs]
    epochs = db.epochs_of(run_ids)
    evaluations = db.evaluations_of(run_ids)
    by_run: dict[int, list[Evaluation]] = {run_id: [] for run_id in run_ids}
    for evaluation in evaluations:
        by_run[evaluation.run_id].append(evaluation)
    records = [RunRecord(run, epochs[run.id], by_run[run.id]) for run in runs if not is_final_fit(run)]
    final_fits = [RunRecord(run, epochs[run.id], by_run[run.id]) for run in runs if is_final_fit(run)]
    roc_sources = {record.id: newest_labelled_evaluation(record.evaluations, record.run) for record in records}
    points = db.labelled_predictions([e.id for e in roc_sources.values() if e is not None])
    for record in records:
        source = roc_sources[record.id]
        if source is not None and points.get(source.id):
            record.roc_evaluation = source
            record.roc_points = points[source.id]
    chosen = set(run_ids)
    submissions = [s for s in db.submissions() if chosen & set(s.run_ids)]
    return ReportData(records, submissions, [e for e in evaluations if e.run_id not in {r.id for r in final_fits}], final_fits)


def runs_without_predictions(db: Database, runs: Sequence[Run]) -> list[Run]:
    """The runs whose ROC curve has no recorded validation predictions to come from."""
    return [record.run for record in collect(db, runs).records if not record.roc_points]
