"""A run's checkpoints: their layout, atomic saves, best tracking, and the one way to load them.

A checkpoint holds only tensors and plain values (model, optimizer, scheduler, scaler and
sampler state, epoch, step, config, the best epoch so far and the epoch's metrics), so it loads
with ``weights_only=True``: a file planted in a shared workspace is refused, never executed.
``last`` is written at the end of every epoch; ``best`` is a hard link to the ``last`` of the
best epoch (a copy where the file system has no links).
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from db.vocabulary import CHECKPOINTS, metric
from engine.errors import UserError
from engine.files import atomic_write


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or not a plain checkpoint; names the file."""


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded on the CPU with ``weights_only=True``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied") from None
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"(?:unsupported GLOBAL|Unsupported global:?) ([\w.]+)", str(exc))
        if blocked:
            raise CheckpointError(
                f"{path}: refused, it holds more than tensors and plain values ({blocked.group(1)})"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (not a torch file)") from None
    except (EOFError, zipfile.BadZipFile, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(state, dict) or not {"model", "epoch", "config"} <= state.keys():
        raise CheckpointError(f"{path}: not a leuktui checkpoint (no model, epoch and config)")
    return state


class CheckpointSaver:
    """Owns one run's ``checkpoints/`` folder and decides which epoch is ``best``.

    ``best`` is the metric row of the best epoch so far by ``best_metric`` (``val_acc``,
    ``val_loss``, ...), ``bad_epochs`` how many epochs since it improved (early stopping).
    """

    def __init__(self, folder: Path, best_metric: str):
        self.folder = Path(folder)
        self.metric = metric(best_metric)
        self.best: dict[str, Any] | None = None
        self.bad_epochs = 0

    def path(self, which: str) -> Path:
        if which not in CHECKPOINTS:
            raise ValueError(f"{which!r} is not one of {', '.join(CHECKPOINTS)}")
        return self.folder / f"{which}.pt"

    def improves(self, row: dict[str, Any]) -> bool:
        """Whether an epoch's metric row beats the best so far."""
        column = self.metric.epoch_column
        return self.metric.better(row.get(column), self.best.get(column) if self.best else None)

    def save(self, state: dict[str, Any], row: dict[str, Any]) -> bool:
        """Record an epoch's end: ``state`` as ``last`` and, if ``row`` improves, as ``best``.

        The best-tracking values go into the checkpoint, so a resume continues them. Returns
        whether this epoch is the new best.
        """
        improved, best, bad_epochs = self._decide(row)
        self.folder.mkdir(parents=True, exist_ok=True)
        last = self.path("last")
        try:
            with atomic_write(last, durable=True) as out:
                torch.save({**state, "best": best, "bad_epochs": bad_epochs, "metrics": row}, out)
            if improved:
                self._link_best(last)
        except (OSError, RuntimeError) as exc:
            # torch reports a failed write (a full disk) as a RuntimeError raised over the OSError.
            cause = exc if isinstance(exc, OSError) else exc.__context__
            if not isinstance(cause, OSError):
                raise
            raise CheckpointError(f"{last}: cannot be written ({cause.strerror or cause}); the previous checkpoint is kept") from None
        self.best, self.bad_epochs = best, bad_epochs
        return improved

    def _decide(self, row: dict[str, Any]) -> tuple[bool, dict[str, Any] | None, int]:
        """Whether ``row`` is the new best, the best after it, and the epochs since the best."""
        improved = self.improves(row)
        return improved, dict(row) if improved else self.best, 0 if improved else self.bad_epochs + 1

    def follow(self, row: dict[str, Any]) -> bool:
        """What ``save`` decides, without writing: the best tracking of a DDP rank that does not save."""
        improved, self.best, self.bad_epochs = self._decide(row)
        return improved

    def _link_best(self, last: Path) -> None:
        best = self.path("best")
        temp = best.with_name(f".{best.name}.link")
        temp.unlink(missing_ok=True)
        try:
            os.link(last, temp)
            os.replace(temp, best)
        except OSError:
            temp.unlink(missing_ok=True)
            with last.open("rb") as source, atomic_write(best, durable=True) as out:
                shutil.copyfileobj(source, out)

    def relink_best(self) -> None:
        """Make ``best`` the ``last`` checkpoint again: for a resume whose ``last`` is the best
        epoch, as a kill between writing ``last`` and linking ``best`` can leave ``best`` behind."""
        self._link_best(self.path("last"))

    def load(self, which: str) -> dict[str, Any]:
        """Load ``which`` and, for ``last``, take up its best tracking (resume)."""
        state = load_checkpoint(self.path(which))
        if which == "last":
            self.best, self.bad_epochs = state.get("best"), int(state.get("bad_epochs", 0))
        return state

    def exists(self, which: str) -> bool:
        return self.path(which).is_file()
