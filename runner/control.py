"""Queue operations the CLI and the app share: create, queue, sweep, cancel, hold, release,
prioritize, retry, resume. The database is the only channel to the scheduler.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from db import Database, Workspace, states
from db.errors import UserError
from db.models import Run, Sweep
from db.vocabulary import (
    CANCELLED,
    CANCELLING,
    COMPLETED,
    FINISHED_STATUSES,
    HELD,
    QUEUED,
    RESUMABLE_STATUSES,
    RUNNING,
    WAITING_STATUSES,
)
from engine.config import ConfigError, RunConfig


class QueueError(UserError):
    """A queue operation that does not apply to the run as it is; one line, names the run."""


class AlreadyCompleted(QueueError):
    """A config a completed run trained already, queued without ``force``; ``run`` is that run."""

    def __init__(self, run: Run, how: str = "add --force") -> None:
        super().__init__(f"run {run.id} ({run.name}) already completed this exact config; {how} to queue it again")
        self.run = run


def default_name(config: RunConfig, factors: dict[str, Any] | None = None) -> str:
    model = config.model.split(":")[-1]
    extras = [name for name, on in (("histeq", config.hist_eq), ("ccrop", config.center_crop), ("cell", config.crop_to_cell)) if on]
    if config.eval_mode != "single":
        extras.append(f"{config.eval_mode}crop")
    for key, value in (factors or {}).items():
        if key not in ("model", "hist_eq", "center_crop", "crop_to_cell", "eval_mode"):
            extras.append(f"{key}={value}")
    return "-".join([model, f"{config.image_size}px", *extras, config.config_hash()[:6]])


def target_gpus(workspace: Workspace) -> list[int] | None:
    """The GPUs this workspace's runs will see, or None when they run elsewhere (a cluster)."""
    from runner.backends import backend_class
    from runner.gpus import detect_gpus
    from runner.options import Options

    return detect_gpus() if backend_class(Options.load(workspace).backend).assigns_devices else None


def preflight(config: RunConfig, workspace: Workspace, *, here: bool = False) -> None:
    """Refuse a config that cannot run where it will (``runner.preflight.check_config``): here
    (``here``, a foreground run), else where the scheduler's backend sends it."""
    from runner.backends import backend_class
    from runner.gpus import detect_gpus
    from runner.options import Options
    from runner.preflight import check_config

    gpus = detect_gpus() if here else target_gpus(workspace)
    check_config(config, gpus=gpus)
    if config.world_size > 1:
        backend = "local" if here else Options.load(workspace).backend
        if config.nodes > 1 and (here or backend_class(backend).assigns_devices):
            raise ConfigError("nodes", f"{config.nodes} nodes for one run need a batch system; the {backend} backend runs on this host "
                                       "(nproc sets the processes here)")
        if config.sync_bn and (config.device == "cpu" or gpus == []):
            raise ConfigError("sync_bn", "SyncBatchNorm needs GPUs (torch runs it on CUDA only); this run trains on the CPU")
        if gpus and config.device != "cpu" and config.nproc > len(gpus) and os.environ.get("LEUKTUI_SHARE_GPUS") != "1":
            raise ConfigError("nproc", f"{config.nproc} processes take one GPU each; this machine has {len(gpus)} "
                                       "($LEUKTUI_SHARE_GPUS=1 lets processes share them, over gloo)")


MAX_NAME = 200  # a run's or a sweep's name, in characters: one column of a table
MAX_TAG = 64


MAX_NOTES = 100_000
# Characters that reorder the text after them on a terminal (a line that reads other than it is).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def check_labels(name: str | None, tags: Sequence[str], notes: str = "") -> None:
    """A name and tags a table can show, and notes of lines of text (the CLI, the form and the tags
    dialog alike): a note's control character (an escape sequence that would retitle or redraw the
    terminal that shows it) is refused where it is typed."""
    for field_name, text in (("name", name or ""), *(("tag", tag) for tag in tags), ("notes", notes)):
        if any("\ud800" <= char <= "\udfff" for char in text):  # a shell's bytes that are not UTF-8 (printf '\xff')
            raise ConfigError(field_name, "has bytes that are not UTF-8 text")
    if name is not None and len(name) > MAX_NAME:
        raise ConfigError("name", f"{len(name):,} characters; a name has at most {MAX_NAME}")
    for tag in tags:
        if len(tag) > MAX_TAG:
            raise ConfigError("tag", f"{tag[:20]!r}… has {len(tag):,} characters; a tag has at most {MAX_TAG}")
    if len(notes) > MAX_NOTES:
        raise ConfigError("notes", f"{len(notes):,} characters; notes have at most {MAX_NOTES:,}")
    lines = notes.replace("\r\n", "\n")  # Windows line ends are line ends; a lone CR redraws the line it is on
    bad = next((char for char in lines if char not in "\n\t" and (unicodedata.category(char) == "Cc" or char in BIDI_CONTROLS)), None)
    if bad is not None:
        line = lines.count("\n", 0, lines.index(bad)) + 1
        raise ConfigError("notes", f"line {line} has a control character ({bad!r}); notes are lines of text")


