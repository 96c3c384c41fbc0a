"""``leuktui study create|ls|show|stop|more``: Optuna searches whose trials are runs."""

from __future__ import annotations

import argparse
from typing import Any

from db.vocabulary import CANCELLED, COMPLETED, FAILED, INTERRUPTED, PRUNED
from engine.config import ConfigError
from leuktui.cli.common import (
    UsageError,
    add_command,
    add_config_flags,
    add_json,
    check_tags,
    config_from_args,
    console,
    ensure_scheduler,
    flag_name,
    open_workspace,
    open_workspace_checked,
    positive_int,
    print_json,
    text,
)
from leuktui.formatting import age


def add_commands(commands: Any) -> None:
    from engine.studies import PRUNERS, SAMPLERS

    study = add_command(commands, "study", help="Optuna studies: a search whose trials are runs, bad ones stopped early")
    actions = study.add_subparsers(dest="study_action", metavar="ACTION", required=True)

    create = add_command(actions, "create", help="make a study and let the scheduler run its trials")
    create.add_argument("name", metavar="NAME", help="the study's name (also its Optuna study name)")
    create.add_argument("--space", action="append", required=True, metavar="SPACE",
                        help="what to search, FIELD=... separated by ';' (or repeated): FIELD=log:LOW:HIGH, "
                             "FIELD=LOW:HIGH[:STEP], FIELD=V1,V2,... e.g. 'lr=log:1e-4:1e-1; batch_size=16,32,64'")
    create.add_argument("--trials", type=positive_int, default=20, metavar="N", help="trials in all (default 20)")
    create.add_argument("--parallel", type=positive_int, default=None, metavar="K",
                        help="trials at once (default: what the scheduler runs here at once; 4 on a batch system)")
    create.add_argument("--sampler", choices=list(SAMPLERS), default="tpe", help="how the next trial is chosen (default tpe)")
    create.add_argument("--pruner", choices=list(PRUNERS), default="median", help="how bad trials are stopped early (default median)")
    create.add_argument("--metric", default="val_acc", metavar="M",
                        help="what the study optimizes, at each trial's best epoch (default val_acc; val_loss is minimized)")
    create.add_argument("--startup-trials", type=int, default=5, metavar="S",
                        help="median pruner: trials that complete before it stops any (default 5)")
    create.add_argument("--warmup-epochs", type=int, default=1, metavar="W", help="no trial is stopped in its first W epochs (default 1)")
    create.add_argument("--tag", action="append", default=[], help="tag every trial's run (repeatable)")
    create.add_argument("--notes", default="", help="free-text notes for every trial's run")
    create.add_argument("--no-start", action="store_true", help="do not start the scheduler")
    add_config_flags(create)
    add_json(create)
    create.set_defaults(handler=cmd_create)

    ls = add_command(actions, "ls", help="every study: state, trials, best value")
    add_json(ls)
    ls.set_defaults(handler=cmd_ls)

    show = add_command(actions, "show", help="a study's trials, best trial, parameter importances and storage")
    show.add_argument("name", metavar="NAME", help="the study's name (or its sweep id)")
    add_json(show)
    show.set_defaults(handler=cmd_show)

    stop = add_command(actions, "stop", help="give a study no new trials; its waiting trials are cancelled")
    stop.add_argument("name", metavar="NAME")
    stop.add_argument("--now", action="store_true", help="stop its running trials too (each checkpoints first)")
    stop.set_defaults(handler=cmd_stop)

    more = add_command(actions, "more", help="give a study N more trials (a stopped or finished one goes on)")
    more.add_argument("name", metavar="NAME")
    more.add_argument("count", type=positive_int, metavar="N")
    more.add_argument("--no-start", action="store_true", help="do not start the scheduler")
    more.set_defaults(handler=cmd_more)


def cmd_create(args: argparse.Namespace) -> int:
    from runner.studies import StudyRequest, check_study_configs, create_study

    base = config_from_args(args)
    if getattr(args, "best_metric", None) is not None:
        from db.vocabulary import metric

        try:
            study_metric = metric(args.metric).best_name
        except KeyError:
            study_metric = None  # said by the study's own check, naming --metric
        if study_metric is not None and metric(args.best_metric).best_name != study_metric:
            raise UsageError(f"--best-metric: a study's trials keep their best epoch by its --metric ({study_metric}); "
                             "leave --best-metric out, or give the same")
    request = StudyRequest(name=args.name, space=args.space, trials=args.trials, parallel=args.parallel, sampler=args.sampler,
                           pruner=args.pruner, metric=args.metric, startup_trials=args.startup_trials,
                           warmup_epochs=args.warmup_epochs, tags=check_tags(args.tag), notes=args.notes)
    try:
        workspace, db = open_workspace_checked(args, lambda workspace: check_study_configs(workspace, request, base))
        sweep = create_study(db, workspace, request, base, check_configs=False)
    except ConfigError as exc:
        if exc.field in ("space", "name"):
            raise UsageError(f"{'--space' if exc.field == 'space' else 'NAME'}: {exc.message}") from None
        raise UsageError(f"{flag_name(exc.field)}: {exc.message}") from None
    from engine.studies import storage_of
    from runner.studies import describe_space

    storage = storage_of(workspace)
    settings = sweep.study
    if args.json:
        print_json({"study_id": sweep.id, "name": sweep.name, "storage": storage.shown, "settings": settings})
    else:
        out = console()
        out.print(text(f"study {sweep.id} '{sweep.name}': {settings['trials']} trials, {settings['parallel']} at once, "
                       f"{settings['sampler']} sampler, {settings['pruner']} pruner, {settings['direction']} {settings['metric']}"))
        out.print(text(f"space: {describe_space(sweep)}"))
        out.print(text(f"Optuna storage: {storage.shown}"))
    ensure_scheduler(workspace, args.no_start, json=getattr(args, "json", False))
    return 0


