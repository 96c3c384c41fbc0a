"""Optuna, where leuktui's studies keep their trials: the storage, the samplers and pruners a
study names, and the worker's side of a trial (report each epoch, ask whether to stop).

Storage is what Optuna recommends for the database the workspace uses: on PostgreSQL its RDB
storage in the same database (schema ``optuna``, see ``db.dialect.optuna_url``); on a SQLite
workspace its journal file, ``optuna.journal`` in the workspace (Optuna advises against SQLite
RDB storage with parallel workers). Either way ``optuna.load_study(study_name=NAME,
storage=...)`` opens a study from outside leuktui, and ``optuna-dashboard`` reads it.

A study's settings (a sweep's ``study`` JSON) name everything Optuna needs, so the scheduler that
asks for trials and the workers that report to them build the same pruner. Optuna is imported
inside the functions that use it: the app and the light commands never load it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db import Workspace, dialect
from db.errors import UserError
from db.vocabulary import metric

JOURNAL_FILE = "optuna.journal"

SAMPLERS = {
    "tpe": "Tree-structured Parzen Estimator: models good and bad trials' parameters, samples where good ones are likely",
    "random": "independent uniform draws from the space",
    "grid": "every combination of the space's values once (lists and stepped ranges only)",
}
PRUNERS = {
    "median": "stops a trial whose epoch is worse than the median of completed trials at that epoch",
    "hyperband": "runs brackets of successive halving with different budgets, keeping the best third at each rung",
    "asha": "asynchronous successive halving: at epochs 2, 6, 18, ... keeps a trial only if it is in the best third so far",
    "none": "never stops a trial early",
}


class StudyError(UserError):
    """A study that cannot be made or used as asked; one line, names the study."""


@dataclass(frozen=True)
class StudyStorage:
    """Where a workspace's studies live: ``kind`` journal (a file) or rdb (a database URL)."""

    kind: str
    location: str       # the journal file's path, or the RDB storage's URL (with its password)
    shown: str          # the same for people: the URL without its password

    def python(self, study_name: str) -> str:
        """The line that opens a study from a notebook."""
        if self.kind == "journal":
            return (f"optuna.load_study(study_name={study_name!r}, storage=optuna.storages.JournalStorage("
                    f"optuna.storages.journal.JournalFileBackend({self.location!r})))")
        return f"optuna.load_study(study_name={study_name!r}, storage={self.shown!r})"

    def dashboard(self) -> str:
        return f"optuna-dashboard {self.location if self.kind == 'journal' else repr(self.shown)}"


def storage_of(workspace: Workspace) -> StudyStorage:
    url = dialect.optuna_url(workspace.db_url)
    if url is None:
        path = str(workspace.home / JOURNAL_FILE)
        return StudyStorage("journal", path, path)
    from sqlalchemy.engine import make_url

    return StudyStorage("rdb", url, make_url(url).render_as_string(hide_password=True))


def quiet() -> None:
    """Optuna's own log lines ("Trial 3 finished ...") go to our logs, not to a user's terminal."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def open_storage(storage: StudyStorage):
    """The Optuna storage object (made once per process by its callers)."""
    import optuna

    quiet()
    if storage.kind == "journal":
        from optuna.storages.journal import JournalFileBackend

        Path(storage.location).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(storage.location))
    return optuna.storages.RDBStorage(storage.location, engine_kwargs={"pool_pre_ping": True})


def direction_of(metric_name: str) -> str:
    return "maximize" if metric(metric_name).higher_is_better else "minimize"


def pruner_for(settings: dict[str, Any]):
    """The pruner a study's settings name. Steps are epochs (1, 2, ...); no trial is stopped in
    its first ``warmup_epochs`` epochs."""
    import optuna

    name = settings.get("pruner", "median")
    warmup = int(settings.get("warmup_epochs", 1))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(settings.get("startup_trials", 5)), n_warmup_steps=warmup + 1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=warmup + 1, max_resource=max(warmup + 1, int(settings["max_epochs"])),
                                              reduction_factor=3)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup + 1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"pruner {name!r} is not one of {', '.join(PRUNERS)}")


def load_study(storage_object, settings: dict[str, Any], *, sampler=None):
    """The Optuna study of a study's settings; StudyError if its storage no longer has it."""
    import optuna

    try:
        return optuna.load_study(study_name=settings["name"], storage=storage_object, sampler=sampler,
                                 pruner=pruner_for(settings))
    except KeyError:
        raise StudyError(f"study {settings['name']!r}: its Optuna storage has no such study (was it deleted, or "
                         "its journal file moved?); leuktui's runs of it are kept") from None


def trial_id(study, number: int) -> int:
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TrialReporter:
    """The worker's side of a study's trial: after each epoch, the study's metric goes to Optuna
    as the trial's intermediate value at that epoch, and the pruner says whether to stop.

    A storage that cannot be reached is logged, not fatal: the run trains on unpruned.
    """

    def __init__(self, workspace: Workspace, settings: dict[str, Any], number: int, log: logging.Logger):
        import optuna

        self.settings, self.number, self.log = settings, number, log
        self.metric = metric(settings["metric"])
        study = load_study(open_storage(storage_of(workspace)), settings)
        self.trial = optuna.trial.Trial(study, trial_id(study, number))
        self.broken = False

    def value_of(self, row: dict[str, Any]) -> float | None:
        return finite(row.get(self.metric.epoch_column))

    def catch_up(self, rows: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Report epochs trained before (a resumed trial continues as a new Optuna trial)."""
        frozen = self._call(self.trial.study._storage.get_trial, self.trial._trial_id)
        known = frozen.intermediate_values if frozen is not None else {}
        for epoch, row in rows:
            value = self.value_of(row)
            if value is not None and epoch not in known:
                self._call(self.trial.report, value, epoch)

    def report(self, epoch: int, row: dict[str, Any]) -> bool:
        """Report ``epoch``'s value; True when the pruner stops the trial here."""
        value = self.value_of(row)
        if value is None or self.broken:
            return False
        self._call(self.trial.report, value, epoch)
        return bool(self._call(self.trial.should_prune))

    def _call(self, function, *args):
        try:
            return function(*args)
        except Exception as exc:  # the study's storage is Optuna's business; the run trains on
            self.log.warning("study %s, trial %d: %s: %s (training goes on unpruned)", self.settings["name"], self.number,
                             type(exc).__name__, exc)
            self.broken = True
            return None