def create_run(
    db: Database,
    config: RunConfig,
    *,
    name: str | None = None,
    tags: Sequence[str] = (),
    notes: str = "",
    status: str = QUEUED,
    sweep_id: int | None = None,
    parent_id: int | None = None,
    factors: dict[str, Any] | None = None,
) -> Run:
    """Record a new run with its config resolved to absolute paths."""
    check_labels(name, tags, notes)
    config = config.with_absolute_paths()
    return db.create_run(
        config=config.to_dict(),
        config_hash=config.config_hash(),
        model=config.model,
        name=name or default_name(config, factors),
        status=status,
        tags=tags,
        notes=notes,
        sweep_id=sweep_id,
        parent_id=parent_id,
    )


# -- sweeps -------------------------------------------------------------------------------------------


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["model=resnet18,resnet50", "hist_eq=false,true"]`` -> ``{"model": [...], "hist_eq": [...]}``."""
    grid: dict[str, list[str]] = {}
    known = set(RunConfig.field_names())
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ConfigError("grid", f"{item!r} is not FIELD=V1,V2,...")
        if key not in known:
            raise ConfigError("grid", RunConfig.not_a_field(key))
        if key in grid:
            raise ConfigError("grid", f"{key!r} is given twice")
        grid[key] = [v.strip() for v in values.split(",")]
        if "" in grid[key]:  # `lr=,` or `lr=0.01,`: a value left out, not a run less
            raise ConfigError("grid", f"{item!r} has an empty value")
    return grid


MAX_SEEDS = 100
MAX_GRID_RUNS = 10_000


def with_seeds(grid: dict[str, list[str]], base: RunConfig, seeds: int) -> dict[str, list[str]]:
    """The grid with ``seed`` as one more factor: ``seeds`` replicates from the base config's seed
    up (``--seeds 3`` with seed 0: seeds 0, 1, 2), N per cell of the grid. One seed leaves it be."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError("seeds", f"{seeds!r} is outside [1, {MAX_SEEDS}]")
    if seeds == 1:
        return grid
    if "seed" in grid:
        raise ConfigError("seeds", "--seeds and a seed=... factor both set the seed; give one of them")
    return {**grid, "seed": [str(base.seed + i) for i in range(seeds)]}


@dataclass
class Plan:
    """What a queue request will create: configs (with the factor values of each) and a sweep."""

    configs: list[tuple[RunConfig, dict[str, Any]]] = field(default_factory=list)
    factors: dict[str, list[Any]] = field(default_factory=dict)


def factor_value(base: RunConfig, key: str, text: str) -> Any:
    """A grid value as the config holds it (``1e-3`` and ``0.001`` alike, ``none`` as ``single``):
    on the base config where that alone is valid, else the field's type alone (another factor may
    make the config valid); None where it is not a value of the field at all."""
    try:
        return getattr(RunConfig.from_dict({key: text}, base=base), key)
    except ConfigError:
        pass
    try:
        return RunConfig.coerce(key, text)
    except ConfigError:
        return None


def expand(base: RunConfig, grid: dict[str, list[str]]) -> Plan:
    """The cartesian product of the grid's factors over ``base``, each config validated."""
    plan = Plan()
    if not grid:
        plan.configs.append((base, {}))
        return plan
    keys = list(grid)
    for key in keys:  # each factor's values: none may repeat another (`epochs=1,01`, `lr=0.001,1e-3`)
        seen: dict[Any, str] = {}
        for text in grid[key]:
            value = factor_value(base, key, text)
            if value is None:
                continue  # not a value of the field alone: the product below says why, with the whole config
            if value in seen:
                raise ConfigError("grid", f"{key}={text} is {key}={seen[value]} again; a factor's values must differ")
            seen[value] = text
    runs = math.prod(len(grid[key]) for key in keys)
    if runs > MAX_GRID_RUNS:
        raise ConfigError("grid", f"{' x '.join(str(len(grid[k])) for k in keys)} = {runs:,} runs; at most {MAX_GRID_RUNS:,} "
                                  "in one sweep (a study searches a larger space: `leuktui study create`)")
    for combination in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combination, strict=True))
        try:
            config = RunConfig.from_dict(values, base=base)
        except ConfigError as exc:
            raise ConfigError(exc.field, f"{exc.message} (in --grid {exc.field}=...)") from None
        plan.configs.append((config, {k: getattr(config, k) for k in keys}))
    plan.factors = {k: list(dict.fromkeys(getattr(c, k) for c, _ in plan.configs)) for k in keys}
    return plan