def _value(value: float | None, metric_name: str) -> str:
    from db.vocabulary import metric

    return metric(metric_name).format(value)


def cmd_ls(args: argparse.Namespace) -> int:
    from runner.studies import overview

    workspace, db = open_workspace(args)
    studies = [overview(db, sweep) for sweep in db.studies()]
    if args.json:
        print_json([{k: v for k, v in s.items() if k not in ("trials", "base_config")} | {"trials": len(s["trials"])} for s in studies])
        return 0
    if not studies:
        print("no studies yet: `leuktui study create NAME --space 'lr=log:1e-4:1e-1' --trials 20` makes one")
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "state", "trials", COMPLETED, PRUNED, "failed/cancelled", "best", "best trial", "sampler", "pruner", "age"):
        table.add_column(column)
    for s in studies:
        counts = s["counts"]
        failed = sum(counts.get(k, 0) for k in (FAILED, CANCELLED, INTERRUPTED))
        best = s["best"]
        table.add_row(str(s["id"]), text(s["name"]), s["state"], f"{len(s['trials'])}/{s['trials_wanted']}", str(counts.get(COMPLETED, 0)),
                      str(counts.get(PRUNED, 0)), str(failed), _value(best["value"], s["metric"]) if best else "-",
                      f"#{best['trial']} (run {best['run_id']})" if best else "-", s["sampler"], s["pruner"], age(s["created_at"]))
    console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from engine.studies import StudyError, storage_of
    from runner.studies import find_study, importances, overview

    workspace, db = open_workspace(args)
    sweep = find_study(db, args.name)
    summary = overview(db, sweep)
    storage = storage_of(workspace)
    try:
        ranked, optuna_error = importances(workspace, sweep), None
    except StudyError as exc:  # leuktui's own record of the trials is still there to show
        ranked, optuna_error = None, str(exc)
    if args.json:
        print_json({**summary, "importances": ranked, "storage": storage.shown, "load_study": storage.python(sweep.name),
                    "optuna_error": optuna_error})
        return 0
    from rich.table import Table

    out = console()
    out.print(text(f"study {summary['id']} '{summary['name']}': {summary['state']}, {len(summary['trials'])}/{summary['trials_wanted']} trials "
                   f"({summary['parallel']} at once), {summary['sampler']} sampler, {summary['pruner']} pruner, "
                   f"{summary['direction']} {summary['metric']}"))
    out.print(text(f"space: {summary['space']}"))
    best = summary["best"]
    if best:
        params = ", ".join(f"{k}={_param(v)}" for k, v in best["params"].items())
        out.print(text(f"best: trial {best['trial']} (run {best['run_id']}) {summary['metric']} {_value(best['value'], summary['metric'])} "
                       f"at epoch {best['best_epoch']}: {params}"))
    else:
        out.print("best: no completed trial yet")
    if ranked:
        out.print(text("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in ranked.items())))
    elif summary["counts"].get(COMPLETED, 0) >= 2 and not optuna_error:
        out.print("importance: none to tell (the completed trials tried the same values, or scored the same)")
    if optuna_error:
        out.print(text(f"Optuna: {optuna_error}"))
    names = [p for p in (summary["trials"][0]["params"] if summary["trials"] else {})]
    table = Table(box=None, header_style="bold")
    for column in ("trial", "run", "status", *names, summary["metric"], "epochs done"):
        table.add_column(column)
    for trial in summary["trials"]:
        table.add_row(str(trial["trial"]), str(trial["run_id"]), trial["status"], *(text(_param(trial["params"][n])) for n in names),
                      _value(trial["value"], summary["metric"]), f"{trial['epochs_done']}/{trial['epochs']}")
    out.print(table if summary["trials"] else "no trials yet (the scheduler gives them; `leuktui scheduler status`)")
    out.print(text(f"Optuna storage: {storage.shown}"))
    out.print(text(f"from Python: {storage.python(sweep.name)}"))
    return 0


def _param(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def cmd_stop(args: argparse.Namespace) -> int:
    from runner.studies import find_study, stop_study

    workspace, db = open_workspace(args)
    sweep = find_study(db, args.name)
    cancelled, stopping = stop_study(db, sweep, now=args.now)
    line = f"study '{sweep.name}' stopped: no new trials"
    if cancelled:
        line += f"; cancelled waiting run(s) {', '.join(map(str, cancelled))}"
    if stopping:
        line += f"; stopping run(s) {', '.join(map(str, stopping))} after their current step"
    console().print(text(line))
    return 0


def cmd_more(args: argparse.Namespace) -> int:
    from runner.studies import find_study, more_trials

    workspace, db = open_workspace(args)
    sweep = find_study(db, args.name)
    try:
        settings = more_trials(db, sweep, args.count)
    except ConfigError as exc:
        raise UsageError(f"N: {exc.message}") from None
    console().print(text(f"study '{sweep.name}': {settings['trials']} trials in all"))
    ensure_scheduler(workspace, args.no_start, json=getattr(args, "json", False))
    return 0
