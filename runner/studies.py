"""Studies: Optuna searches whose trials are ordinary runs.

A study is a sweep of kind ``study``: a base config, a space (``runner.space``) and settings
(trials, how many at once, sampler, pruner, metric). Its trials are created just in time by the
scheduler (``StudyDriver``, one pass every couple of seconds): it tells Optuna how each finished
trial ended (completed with its best value, pruned, or failed), then asks Optuna for new trials
until the study has ``parallel`` waiting or running and ``trials`` in all. The worker reports each
epoch to its trial and stops when the pruner says so (``engine.studies.TrialReporter``).

The database decides what a study has: one run per trial (a unique index), and every trial given
inside ``Database.study_turn``, so two schedulers on one PostgreSQL take turns and a scheduler
killed at any moment leaves at most an Optuna trial without a run, which the next turn takes up
(or tells failed when the budget is spent). A trial that failed and is resumed continues as a new
Optuna trial with the same parameters and the epochs it has (Optuna never reopens a finished
trial); its run keeps its place in the study.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError

from db import Database, DatabaseError, Workspace, dialect
from db.api import NotFound
from db.models import Run, Sweep
from db.vocabulary import (
    CANCELLED,
    COMPLETED,
    FINISHED_STATUSES,
    HELD,
    PRUNED,
    QUEUED,
    RUNNING,
    STUDY_FINISHED,
    STUDY_SEARCHING,
    STUDY_STOPPED,
    STUDY_STOPPING,
    metric,
)
from engine.config import ConfigError, RunConfig
from engine.studies import (
    PRUNERS,
    SAMPLERS,
    StudyError,
    direction_of,
    finite,
    load_study,
    open_storage,
    storage_of,
    trial_id,
)
from runner.space import Param, grid_size, parse_space, space_text

log = logging.getLogger("leuktui.scheduler")

ACTIVE_STATUSES = (QUEUED, HELD, RUNNING)
STUDY_PASS_SECONDS = 1.0
RETRY_SECONDS = 30.0  # after a pass of a study failed (its storage unreadable, say)
ASKS_PER_TURN = 8     # new trials one turn gives at most (it holds the database's write lock); the next pass gives more
MAX_GRID = 100_000    # combinations a grid sampler may hold (Optuna builds the whole grid for every ask)
MAX_TRIALS = 10_000
_NAME = re.compile(r"^[\w][\w.+-]{0,99}$")


# -- settings -----------------------------------------------------------------------------------------


@dataclass
class StudyRequest:
    """What ``study create`` (or the sweep form's search mode) asks for."""

    name: str
    space: Sequence[str] | str
    trials: int = 20
    parallel: int | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    metric: str = "val_acc"
    startup_trials: int = 5
    warmup_epochs: int = 1
    tags: Sequence[str] = field(default_factory=tuple)
    notes: str = ""


def params_of(sweep: Sweep) -> list[Param]:
    return [Param.from_dict(values) for values in sweep.study["space"]]


def default_parallel(workspace: Workspace) -> int:
    """As many trials at once as the scheduler can run here (a batch system: 4)."""
    from runner.backends import backend_class
    from runner.gpus import detect_gpus
    from runner.options import Options

    options = Options.load(workspace)
    if not backend_class(options.backend).assigns_devices:
        return 4
    gpus = detect_gpus()
    return len(gpus) * options.per_gpu if gpus else options.max_parallel


def check_request(request: StudyRequest, base: RunConfig) -> tuple[list[Param], dict[str, Any]]:
    """The space and settings a request makes; ConfigError naming the flag that is wrong."""
    if not _NAME.fullmatch(request.name or ""):
        raise ConfigError("name", f"{request.name!r}: a study's name is 1-100 letters, digits, and . _ + - (it names the Optuna study)")
    from runner.control import check_labels

    check_labels(None, request.tags, request.notes)  # every trial's run is recorded with them
    if request.sampler not in SAMPLERS:
        raise ConfigError("sampler", f"{request.sampler!r} is not one of {', '.join(SAMPLERS)}")
    if request.pruner not in PRUNERS:
        raise ConfigError("pruner", f"{request.pruner!r} is not one of {', '.join(PRUNERS)}")
    try:
        chosen = metric(request.metric)
    except KeyError as exc:
        raise ConfigError("metric", exc.args[0]) from None
    if not 1 <= request.trials <= MAX_TRIALS:
        raise ConfigError("trials", f"{request.trials!r} is outside [1, {MAX_TRIALS}]")
    if request.parallel is not None and not 1 <= request.parallel <= 1000:
        raise ConfigError("parallel", f"{request.parallel!r} is outside [1, 1000]")
    if not 0 <= request.startup_trials <= MAX_TRIALS:
        raise ConfigError("startup_trials", f"{request.startup_trials!r} is outside [0, {MAX_TRIALS}]")
    if not 0 <= request.warmup_epochs <= 10000:
        raise ConfigError("warmup_epochs", f"{request.warmup_epochs!r} is outside [0, 10000]")
    if base.final_fit:
        raise ConfigError("fit_on", "a study scores its trials on the validation set; a final fit has none")
    params = parse_space(request.space, base)
    if request.sampler == "grid":
        size = grid_size(params)
        if size is None:
            ranges = ", ".join(p.text() for p in params if p.size is None)
            raise ConfigError("sampler", f"the grid sampler takes lists and stepped ranges (LOW:HIGH:STEP), not {ranges}")
        if size > MAX_GRID:
            count = f"{size:,}" if size < 10**12 else f"about 10^{len(str(size)) - 1}"
            raise ConfigError("sampler", f"the grid has {count} combinations; the grid sampler takes at most {MAX_GRID:,} "
                                         "(tpe or random search a space of any size)")
        if request.trials > size:
            raise ConfigError("trials", f"{request.trials} trials, but the grid has {size} combinations; ask for at most {size}")
    epochs = [p for p in params if p.name == "epochs"]
    max_epochs = base.epochs if not epochs else int(max(epochs[0].choices) if epochs[0].kind == "categorical" else epochs[0].high)
    settings = {
        "name": request.name,
        "space": [p.to_dict() for p in params],
        "trials": request.trials,
        "parallel": request.parallel,
        "sampler": request.sampler,
        "pruner": request.pruner,
        "metric": chosen.best_name,
        "direction": direction_of(chosen.best_name),
        "startup_trials": request.startup_trials,
        "warmup_epochs": request.warmup_epochs,
        "max_epochs": max_epochs,
        "seed": base.seed,
        "tags": list(request.tags),
        "notes": request.notes,
        "stopped_at": None,
        "finished_at": None,
    }
    return params, settings


def trial_config(base: RunConfig, params: dict[str, Any]) -> RunConfig:
    return RunConfig.from_dict(params, base=base)


def create_study(db: Database, workspace: Workspace, request: StudyRequest, base: RunConfig, *,
                 check_configs: bool = True) -> Sweep:
    """Record a study and make its Optuna study; the scheduler then gives it its trials.

    Every value of every list in the space is checked against where the trials will run (a
    model that does not load, a device this host lacks) before anything is recorded."""
    import optuna

    params, settings = check_request(request, base)
    base = base.replace(best_metric=settings["metric"]).with_absolute_paths()
    if settings["parallel"] is None:
        settings["parallel"] = default_parallel(workspace)
    if check_configs:
        check_study_configs(workspace, request, base)
    if db.sweep_named(request.name, kind="study") is not None:
        raise StudyError(f"study {request.name!r} exists already; `leuktui study more {request.name} N` gives it more trials")
    storage = storage_of(workspace)
    if storage.kind == "rdb":
        dialect.create_optuna_schema(db.engine)
    storage_object = open_storage(storage)
    try:
        optuna.create_study(study_name=request.name, storage=storage_object, direction=settings["direction"])
    except optuna.exceptions.DuplicatedStudyError:
        existing = optuna.load_study(study_name=request.name, storage=storage_object)
        if not existing.trials and existing.direction.name.lower() == settings["direction"]:
            pass  # made by a `study create` that stopped before recording it: taken as it is, empty
        else:
            raise StudyError(f"an Optuna study named {request.name!r} exists already in {storage.shown} (not one of this "
                             f"workspace's); pick another name, or remove it with `optuna delete-study --study-name "
                             f"{request.name} --storage ...`") from None
    factors = {p.name: list(p.choices) if p.kind == "categorical" else [p.low, p.high] for p in params}
    return db.create_sweep(request.name, base.to_dict(), factors, kind="study", study=settings)


def check_study_configs(workspace: Workspace, request: StudyRequest, base: RunConfig) -> None:
    """Every value of every list in the space checked against where the trials will run; needs no
    database, so a command can ask before it makes a workspace for nothing."""
    from runner.control import preflight

    params, settings = check_request(request, base)
    base = base.replace(best_metric=settings["metric"]).with_absolute_paths()
    configs = {base}
    for param in params:
        for value in param.choices or (param.low, param.high):
            configs.add(trial_config(base, {param.name: value}))
    for config in configs:
        preflight(config, workspace)


def find_study(db: Database, name_or_id: str) -> Sweep:
    """A study by name, or by its sweep id; NotFound naming it."""
    sweep = db.sweep_named(name_or_id, kind="study")
    if sweep is None and name_or_id.isdigit():
        try:
            candidate = db.get_sweep(int(name_or_id))
        except NotFound:
            candidate = None
        sweep = candidate if candidate is not None and candidate.is_study else None
    if sweep is None:
        known = ", ".join(s.name for s in db.studies()) or "none yet"
        raise NotFound(f"study {name_or_id!r}: no such study (studies: {known})")
    return sweep


def trial_runs(db: Database, sweep_id: int) -> list[Run]:
    return [run for run in db.sweep_runs(sweep_id) if run.trial is not None]


def update_study(db: Database, sweep_id: int, change) -> dict[str, Any]:
    """Change a study's settings (``change(settings, trial_runs) -> settings``) on its row as it is
    now, under its turn, so no scheduler's pass can write back settings it read before."""
    from sqlalchemy import select, update

    def work(session, sweep: Sweep) -> dict[str, Any]:
        runs = list(session.scalars(select(Run).where(Run.sweep_id == sweep.id, Run.trial.isnot(None))))
        settings = change(dict(sweep.study), runs)
        session.execute(update(Sweep).where(Sweep.id == sweep.id).values(study=settings))
        return settings

    return db.study_turn(sweep_id, work)


def stop_study(db: Database, sweep: Sweep, *, now: bool = False) -> tuple[list[int], list[int]]:
    """No new trials; waiting trials are cancelled, running ones finish (``now``: are stopped
    after their current step). Returns the ids cancelled and the ids asked to stop."""
    from runner import control

    update_study(db, sweep.id, lambda settings, runs: {**settings, "stopped_at": settings.get("stopped_at") or time.time()})
    cancelled, stopping = [], []
    for run in trial_runs(db, sweep.id):
        if run.status in (QUEUED, HELD) or (now and run.status == RUNNING):
            try:
                outcome = control.cancel(db, run.id)
            except control.QueueError:
                continue  # it ended meanwhile
            (cancelled if outcome == CANCELLED else stopping).append(run.id)
    return cancelled, stopping


def more_trials(db: Database, sweep: Sweep, count: int) -> dict[str, Any]:
    """Give a study ``count`` more trials than it has (a stopped or finished one goes on): a
    study that was stopped with trials to spare counts from the trials it gave, not its old budget."""
    if count < 1:
        raise ConfigError("trials", f"{count!r}: give at least one more trial")
    size = grid_size(params_of(sweep)) if sweep.study["sampler"] == "grid" else None

    def change(settings: dict[str, Any], runs: list[Run]) -> dict[str, Any]:
        given = settings["trials"] if settings.get("stopped_at") is None else len(runs)
        total = given + count
        if total > MAX_TRIALS:
            raise ConfigError("trials", f"{count!r}: a study has at most {MAX_TRIALS} trials")
        if size is not None and total > size:
            raise ConfigError("trials", f"the grid has {size} combinations and the study has {given} trials; "
                                        f"at most {size - given} more")
        return {**settings, "trials": total, "stopped_at": None, "finished_at": None}

    return update_study(db, sweep.id, change)


# -- the scheduler's side ------------------------------------------------------------------------------


def sampler_for(settings: dict[str, Any], params: Sequence[Param], trials_so_far: int):
    """The sampler a study names, seeded by the study's seed and the number of trials it has: the
    same history asks for the same next trial, even from a scheduler that restarted."""
    import optuna

    seed = (int(settings.get("seed", 0)) + trials_so_far) % 2**32
    name = settings["sampler"]
    if name == "tpe":
        # constant_liar: running trials count as bad ones, so parallel trials spread out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        # One shuffle of the grid for the whole study: the grid ids its trials carry index the same order.
        return optuna.samplers.GridSampler({p.name: p.grid_values() for p in params}, seed=int(settings.get("seed", 0)))
    raise StudyError(f"sampler {name!r} is not one of {', '.join(SAMPLERS)}")



def value_of(run: Run, metric_name: str) -> float | None:
    """A completed trial's value: its best epoch's metric (the trial's best checkpoint)."""
    return finite((run.summary or {}).get(metric(metric_name).epoch_column))


class StudyDriver:
    """Tells Optuna how trials ended and gives studies their next trials; one per scheduler."""

    def __init__(self, db: Database, workspace: Workspace):
        self.db, self.workspace = db, workspace
        self._storage = None
        self._next_pass = 0.0
        self._failing: dict[int, float] = {}  # study id -> when to try a study whose pass failed again

    @property
    def storage(self):
        if self._storage is None:
            self._storage = open_storage(storage_of(self.workspace))
        return self._storage

    def active(self) -> list[Sweep]:
        """Studies that are not over (trials to give, or trials whose end Optuna is yet to hear),
        and finished ones with a trial waiting or training again (a resumed trial)."""
        studies = self.db.studies()
        if not studies:
            return []
        busy = {run.sweep_id for run in self.db.queue() if run.trial is not None}
        return [s for s in studies if s.study and (s.study.get("finished_at") is None or s.id in busy)]

    def prepare(self, run: Run) -> Run:
        """Before a trial's worker starts: its Optuna trial must be open, so a resumed trial that
        the last pass has not seen yet gets its new Optuna trial now. Returns the run as it is."""
        if run.trial is None or run.sweep_id is None:
            return run
        sweep = self.db.get_sweep(run.sweep_id)
        if not sweep.is_study:
            return run
        from optuna.trial import TrialState

        study = load_study(self.storage, sweep.study)
        trial = study._storage.get_trial(trial_id(study, run.trial))
        if trial.state != TrialState.RUNNING:
            self.work(sweep)
        return self.db.get_run(run.id)

    def wants_trials(self) -> bool:
        """A study that will give trials (the scheduler stays up for it); one whose passes fail
        (its Optuna study gone) does not keep an idle scheduler up."""
        return any(s.study.get("stopped_at") is None and s.id not in self._failing for s in self.active())

    def tick(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_pass:
            return
        self._next_pass = now + STUDY_PASS_SECONDS
        for sweep in self.active():
            if self._failing.get(sweep.id, 0.0) > now:
                continue
            try:
                self.work(sweep)
            except (DBAPIError, DatabaseError):
                raise  # the scheduler's loop waits for the database
            except Exception:  # Optuna's storage, or a bug here: logged, and the scheduler goes on supervising runs
                log.exception("study %s: its trials could not be updated; trying again in %.0f s", sweep.name, RETRY_SECONDS)
                self._failing[sweep.id] = now + RETRY_SECONDS
            else:
                self._failing.pop(sweep.id, None)

    def work(self, sweep: Sweep) -> None:
        from optuna.trial import TrialState

        settings = sweep.study
        study = load_study(self.storage, settings)
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        runs = trial_runs(self.db, sweep.id)
        for run in runs:
            trial = trials.get(run.trial)
            if run.status in FINISHED_STATUSES and trial is not None and trial.state == TrialState.RUNNING:
                self.tell(study, run, settings)
        stopped = settings.get("stopped_at") is not None
        active = [run for run in runs if run.status in ACTIVE_STATUSES]
        reopen = [run for run in active if run.trial in trials and trials[run.trial].state.is_finished()]
        orphans = [t for t in trials.values() if t.state == TrialState.RUNNING and t.number not in {r.trial for r in runs}]
        room = 0 if stopped else min(settings["parallel"] - len(active), settings["trials"] - len(runs))
        if reopen or orphans or room > 0:
            self.db.study_turn(sweep.id, lambda session, row: self.turn(session, row, study))
        elif not active and (stopped or len(runs) >= settings["trials"]):
            # Every trial ended and Optuna heard of each: the study is over (if, under its turn, it still is).
            told = study.get_trials(deepcopy=False)
            if all(t.state != TrialState.RUNNING for t in told):
                def finish(now: dict[str, Any], given: list[Run]) -> dict[str, Any]:
                    over = not any(r.status in ACTIVE_STATUSES for r in given) and (
                        now.get("stopped_at") is not None or len(given) >= now["trials"])
                    return {**now, "finished_at": time.time()} if over else now

                if update_study(self.db, sweep.id, finish).get("finished_at") is not None:
                    log.info("study %s finished: %d trials", sweep.name, len(runs))

    def tell(self, study, run: Run, settings: dict[str, Any]) -> None:
        """Tell Optuna how the run of a trial ended (idempotent: a told trial is left as it is)."""
        import optuna
        from optuna.trial import TrialState

        value = value_of(run, settings["metric"]) if run.status == COMPLETED else None
        try:
            storage = study._storage
            storage.set_trial_user_attr(trial_id(study, run.trial), "leuktui_status", run.status)
            if value is not None:
                study.tell(run.trial, value, skip_if_finished=True)
            elif run.status == PRUNED:
                study.tell(run.trial, state=TrialState.PRUNED, skip_if_finished=True)
            else:
                study.tell(run.trial, state=TrialState.FAIL, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # another scheduler told it first
        log.info("study %s: trial %d (run %d) told %s", settings["name"], run.trial, run.id, run.status)

    def turn(self, session, sweep: Sweep, study) -> list[int]:
        """Under the study's turn: resumed trials get a new Optuna trial, trials without a run
        get one, and new trials are asked for while there is room. Returns the new runs' ids."""
        from optuna.trial import TrialState, create_trial
        from sqlalchemy import select, update

        settings = sweep.study
        runs = list(session.scalars(select(Run).where(Run.sweep_id == sweep.id, Run.trial.isnot(None)).order_by(Run.id)))
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        params = params_of(sweep)
        distributions = {p.name: p.distribution() for p in params}
        storage = study._storage

        active = [run for run in runs if run.status in ACTIVE_STATUSES]
        for run in active:
            if run.trial in trials and trials[run.trial].state.is_finished():
                old = trials[run.trial]
                template = create_trial(state=TrialState.RUNNING, params=old.params, distributions=old.distributions,
                                        intermediate_values=old.intermediate_values,
                                        user_attrs={"leuktui_run": run.id, "continues_trial": old.number})
                new_id = storage.create_new_trial(study._study_id, template_trial=template)
                number = storage.get_trial_number_from_id(new_id)
                session.execute(update(Run).where(Run.id == run.id).values(trial=number, updated_at=time.time()))
                if settings.get("finished_at") is not None:  # over no longer: Optuna is to hear how this one ends
                    settings = {**settings, "finished_at": None}
                    session.execute(update(Sweep).where(Sweep.id == sweep.id).values(study=settings))
                log.info("study %s: run %d (trial %d) resumed as trial %d", sweep.name, run.id, old.number, number)
        taken = {run.trial for run in runs}
        orphans = [t for t in trials.values() if t.state == TrialState.RUNNING and t.number not in taken]
        # An orphan with history is a resumed trial's new Optuna trial whose turn was rolled back: it
        # belongs to no fresh run (its values would prune it); the resumed run gets another.
        for frozen in [t for t in orphans if t.intermediate_values or "continues_trial" in t.user_attrs]:
            study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
            orphans.remove(frozen)
        stopped = settings.get("stopped_at") is not None
        room = 0 if stopped else min(settings["parallel"] - len(active), settings["trials"] - len(runs), ASKS_PER_TURN)
        base = RunConfig.from_dict(sweep.base_config)
        created: list[int] = []
        while room > 0:
            if orphans:
                frozen = orphans.pop(0)
                number, values = frozen.number, dict(frozen.params)
                if set(values) != set(distributions):  # asked, then the process ended before its params were drawn
                    study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
                    continue
            else:
                study.sampler = sampler_for(settings, params, len(trials) + len(created))
                asked = study.ask(distributions)
                number, values = asked.number, dict(asked.params)
            try:
                config = trial_config(base, values)
            except ConfigError as exc:
                study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
                log.warning("study %s: trial %d's parameters make no config (%s); told failed", sweep.name, number, exc)
                room -= 1
                continue
            run = self.db.create_run(
                config=config.to_dict(), config_hash=config.config_hash(), model=config.model,
                name=f"{sweep.name} #{number}", tags=settings.get("tags", ()), notes=settings.get("notes", ""),
                sweep_id=sweep.id, trial=number, session=session,
            )
            storage.set_trial_user_attr(trial_id(study, number), "leuktui_run", run.id)
            created.append(run.id)
            room -= 1
            log.info("study %s: trial %d is run %d (%s)", sweep.name, number, run.id,
                     ", ".join(f"{k}={v}" for k, v in values.items()))
        for frozen in orphans:  # no room left for them
            study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
        return created


def describe_space(sweep: Sweep) -> str:
    return space_text(params_of(sweep))


# -- what a study has --------------------------------------------------------------------------------


def study_state(sweep: Sweep, runs: Sequence[Run]) -> str:
    """searching (trials to give or training), stopping, stopped (no new trials), finished."""
    settings = sweep.study
    if settings.get("finished_at") is not None:
        return STUDY_FINISHED if settings.get("stopped_at") is None else STUDY_STOPPED
    if settings.get("stopped_at") is not None:
        return STUDY_STOPPING if any(r.status in ACTIVE_STATUSES for r in runs) else STUDY_STOPPED
    return STUDY_SEARCHING


def trial_value(run: Run, metric_name: str, epochs: Sequence[Any] = ()) -> float | None:
    """What the trial scores: a completed trial its best epoch's value; a pruned one, as Optuna
    takes it, the value of its last epoch; one still training, its best so far."""
    if run.status == PRUNED and epochs:
        return finite(getattr(epochs[-1], metric(metric_name).epoch_column))
    if run.status in (COMPLETED, RUNNING, PRUNED):
        return value_of(run, metric_name)
    return None


def better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def overview(db: Database, sweep: Sweep) -> dict[str, Any]:
    """A study as ``study show``, the Study screen and the report present it (no Optuna import):
    its settings, each trial's run, status, parameters, value and per-epoch values, and the best."""
    settings = sweep.study
    runs = trial_runs(db, sweep.id)
    epochs = db.epochs_of([r.id for r in runs])
    column = metric(settings["metric"]).epoch_column
    names = [p["name"] for p in settings["space"]]
    trials = []
    for run in runs:
        rows = epochs.get(run.id, [])
        trials.append({
            "trial": run.trial, "run_id": run.id, "name": run.name, "status": run.status,
            "params": {name: run.config.get(name) for name in names},
            "value": trial_value(run, settings["metric"], rows),
            "epochs_done": run.epochs_done, "epochs": run.config.get("epochs"), "best_epoch": run.best_epoch,
            "curve": [(e.epoch, finite(getattr(e, column))) for e in rows],
        })
    completed = [t for t in trials if t["status"] == COMPLETED and t["value"] is not None]
    best = None
    for trial in completed:
        if best is None or better(trial["value"], best["value"], settings["direction"]):
            best = trial
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial["status"]] = counts.get(trial["status"], 0) + 1
    return {
        "id": sweep.id, "name": sweep.name, "state": study_state(sweep, runs), "space": space_text(params_of(sweep)),
        "trials_wanted": settings["trials"], "parallel": settings["parallel"], "sampler": settings["sampler"],
        "pruner": settings["pruner"], "metric": settings["metric"], "direction": settings["direction"],
        "created_at": sweep.created_at, "counts": counts, "trials": trials, "best": best, "base_config": sweep.base_config,
    }


def importances(workspace: Workspace, sweep: Sweep) -> dict[str, float] | None:
    """Optuna's parameter importances by fANOVA (named, not Optuna's default, which changed to
    PED-ANOVA; seeded, so a study shows the same numbers each time) over the completed trials;
    None with fewer than two completed trials, or when their parameters or their values did not
    vary (nothing to attribute: every parameter would be "important" or none)."""
    import optuna

    study = load_study(open_storage(storage_of(workspace)), sweep.study)
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(completed) < 2 or len({trial.value for trial in completed}) < 2:
        return None
    try:
        ranked = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        return {k: float(v) for k, v in ranked.items()}
    except (RuntimeError, ValueError):  # e.g. every completed trial has the same parameters
        return None
