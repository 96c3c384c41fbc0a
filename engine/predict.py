"""Re-evaluating a run's checkpoint (single view, five- or ten-crop) and writing the Kaggle
submission, both recorded in the database with their per-image predictions.
"""

from __future__ import annotations

import csv
import os
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from db import Database, Workspace
from db.models import Evaluation
from db.vocabulary import CHECKPOINTS, eval_mode
from engine.checkpoint import load_checkpoint
from engine.config import ConfigError, RunConfig
from engine.datasets import (
    DatasetError,
    Split,
    dataset_holding,
    load_split,
    load_test,
    resolve_test_csv,
)
from engine.device import make_precision, resolve_device
from engine.errors import UserError
from engine.files import atomic_write
from engine.loop import check_outputs, evaluate, predict_probabilities
from engine.models import build_model, strip_compile_prefix
from engine.pipeline import Preprocess, decode_images


class PredictError(UserError):
    """A prediction request a user can fix (no checkpoint, bad output path); one line."""


RETRAIN = "its training diverged: retrain with a lower --lr, --amp off, or a larger --image-size"

@dataclass
class LoadedRun:
    config: RunConfig
    model: torch.nn.Module
    device: torch.device
    epoch: int
    run_id: int
    checkpoint: str

    @property
    def named(self) -> str:
        return f"run {self.run_id}'s {self.checkpoint} checkpoint (epoch {self.epoch})"


def tta_mode(value: str, flag: str = "--tta") -> str:
    """The eval mode's key for a user's ``--tta`` value (``none`` is the single view)."""
    try:
        return eval_mode(value).key
    except ValueError as exc:
        raise ConfigError(flag.lstrip("-"), str(exc)) from None