def check_queue(base: RunConfig, *, grid: dict[str, list[str]] | None = None, name: str | None = None, tags: Sequence[str] = (),
                notes: str = "", seeds: int = 1, workspace: Workspace | None = None) -> tuple[dict[str, list[str]], Any]:
    """What ``queue_runs`` checks before it records anything (labels, the grid, each config against
    where it will run: ``preflight``); needs no database, so a command asks it before it makes a
    workspace, and a refused one leaves none. Returns the grid with its seeds and the plan."""
    check_labels(name, tags, notes)
    grid = with_seeds(grid or {}, base, seeds)
    plan = expand(base, grid)
    if workspace is not None:
        for config in dict.fromkeys(config.with_absolute_paths() for config, _ in plan.configs):
            preflight(config, workspace)
    return grid, plan


def queue_runs(
    db: Database,
    base: RunConfig,
    *,
    grid: dict[str, list[str]] | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    notes: str = "",
    force: bool = False,
    workspace: Workspace | None = None,
    seeds: int = 1,
    parent_id: int | None = None,
    checked: bool = False,
) -> tuple[list[Run], Sweep | None]:
    """Queue one run, or a sweep of runs; refuse exact repeats of completed runs unless ``force``.
    ``seeds`` > 1 makes the seed one more factor of the sweep (replicates that differ only in it).

    With ``workspace``, every config is first checked against this machine (``preflight``):
    a sweep with one bad value records nothing. ``checked``: the caller asked ``check_queue``
    already (before it made the workspace), so the configs are not checked twice.
    """
    grid, plan = check_queue(base, grid=grid, name=name, tags=tags, notes=notes, seeds=seeds,
                             workspace=None if checked else workspace)
    if not force:
        for config, _ in plan.configs:
            done = db.runs_with_config(config.with_absolute_paths().config_hash(), status=COMPLETED)
            if done:
                raise AlreadyCompleted(done[0])
    sweep = None
    if grid:
        sweep_name = name or "sweep " + " x ".join(f"{k}" for k in plan.factors)
        sweep = db.create_sweep(sweep_name, base.with_absolute_paths().to_dict(), plan.factors)
    runs = [
        create_run(db, config, name=None if sweep else name, tags=tags, notes=notes, sweep_id=sweep.id if sweep else None, factors=factors,
                   parent_id=parent_id)
        for config, factors in plan.configs
    ]
    return runs, sweep


# -- operations on one run ----------------------------------------------------------------------------


def cancel(db: Database, run_id: int) -> str:
    """Cancel a waiting run at once, or ask the scheduler to stop a running one."""
    run = db.get_run(run_id)
    now = time.time()
    if states.move(db, run_id, CANCELLED, only_from=WAITING_STATUSES, finished_at=now):
        return CANCELLED
    if db.update_run(run_id, when_status=(RUNNING,), cancel_requested_at=now):
        from runner.processes import is_alive

        run = db.get_run(run_id)
        if (run.pid and not run.job_id and run.host in (None, socket.gethostname()) and not is_alive(run.pid, run.pid_started_at)
                and states.finish(db, run_id, CANCELLED, finished_at=now)):
            return CANCELLED  # its process died with no scheduler to notice: nothing is left to stop, so it ends here
        return CANCELLING
    raise QueueError(f"run {run_id} is {run.state}; nothing to cancel")


def hold(db: Database, run_id: int) -> None:
    if not states.move(db, run_id, HELD):
        raise QueueError(f"run {run_id} is {db.get_run(run_id).status}; only queued runs can be held")


def release(db: Database, run_id: int) -> None:
    if not states.move(db, run_id, QUEUED, only_from=(HELD,)):
        raise QueueError(f"run {run_id} is {db.get_run(run_id).status}; only held runs can be released")


def prioritize(db: Database, run_id: int) -> None:
    status = db.get_run(run_id).status
    if status not in WAITING_STATUSES:
        raise QueueError(f"run {run_id} is {status}; only waiting runs can move to the front")
    db.prioritize(run_id)


def retry(db: Database, run_id: int) -> Run:
    """A new queued run with the same config, linked to the old one."""
    old = db.get_run(run_id)
    if old.status not in FINISHED_STATUSES:
        raise QueueError(f"run {run_id} is {old.state}; only finished runs can be retried")
    config = RunConfig.from_dict(old.config)
    return db.create_run(
        config=config.to_dict(), config_hash=old.config_hash, model=old.model, name=f"{old.name} (retry)",
        status=QUEUED, tags=old.tags, notes=old.notes, sweep_id=old.sweep_id, parent_id=old.id,
    )


