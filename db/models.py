"""SQLAlchemy 2.0 typed models of runs, epochs, step metrics, evaluations and predictions.

Times are UNIX seconds (floats): timezone-free, sortable, and the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from db.vocabulary import (
    CANCELLING,
    FINISHED_STATUSES,
    METRICS,
    RUN_STATUSES,
    RUNNING,
    WAITING_STATUSES,
)

__all__ = ["FINISHED_STATUSES", "RUN_STATUSES", "WAITING_STATUSES"]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def _metric_columns(name: str, column_of) -> type:
    """A mixin with one nullable float column per registered metric, named by ``column_of``."""
    return type(name, (), {column_of(metric): mapped_column(Float, nullable=True) for metric in METRICS})


EpochMetricColumns = _metric_columns("EpochMetricColumns", lambda metric: metric.epoch_column)
EvaluationMetricColumns = _metric_columns("EvaluationMetricColumns", lambda metric: metric.key)


class Sweep(Base):
    __tablename__ = "sweep"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    base_config: Mapped[dict[str, Any]]
    factors: Mapped[dict[str, Any]]
    created_at: Mapped[float] = mapped_column(Float)
    # grid: the cartesian product of ``factors``; study: an Optuna search over a space (``study``)
    kind: Mapped[str] = mapped_column(String(16), default="grid", server_default="grid")
    # A study's settings: its space, trials, parallel, sampler, pruner, metric, direction, and
    # when it was stopped (runner.studies reads and writes it).
    study: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Written first in the transaction that gives a study its next trial, so two schedulers take turns.
    study_turn_at: Mapped[float | None] = mapped_column(Float, nullable=True)

    @property
    def is_study(self) -> bool:
        return self.kind == "study"


class Run(Base):
    __tablename__ = "run"
    # AUTOINCREMENT on SQLite: a deleted run's id is never given to another run (PostgreSQL's sequence never goes back).
    __table_args__ = (
        Index("ix_run_queue_order", "status", "priority", "id"),
        # One run per trial of a study (grid runs have no trial; NULLs never collide).
        Index("uq_run_sweep_trial", "sweep_id", "trial", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    config: Mapped[dict[str, Any]]
    config_hash: Mapped[str] = mapped_column(String(32), index=True)
    model: Mapped[str] = mapped_column(String(200))
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweep.id", ondelete="SET NULL"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="SET NULL"))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    device: Mapped[str | None] = mapped_column(String(64))
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[float] = mapped_column(Float)
    # Bumped by every change the app shows (not by heartbeats), so polling reads only changes.
    updated_at: Mapped[float] = mapped_column(Float, index=True, server_default="0")
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    # Set by `leuktui cancel` (or the app); the scheduler then stops the worker.
    cancel_requested_at: Mapped[float | None] = mapped_column(Float)
    notes: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Where it ran: host, device name, torch/CUDA versions, the project's version.
    environment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    # Summary columns, kept current as epochs arrive, so listing never scans the epoch table.
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    best_val_acc: Mapped[float | None] = mapped_column(Float)
    best_val_f1: Mapped[float | None] = mapped_column(Float)
    best_val_auc: Mapped[float | None] = mapped_column(Float)
    last_step: Mapped[int] = mapped_column(Integer, default=0)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # What the run is doing before its first epoch ends: "decoding images 340/600", "epoch 1 step 12/40".
    phase: Mapped[str | None] = mapped_column(String(200))
    # The worker's process start time (psutil), so a reused pid is never taken for the worker.
    pid_started_at: Mapped[float | None] = mapped_column(Float)
    # Where the worker runs: "local" (a subprocess of the scheduler) or "slurm" (a batch job).
    backend: Mapped[str | None] = mapped_column(String(16))
    job_id: Mapped[str | None] = mapped_column(String(64))
    # A study's trial: the number of its Optuna trial (a resumed trial continues as a new one).
    trial: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @property
    def state(self) -> str:
        """The status in words for messages and listings: ``cancelling`` for a running run whose
        cancel was asked for, else the status."""
        return CANCELLING if self.status == RUNNING and self.cancel_requested_at else self.status

    @property
    def owner(self) -> str:
        """Who this record is, for its folder's ``owner`` file: another record with the same id
        (a database replaced or emptied) is never created at the same instant."""
        return f"run {self.id} created {self.created_at!r}"


class Epoch(EpochMetricColumns, Base):
    __tablename__ = "epoch"
    __table_args__ = (UniqueConstraint("run_id", "epoch", name="uq_epoch_run_epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    step: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float)
    train_acc: Mapped[float | None] = mapped_column(Float)
    # val_loss, val_acc, sensitivity, ... : one column per metric of db.vocabulary.METRICS
    confusion: Mapped[list[Any]] = mapped_column(JSON)
    lr: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    images_per_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)


class StepMetric(Base):
    """One number per (run, key, step); the primary key makes a replayed batch a no-op."""

    __tablename__ = "step_metric"

    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class Evaluation(EvaluationMetricColumns, Base):
    __tablename__ = "evaluation"
    __table_args__ = (Index("ix_evaluation_run", "run_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    checkpoint: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int | None] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(255))
    tta: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(Integer)
    # loss, acc, sensitivity, ... : one column per metric of db.vocabulary.METRICS
    confusion: Mapped[list[Any] | None] = mapped_column(JSON)
    output_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    # {"method", "level", "resamples", "seed", "n", "metrics": {key: [low, high] | None}}
    intervals: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # training: recorded by the worker at the best epoch; evaluate: a re-evaluation or a prediction
    origin: Mapped[str] = mapped_column(String(16), default="evaluate", server_default="evaluate")

    def interval(self, key: str) -> list[float] | None:
        """The bootstrap interval of metric ``key``, if one was recorded."""
        return ((self.intervals or {}).get("metrics") or {}).get(key)


class Prediction(Base):
    __tablename__ = "prediction"
    __table_args__ = (Index("ix_prediction_evaluation", "evaluation_id", "row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("evaluation.id", ondelete="CASCADE"))
    row: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    probability: Mapped[float] = mapped_column(Float)
    predicted: Mapped[int] = mapped_column(Integer)
    label: Mapped[int | None] = mapped_column(Integer)


class Submission(Base):
    """A submission file written by ``export``: which runs (several for an ensemble), checkpoint,
    test-time views and test CSV, and the score once known (from an answer key or a leaderboard)."""

    __tablename__ = "submission"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_ids: Mapped[list[Any]] = mapped_column(JSON)
    checkpoint: Mapped[str] = mapped_column(String(16))
    tta: Mapped[str] = mapped_column(String(16))
    test_csv: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    rows: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float)
    score_source: Mapped[str | None] = mapped_column(String(16))  # "key" or "leaderboard"
    scored_at: Mapped[float | None] = mapped_column(Float)
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
