"""Ensemble submissions: several runs' ALL probabilities averaged on one test CSV.

Each run predicts with its own checkpoint, image size and preprocessing (its own config), under
the same test-time views; the file is written once every run has predicted, and is recorded as
one submission naming all the runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from db import Database, Workspace
from engine.config import RunConfig
from engine.datasets import DatasetError, load_test, resolve_test_csv
from engine.errors import UserError
from engine.predict import (
    Phase,
    check_writable,
    load_run_model,
    predict_split,
    tta_mode,
    write_submission_file,
)


class EnsembleError(UserError):
    """Runs that cannot be averaged into one submission; the message names them."""


def export_ensemble(
    db: Database,
    workspace: Workspace,
    run_ids: Sequence[int],
    output: Path | str,
    *,
    test_csv: Path | str | None = None,
    tta: str = "none",
    checkpoint: str = "best",
    proba: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
    force: bool = False,
    on_phase: Phase | None = None,
) -> tuple[Path, int]:
    """Write ``ID,label`` (plus ``prob_all``) from the mean ALL probability of ``run_ids``."""
    if len(run_ids) < 2:
        raise EnsembleError("an ensemble needs two or more runs")
    repeated = sorted({run_id for run_id in run_ids if list(run_ids).count(run_id) > 1})
    if repeated:
        raise EnsembleError(f"run {repeated[0]} is named twice in the ensemble")
    output = Path(output).expanduser()
    check_writable(output, force=force, protected=[db.get_run(run_id).config.get("data_dir", "") for run_id in run_ids],
                   workspace=workspace)
    mode = tta_mode(tta)
    configs = {run_id: RunConfig.from_dict(db.get_run(run_id).config) for run_id in run_ids}
    csv_paths = {run_id: resolve_test_csv(config, test_csv) for run_id, config in configs.items()}
    first = run_ids[0]
    for run_id in run_ids[1:]:
        if csv_paths[run_id].resolve() != csv_paths[first].resolve():
            raise EnsembleError(
                f"runs {first} and {run_id} predict different test CSVs ({csv_paths[first]}, {csv_paths[run_id]}); "
                "choose one with --test-csv"
            )

    probabilities: list[np.ndarray] = []
    samples = None
    epochs: dict[int, int] = {}
    for index, run_id in enumerate(run_ids):
        if on_phase is not None:
            on_phase(f"loading run {run_id}'s {checkpoint} checkpoint ({index + 1} of {len(run_ids)})", 0, 1)
        loaded = load_run_model(db, workspace, run_id, checkpoint)
        data = load_test(Path(loaded.config.data_dir), csv_paths[run_id])
        if not data.samples:
            raise DatasetError(f"{data.source}: no rows to predict")
        if samples is not None and [s.ident for s in data.samples] != [s.ident for s in samples]:
            raise EnsembleError(f"run {run_id}: the test CSV's rows differ from run {first}'s")
        samples = data.samples

        def report(done: int, total: int, index: int = index) -> None:
            if on_batch is not None:
                on_batch(index * total + done, total * len(run_ids))

        phase = (lambda what, done, total, run_id=run_id: on_phase(f"run {run_id}: {what}", done, total)) if on_phase else None
        probabilities.append(predict_split(loaded, workspace, data, mode, report, phase))
        epochs[run_id] = loaded.epoch
        del loaded

    assert samples is not None
    mean = np.mean(np.stack(probabilities), axis=0)
    predicted = (mean >= 0.5).astype(int)
    header = ["ID", "label", "prob_all"] if proba else ["ID", "label"]
    rows = [
        [s.ident, int(y), f"{p:.6f}"] if proba else [s.ident, int(y)]
        for s, y, p in zip(samples, predicted, mean, strict=True)
    ]
    written = write_submission_file(db, output, header, rows)
    for run_id, run_probabilities in zip(run_ids, probabilities, strict=True):
        db.add_evaluation(
            run_id, checkpoint=checkpoint, epoch=epochs[run_id], split=csv_paths[first].name, tta=mode, metrics=None, n=len(rows),
            predictions=[(s.ident, float(p), int(p >= 0.5), None) for s, p in zip(samples, run_probabilities, strict=True)],
            output_path=written,
        )
    db.add_submission(list(run_ids), checkpoint=checkpoint, tta=mode, test_csv=str(csv_paths[first]), path=written, rows=len(rows))
    return Path(written), len(rows)


def export_runs(db: Database, workspace: Workspace, run_ids: Sequence[int], output: Path | str, **options: Any) -> tuple[Path, int]:
    """The one way a submission is written: one run's predictions, or several runs' ensemble."""
    if len(run_ids) == 1:
        from engine.predict import export_submission

        return export_submission(db, workspace, run_ids[0], output, **options)
    return export_ensemble(db, workspace, list(run_ids), output, **options)


def export_final(db: Database, workspace: Workspace, run_id: int, output: Path | str | None = None, *, tta: str | None = None,
                 force: bool = False) -> tuple[Path, int, Any, str]:
    """The submission of run ``run_id``'s finished final fits: their ensemble (or the one fit),
    from their ``last`` checkpoints, recorded with its lineage. Returns the path, the rows, the
    submission and the lineage line."""
    source = db.get_run(run_id)
    done, waiting, left_out = db.final_fit_plan(run_id)
    if waiting:
        raise EnsembleError(f"run {run_id}: its final fits are not all finished: "
                            + ", ".join(f"{run.id} ({run.status})" for run in waiting))
    if not done:
        stopped = ", ".join(f"{run.id} ({run.status})" for run in left_out)
        raise EnsembleError(f"run {run_id}: no finished final fit yet" + (f" ({stopped}; `leuktui retry` trains one again)" if stopped
                                                                           else f"; queue one with `leuktui finalize {run_id}`"))
    views = tta or source.config.get("eval_mode", "single")
    ids = [run.id for run in done]
    if output is None:
        output = workspace.export_path(ids, views, name=f"final-{run_id}")
        output.parent.mkdir(parents=True, exist_ok=True)
    path, rows = export_runs(db, workspace, ids, output, tta=views, checkpoint="last", force=force)
    submission = db.submission_for_path(str(path))
    lineage = (f"final fit of run {run_id}: run{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} trained on train + valid "
               f"for {done[0].config['epochs']} epochs (seed{'s' if len(ids) > 1 else ''} {', '.join(str(r.config['seed']) for r in done)}); "
               "no validation score" + (f"; left out: {', '.join(f'run {r.id} ({r.status})' for r in left_out)}" if left_out else ""))
    db.set_submission_notes(submission.id, lineage)
    return Path(path), rows, db.get_submission(submission.id), lineage
