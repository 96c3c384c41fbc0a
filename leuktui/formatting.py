"""Plain views of database records for the CLI's tables and ``--json`` (no torch, no textual)."""

from __future__ import annotations

import os
import time
from typing import Any

from db.models import Epoch, Evaluation, Run
from db.vocabulary import METRICS, RUNNING, epoch_metrics

EPOCH_COLUMNS = (
    "epoch", "step", "train_loss", "train_acc", *(m.epoch_column for m in METRICS), "confusion", "lr", "seconds", "images_per_s",
)
EVALUATION_COLUMNS = (
    "id", "origin", "checkpoint", "epoch", "split", "tta", "n", *(m.key for m in METRICS), "confusion", "intervals", "output_path",
    "created_at",
)


# Control characters (ANSI and OSC escapes start with ESC) shown as what they are, never sent to a
# terminal; a newline or a tab is one visible mark, so a name never splits a table row.
_VISIBLE = {"\n": "↵", "\r": "↵", "\t": "⇥"}


def visible(value: object, *, newlines: bool = False) -> str:
    """A user's string (a name, a tag, a note, a path) as it may be shown in a terminal: control
    characters become visible escapes (``\\x1b``), newlines ``↵`` unless ``newlines`` keeps them."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() or char == " " or (newlines and char == "\n") else _VISIBLE.get(char) or (
            f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        for char in text
    )


def age(timestamp: float | None, now: float | None = None) -> str:
    if timestamp is None:
        return "-"
    seconds = max(0, int((now or time.time()) - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


NAME_WIDTH = 28  # a run's name in a table or a legend; longer ones end in "…" (the run screen shows them whole)


def short_name(name: str, width: int = NAME_WIDTH, *, shared: str = "") -> str:
    """``name`` in at most ``width`` characters. A long name that begins with ``shared`` (what the
    long names beside it all begin with: ``shared_start``) is shown without it, "…" in its place,
    so a sweep's runs keep the words that tell them apart."""
    if len(name) <= width:
        return name
    if shared and name.startswith(shared):
        name = "…" + name[len(shared):]
        if len(name) <= width:
            return name
    return name[: width - 1] + "…"


def shared_start(names, width: int = NAME_WIDTH) -> str:
    """The words ("-"-separated) that every name longer than ``width`` begins with, where two or
    more are: ``resnet18-128px-`` for a sweep's ``resnet18-128px-histeq-lr=0.001-seed=0-91886f``
    and its siblings. Never a whole name: at least its last word is left."""
    long = [name for name in names if len(name) > width]
    if len(long) < 2:
        return ""
    start = os.path.commonprefix(long)
    cut = start.rfind("-", 0, min(len(name) for name in long) - 1)
    return start[: cut + 1] if cut > 0 else ""


FINAL_FIT_TEXT = "final fit"  # trained on train + valid: no validation score to show


def is_final_fit(run: Run) -> bool:
    return (run.config or {}).get("fit_on") == "train+valid"


def best_accuracy_text(run: Run) -> str:
    """The best validation accuracy as ``ls`` and the app show it; a final fit has none."""
    return FINAL_FIT_TEXT if is_final_fit(run) else percent(run.best_val_acc)


def run_to_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "state": run.state,  # the status as ls shows it: cancelling while a cancel is pending
        "model": run.model,
        "epochs_done": run.epochs_done,
        "epochs": run.config.get("epochs"),
        "eval_mode": run.config.get("eval_mode"),
        "best_epoch": run.best_epoch,
        **best_metrics(run),
        "tags": run.tags,
        "notes": run.notes,
        "sweep_id": run.sweep_id,
        "trial": run.trial,
        "parent_id": run.parent_id,
        "final_fit": is_final_fit(run),
        "config_hash": run.config_hash,
        "device": run.device,
        "host": run.host,
        "pid": run.pid,
        "backend": run.backend,
        "job_id": run.job_id,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "heartbeat_at": run.heartbeat_at,
        "error": run.error,
        "phase": run.phase,
    }


def epoch_to_dict(epoch: Epoch) -> dict[str, Any]:
    return {name: getattr(epoch, name) for name in EPOCH_COLUMNS}


def evaluation_to_dict(evaluation: Evaluation) -> dict[str, Any]:
    return {name: getattr(evaluation, name) for name in EVALUATION_COLUMNS}


def best_metrics(run: Run) -> dict[str, float | None]:
    """``best_val_<metric>`` for every registered metric: its value at the run's best epoch."""
    at_best = epoch_metrics(run.summary or {})
    # The run's own summary columns (best_val_acc, ...) where it has them: they are the indexed copy.
    return {m.summary_key: getattr(run, m.summary_key, at_best.get(m.key)) for m in METRICS}


def status_text(run: Run) -> str:
    """The status as the app and ``ls`` show it: while a run is running, what it is doing now
    (``epoch 2/6 step 12/40``), or ``cancelling`` once its cancel was asked for."""
    if run.state != RUNNING:
        return run.state
    return run.phase or run.status