def load_run_model(db: Database, workspace: Workspace, run_id: int, checkpoint: str, device: str | None = None) -> LoadedRun:
    if checkpoint not in CHECKPOINTS:
        raise ConfigError("checkpoint", f"{checkpoint!r} is not one of {', '.join(CHECKPOINTS)}")
    record = db.get_run(run_id)
    path = workspace.checkpoint_path(run_id, checkpoint)
    if not path.is_file():
        if checkpoint == "best" and (record.config or {}).get("fit_on") == "train+valid":
            fits = f", or export its run's fits with `leuktui finalize {record.parent_id} --export`" if record.parent_id else ""
            raise PredictError(f"run {run_id}: a final fit keeps no best checkpoint (it has no validation score to choose one "
                               f"by); give --checkpoint last{fits}")
        raise PredictError(f"run {run_id}: no {checkpoint} checkpoint at {path} (status {record.status})")
    state = load_checkpoint(path)
    config = RunConfig.from_dict(state["config"])
    torch_device = resolve_device(device or config.device)
    model = build_model(config.model, config.num_outputs)
    model.load_state_dict(strip_compile_prefix(state["model"]))
    model.to(torch_device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    model.eval()
    return LoadedRun(config, model, torch_device, int(state["epoch"]), run_id, checkpoint)


Phase = Callable[[str, int, int], None]
"""``on_phase(what, done, total)``: what a long evaluation or export is doing ("decoding images",
"predicting"), and how far it is, for a progress display."""


def _batches(on_batch: Callable[[int, int], None] | None, on_phase: Phase | None, what: str = "predicting"):
    if on_phase is None:
        return on_batch

    def report(done: int, total: int) -> None:
        on_phase(what, done, total)
        if on_batch is not None:
            on_batch(done, total)

    return report


def _images(loaded: LoadedRun, workspace: Workspace, split: Split, on_phase: Phase | None = None) -> np.ndarray:
    return decode_images(
        split.samples, Preprocess.from_config(loaded.config), cache_dir=workspace.cache_dir, workers=loaded.config.workers,
        on_progress=(lambda done, total: on_phase("decoding images", done, total)) if on_phase is not None else None,
    )


def predict_split(loaded: LoadedRun, workspace: Workspace, split: Split, mode: str, on_batch: Callable[[int, int], None] | None,
                  on_phase: Phase | None = None) -> np.ndarray:
    """P(ALL) per image of ``split`` under the test-time views of ``mode``."""
    precision = make_precision(loaded.device, loaded.config.amp)
    images = _images(loaded, workspace, split, on_phase)
    return check_outputs(predict_probabilities(loaded.model, images, loaded.config, loaded.device, precision, mode=mode,
                                               on_batch=_batches(on_batch, on_phase)),
                         f"images of {split.source.name} with {loaded.named}", RETRAIN)


def evaluate_run(
    db: Database,
    workspace: Workspace,
    run_id: int,
    *,
    tta: str = "single",
    checkpoint: str = "best",
    split: str = "valid",
    on_batch: Callable[[int, int], None] | None = None,
    on_phase: Phase | None = None,
) -> tuple[Evaluation, dict[str, Any]]:
    """Score a checkpoint on a labelled split without retraining; record it and its predictions."""
    mode = tta_mode(tta)
    if on_phase is not None:
        on_phase(f"loading run {run_id}'s {checkpoint} checkpoint", 0, 1)
    loaded = load_run_model(db, workspace, run_id, checkpoint)
    data = load_split(loaded.config.data_dir, split)
    labels = np.asarray(data.labels, dtype=np.int64)
    precision = make_precision(loaded.device, loaded.config.amp)
    images = _images(loaded, workspace, data, on_phase)
    metrics, probabilities = evaluate(
        loaded.model, images, labels, loaded.config, loaded.device, precision, mode=mode, on_batch=_batches(on_batch, on_phase),
        where=f"{split} images with {loaded.named}", advice=RETRAIN,
    )
    predictions = [
        (s.ident, float(p), int(p >= 0.5), s.label) for s, p in zip(data.samples, probabilities, strict=True)
    ]
    from engine.stats import metric_intervals

    evaluation = db.add_evaluation(
        run_id, checkpoint=checkpoint, epoch=loaded.epoch, split=split, tta=mode, metrics=metrics, n=len(data), predictions=predictions,
        intervals=metric_intervals(labels, probabilities),
    )
    return evaluation, metrics


def check_writable(output: Path, *, force: bool = False, protected: Sequence[Path | str] = (), workspace: Workspace | None = None) -> None:
    """Refuse, before anything is computed, an output that is not ours to write: anything but a
    regular file or a new name (a device, a FIFO, a folder), a file inside a dataset folder
    (``protected``: its CSVs and images), the workspace's own files (its database, runs and
    caches: anywhere in it but ``exports/``), or an existing file unless ``force``."""
    folder = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise PredictError(f"{output}: is a folder, expected a file name")
    if output.exists() or output.is_symlink():
        try:
            kind = output.stat().st_mode
        except OSError as exc:
            raise PredictError(f"{output}: cannot be read ({exc.strerror})") from None
        if not stat.S_ISREG(kind):
            raise PredictError(f"{output}: not a regular file (a device, a FIFO or a socket); give a file name")
    target = output.resolve()
    root = dataset_holding(output, protected)  # the one rule a report and the mistakes' copies follow too
    if root is not None:
        raise PredictError(f"{output}: inside the dataset folder {root}; a submission never overwrites the dataset")
    if workspace is not None:
        _check_outside_workspace(output, target, workspace)
    if target.exists() and not force:
        raise PredictError(f"{output}: already exists; choose another file name, or replace it with --force "
                           "(a recorded submission there is kept aside)")
    if not folder.is_dir():
        raise PredictError(f"{folder}: output folder does not exist")
    if not os.access(folder, os.W_OK):
        raise PredictError(f"{folder}: output folder is not writable")
    try:  # the file is written beside its name, then renamed: a folder that takes no new file (/proc) is refused now
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise PredictError(f"{output}: no file can be written in {folder} ({exc.strerror})") from None


def _check_outside_workspace(output: Path, target: Path, workspace: Workspace) -> None:
    home, exports = workspace.home.resolve(), workspace.exports_dir.resolve()
    if (target == home or home in target.parents) and exports not in target.parents:
        raise PredictError(f"{output}: inside the workspace {home}, among its database, runs and caches; "
                           f"write the submission in {exports} or outside the workspace")
    url = workspace.db_url
    if url.startswith("sqlite:///"):
        database = Path(url.removeprefix("sqlite:///")).expanduser().resolve()
        if target in {database, *(database.with_name(database.name + end) for end in ("-wal", "-shm", "-journal"))}:
            raise PredictError(f"{output}: is the workspace's database; a submission never overwrites it")


def write_submission_file(db: Database, output: Path, header: list[str], rows: list[list[Any]]) -> str:
    """Write the submission; a recorded submission's file it replaces (``--force``) is first moved
    aside and its record follows it, so no two records ever name one file. Returns the path."""
    written = str(output.parent.resolve() / output.name)  # the name written, a link's own included
    earlier = db.submission_for_path(written)
    if earlier is not None and output.exists():
        aside = output.with_name(f"{output.stem}.submission-{earlier.id}{output.suffix}")
        os.replace(output, aside)
        db.move_submission(earlier.id, str(aside.resolve()))
    write_csv_atomic(output, header, rows)
    return written


def write_csv_atomic(output: Path, header: list[str], rows: list[list[Any]]) -> None:
    with atomic_write(output, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def export_submission(
    db: Database,
    workspace: Workspace,
    run_id: int,
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
    """Write ``ID,label`` (plus ``prob_all`` with ``proba``) in the test CSV's row order.

    ID is the test CSV's ``Path`` string, label 1 = ALL, 0 = HEM. A CSV with a label column
    (``valid.csv``) is accepted; its labels are ignored for the file and kept in the database.
    """
    output = Path(output).expanduser()
    check_writable(output, force=force, protected=[db.get_run(run_id).config.get("data_dir", "")], workspace=workspace)
    mode = tta_mode(tta)
    if on_phase is not None:
        on_phase(f"loading run {run_id}'s {checkpoint} checkpoint", 0, 1)
    loaded = load_run_model(db, workspace, run_id, checkpoint)
    root = Path(loaded.config.data_dir)
    data = load_test(root, resolve_test_csv(loaded.config, test_csv))
    if not data.samples:
        raise DatasetError(f"{data.source}: no rows to predict")
    probabilities = predict_split(loaded, workspace, data, mode, on_batch, on_phase)
    predicted = (probabilities >= 0.5).astype(int)
    header = ["ID", "label", "prob_all"] if proba else ["ID", "label"]
    rows = [
        [s.ident, int(y), f"{p:.6f}"] if proba else [s.ident, int(y)]
        for s, y, p in zip(data.samples, predicted, probabilities, strict=True)
    ]
    written = write_submission_file(db, output, header, rows)
    db.add_evaluation(
        run_id,
        checkpoint=checkpoint,
        epoch=loaded.epoch,
        split=data.source.name,
        tta=mode,
        metrics=None,
        n=len(rows),
        predictions=[(s.ident, float(p), int(y), None) for s, y, p in zip(data.samples, predicted, probabilities, strict=True)],
        output_path=written,
    )
    db.add_submission([run_id], checkpoint=checkpoint, tta=mode, test_csv=str(data.source.resolve()), path=written, rows=len(rows))
    return Path(written), len(rows)