def delete(db: Database, workspace: Workspace, run_id: int) -> None:
    """Delete a run's records, then its folder (checkpoints, log) if the folder is this record's;
    refused while it runs. Another record's folder with the same id is left where it is."""
    import shutil

    owner = db.get_run(run_id).owner
    db.delete_run(run_id)
    if workspace.owns_run_dir(run_id, owner):
        shutil.rmtree(workspace.run_dir(run_id), ignore_errors=True)


def set_processes(db: Database, run_id: int, nproc: int, *, workspace: Workspace | None = None, here: bool = False) -> RunConfig:
    """Let a stopped run continue with ``nproc`` processes (its checkpoint has one layout for any
    number); checked as a new run's config would be."""
    run = db.get_run(run_id)
    if run.status not in RESUMABLE_STATUSES:
        raise QueueError(f"run {run_id} is {run.state}; only interrupted, cancelled or failed runs resume")
    config = RunConfig.from_dict(run.config).replace(nproc=nproc)
    if workspace is not None:
        preflight(config, workspace, here=here)
    db.update_run(run_id, when_status=RESUMABLE_STATUSES, config=config.to_dict(), config_hash=config.config_hash())
    return config


def resume(db: Database, run_id: int) -> None:
    """Queue an interrupted, cancelled or failed run again; its worker continues from ``last``."""
    run = db.get_run(run_id)
    if not states.move(db, run_id, QUEUED, only_from=RESUMABLE_STATUSES, error=None, finished_at=None,
                       cancel_requested_at=None, pid=None):
        raise QueueError(f"run {run_id} is {run.state}; only interrupted, cancelled or failed runs resume")


# -- the final fit -------------------------------------------------------------------------------------

FINAL_TAG = "final"


def final_fit_config(run: Run, epochs: int | None = None) -> RunConfig:
    """``run``'s config trained on train + valid for its chosen number of epochs (its best epoch,
    unless ``epochs``), with nothing that needs a validation set."""
    config = RunConfig.from_dict(run.config)
    if config.final_fit:
        raise QueueError(f"run {run.id} is itself a final fit; finalize the run it was made from ({run.parent_id})")
    if epochs is None and (run.status != COMPLETED or run.best_epoch is None):
        raise QueueError(f"run {run.id} is {run.status}: a final fit takes the best epoch of a completed run as its epoch count; "
                         "pass --epochs to choose one")
    return config.replace(fit_on="train+valid", epochs=epochs or run.best_epoch, early_stop=0, best_metric="val_acc")


def finalize(db: Database, run_id: int, *, seeds: int = 1, epochs: int | None = None,
             workspace: Workspace | None = None, again: bool = False) -> tuple[list[Run], Sweep | None, list[Run]]:
    """Queue the final fit of a run: its config on train + valid, ``seeds`` seeds from its own
    up, each linked to the run (``parent_id``) and tagged ``final``. A seed the run already has
    this final fit of (queued, running or completed) is not fitted twice, unless ``again``: an
    ensemble would count it twice. Returns the runs queued, their sweep, and the fits kept."""
    run = db.get_run(run_id)
    config = final_fit_config(run, epochs)
    wanted = [config.seed + offset for offset in range(seeds)]
    same = _without_seed(config.with_absolute_paths().to_dict())
    fitting = {} if again else {fit.config.get("seed"): fit for fit in db.final_fits(run_id)
                                if fit.status in (QUEUED, HELD, RUNNING, COMPLETED) and _without_seed(fit.config) == same}
    kept = [fitting[seed] for seed in wanted if seed in fitting]
    missing = [seed for seed in wanted if seed not in fitting]
    if not missing:
        listed = ", ".join(f"{fit.id} (seed {fit.config.get('seed')}, {fit.status})" for fit in kept)
        raise QueueError(f"run {run_id} has this final fit already: run{'s' if len(kept) > 1 else ''} {listed}; "
                         "add --force to queue it again")
    name = f"final fit of run {run_id}"
    if missing != wanted:  # only the seeds it lacks
        config, grid, seeds = (config.replace(seed=missing[0]), None, 1) if len(missing) == 1 else \
            (config, {"seed": [str(seed) for seed in missing]}, 1)
    else:
        grid = None
    runs, sweep = queue_runs(db, config, grid=grid, name=name, tags=[FINAL_TAG], force=True, workspace=workspace,
                             seeds=seeds, parent_id=run_id)
    return runs, sweep, kept


def _without_seed(config: dict[str, Any]) -> str:
    return json.dumps({key: value for key, value in config.items() if key != "seed"}, sort_keys=True, default=str)
