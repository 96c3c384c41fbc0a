"""The project's one vocabulary: metrics, eval modes, checkpoint names and run states.

Every other place (the worker, the database columns, ``ls``/``show``, compare, ablation, the run
screen, ``--best-metric``, Markdown tables) iterates over these definitions instead of spelling
them again. It lives in ``db`` because the database's columns are made from it and ``db`` is the
layer everything else may import; it imports nothing of the project.

Adding a metric is one entry in ``METRICS`` (which names the scikit-learn function computing it)
and one migration adding its column to ``epoch`` and ``evaluation``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# -- metrics ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A number computed on a labelled set (a validation epoch, or an evaluation).

    ``key`` names it in metric dicts and in the ``evaluation`` table; ``epoch_column`` is its
    column in the ``epoch`` table (``val_acc`` beside ``train_acc``); ``best`` is how a run's
    best epoch is chosen by it (``--best-metric val_<key>``).
    """

    key: str
    label: str
    title: str
    higher_is_better: bool
    # How it is computed: a function of ``sklearn.metrics`` called with the true labels and either
    # the predicted labels or P(ALL), plus keyword options.
    sklearn: str
    on: str = "predicted"  # "predicted" (labels at the 0.5 threshold) or "probability"
    options: tuple[tuple[str, Any], ...] = ()
    kind: str = "ratio"  # ratio (shown as a percentage), score (4 decimals), loss (4 decimals)
    epoch_column: str = ""

    def __post_init__(self) -> None:
        if not self.epoch_column:
            object.__setattr__(self, "epoch_column", self.key)

    @property
    def best_name(self) -> str:
        return f"val_{self.key}"

    @property
    def summary_key(self) -> str:
        """Its key in a run's summary and in ``ls --json``: the value at the best epoch."""
        return f"best_val_{self.key}"

    def format(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{100 * value:.2f}%" if self.kind == "ratio" else f"{value:.4f}"

    def better(self, value: float | None, than: float | None) -> bool:
        """True when ``value`` beats ``than`` (a missing ``than`` is beaten by any number)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if than is None:
            return True
        return value > than if self.higher_is_better else value < than


METRICS: tuple[Metric, ...] = (
    Metric("acc", "accuracy", "acc", True, "accuracy_score", epoch_column="val_acc"),
    Metric("f1", "weighted F1", "F1", True, "f1_score", options=(("average", "weighted"), ("zero_division", 0.0)),
           kind="score"),
    Metric("auc", "ROC AUC", "AUC", True, "roc_auc_score", on="probability", kind="score"),
    Metric("sensitivity", "sensitivity (ALL recall)", "sens", True, "recall_score",
           options=(("pos_label", 1), ("zero_division", 0.0))),
    Metric("specificity", "specificity (HEM recall)", "spec", True, "recall_score",
           options=(("pos_label", 0), ("zero_division", 0.0))),
    Metric("mcc", "Matthews correlation", "MCC", True, "matthews_corrcoef", kind="score"),
    Metric("balanced_acc", "balanced accuracy", "bal acc", True, "balanced_accuracy_score"),
    Metric("loss", "loss", "loss", False, "log_loss", on="probability", options=(("labels", (0, 1)),),
           kind="loss", epoch_column="val_loss"),
)
METRIC_BY_KEY = {metric.key: metric for metric in METRICS}
BEST_METRICS = tuple(metric.best_name for metric in METRICS)


def metric(key: str) -> Metric:
    """The metric named ``key``, or ``val_<key>`` as ``--best-metric`` spells it."""
    name = key[4:] if key.startswith("val_") else key
    try:
        return METRIC_BY_KEY[name]
    except KeyError:
        raise KeyError(f"{key!r} is not a metric (known: {', '.join(METRIC_BY_KEY)})") from None


def epoch_metrics(row: Any) -> dict[str, float | None]:
    """``{key: value}`` of an epoch row (an ORM row or a dict of epoch columns)."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name, None)
    return {m.key: get(m.epoch_column) for m in METRICS}


# -- eval modes and checkpoints ---------------------------------------------------------------------


@dataclass(frozen=True)
class EvalMode:
    key: str
    label: str
    views: int
    aliases: tuple[str, ...] = ()


EVAL_MODES: tuple[EvalMode, ...] = (
    EvalMode("single", "single view", 1, aliases=("none",)),
    EvalMode("five", "5-crop", 5),
    EvalMode("ten", "10-crop", 10),
)
EVAL_MODE_KEYS = tuple(mode.key for mode in EVAL_MODES)
EVAL_MODE_BY_KEY = {mode.key: mode for mode in EVAL_MODES}
MULTI_VIEW_MODES = tuple(mode.key for mode in EVAL_MODES if mode.views > 1)


def eval_mode(name: str) -> EvalMode:
    """The eval mode a user named (``none`` is the single view); ValueError names the choices."""
    for mode in EVAL_MODES:
        if name == mode.key or name in mode.aliases:
            return mode
    choices = ", ".join(n for mode in EVAL_MODES for n in (*mode.aliases, mode.key))
    raise ValueError(f"{name!r} is not one of {choices}")


CHECKPOINTS = ("best", "last")
"""``last``: the end of the newest epoch (resume continues from it); ``best``: the best epoch by the
run's ``--best-metric``."""


# -- run states -------------------------------------------------------------------------------------

QUEUED, HELD, RUNNING, COMPLETED, FAILED, CANCELLED, INTERRUPTED, PRUNED = (
    "queued", "held", "running", "completed", "failed", "cancelled", "interrupted", "pruned",
)
# pruned: a study's trial its pruner stopped early (after that epoch's checkpoint); it is over.
RUN_STATUSES = (QUEUED, HELD, RUNNING, COMPLETED, FAILED, CANCELLED, INTERRUPTED, PRUNED)
# Shown, never stored: a running run whose cancel was asked for (it checkpoints, then stops).
CANCELLING = "cancelling"
# What a run is shown as, and what ``ls --status`` and the app's filter select by.
RUN_STATES = (QUEUED, HELD, RUNNING, CANCELLING, COMPLETED, FAILED, CANCELLED, INTERRUPTED, PRUNED)
WAITING_STATUSES = (QUEUED, HELD)
FINISHED_STATUSES = (COMPLETED, FAILED, CANCELLED, INTERRUPTED, PRUNED)
RESUMABLE_STATUSES = (INTERRUPTED, CANCELLED, FAILED)

# Which status may follow which; ``db.states`` refuses every other change.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    QUEUED: (HELD, RUNNING, CANCELLED),
    HELD: (QUEUED, CANCELLED),
    RUNNING: (COMPLETED, FAILED, CANCELLED, INTERRUPTED, PRUNED),
    COMPLETED: (),
    PRUNED: (),
    FAILED: (QUEUED, RUNNING),
    CANCELLED: (QUEUED, RUNNING),
    INTERRUPTED: (QUEUED, RUNNING),
}


# A study's states (runner.studies): giving trials, waiting for its last trials after a stop,
# stopped with trials to spare, or done with every trial it was given.
STUDY_SEARCHING, STUDY_STOPPING, STUDY_STOPPED, STUDY_FINISHED = "searching", "stopping", "stopped", "finished"
STUDY_STATES = (STUDY_SEARCHING, STUDY_STOPPING, STUDY_STOPPED, STUDY_FINISHED)


def sources_of(target: str) -> tuple[str, ...]:
    """The statuses a run may move to ``target`` from."""
    return tuple(source for source, targets in TRANSITIONS.items() if target in targets)
