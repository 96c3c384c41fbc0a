"""What a report may need done first, for ``leuktui report --evaluate --cam`` and the report
dialog's two boxes alike: validation predictions for the ROC curves, and the Grad-CAM maps of
the mistakes gallery and the preprocessing examples. Both load torch, when called."""

from __future__ import annotations

from collections.abc import Callable

from db import Database, Workspace
from leuktui.formatting import visible


def draw_gallery_maps(db: Database, workspace: Workspace, runs, *, say: Callable[[str], None]) -> None:
    """The Grad-CAM maps of the report's figures where they are missing: each run's mistakes in
    the gallery, and the preprocessing examples' cells by the first run on their dataset."""
    from engine.cam import grad_cams
    from engine.predict import PredictError
    from leuktui.report.build import example_cam_run, example_samples, gallery_mistakes
    from leuktui.report.data import collect

    records = collect(db, runs).records
    data_dir, samples, _ = example_samples(records)
    cam_run = example_cam_run(workspace, records, data_dir) if data_dir is not None else None
    if cam_run is not None:  # the preprocessing examples' cells, each for its own class
        try:
            grad_cams(db, workspace, cam_run, samples, [sample.label for sample in samples], checkpoint="best")
        except PredictError as exc:
            say(f"  note: {exc}")
    for run in runs:
        found, picked = gallery_mistakes(db, run)
        if found is None:
            continue
        items = [m for _, mistakes in picked for m in mistakes if m.id in found.samples]
        maps = found.cam_paths(workspace)
        if not items or all(m.id in maps and maps[m.id].is_file() for m in items):
            continue
        say(f"drawing the Grad-CAM maps of run {run.id}'s mistakes ({visible(run.name)})…")
        try:
            grad_cams(db, workspace, run.id, [found.samples[m.id] for m in items], [m.predicted for m in items],
                      checkpoint=found.evaluation.checkpoint, epoch=found.evaluation.epoch)
        except PredictError as exc:  # no checkpoint here, or of another epoch: the report says the maps are missing
            say(f"  note: {exc}")


def evaluate_for_roc(db: Database, workspace: Workspace, runs, *, say: Callable[[str], None]) -> None:
    """Record single-view validation predictions of the best checkpoint for runs that have none."""
    from leuktui.report.data import runs_without_predictions

    missing = runs_without_predictions(db, runs)
    if not missing:
        return
    from engine.predict import evaluate_run

    for run in missing:
        say(f"evaluating run {run.id} ({visible(run.name)}) on the validation set for its ROC curve…")
        evaluate_run(db, workspace, run.id, tta="single", checkpoint="best", split="valid")
