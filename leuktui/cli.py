"""The ``leuktui`` command line; with no command it opens the terminal app.

Commands that neither train nor predict (``ls``, ``show``, ``score``, ``data check``) never import
torch: the heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError

from db import Database, Workspace, states
from db.session import database_error, is_unusable_database
from db.vocabulary import METRICS, RESUMABLE_STATUSES, epoch_metrics
from db.workspace import apply_file_mode
from engine.config import ConfigError, RunConfig
from engine.errors import UserError
from leuktui.cli_report import add_report_commands, record_key_score
from leuktui.formatting import (
    age,
    epoch_to_dict,
    evaluation_to_dict,
    number,
    percent,
    run_to_dict,
    status_text,
)

PROG = "leuktui"
# Errors of the machine a user can fix: a full disk or quota, a read-only file system.
USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


class UsageError(UserError):
    """A command-line mistake; printed as one line, exit status 2."""


# -- config flags, generated from RunConfig -----------------------------------------------------------


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run configuration")
    defaults = RunConfig()
    for f in dataclasses.fields(RunConfig):
        default = getattr(defaults, f.name)
        help_text = f.metadata.get("help", "")
        if "choices" in f.metadata:
            help_text += f" ({'|'.join(f.metadata['choices'])})"
        if isinstance(default, bool):
            group.add_argument(flag_name(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{help_text} (default: {'on' if default else 'off'})")
        else:
            group.add_argument(flag_name(f.name), dest=f.name, metavar=f.name.upper(), default=None,
                               help=f"{help_text} (default: {default})")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values = {name: getattr(args, name) for name in RunConfig.field_names() if getattr(args, name, None) is not None}
    try:
        return RunConfig.from_dict(values)
    except ConfigError as exc:
        raise UsageError(f"{flag_name(exc.field)}: {exc.message}") from None


def run_id_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (a number)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (a positive number)")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


class Parser(argparse.ArgumentParser):
    """argparse, but usage mistakes are one line with the program's name and exit status 2."""

    def error(self, message: str):
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Experiment manager for leukemia cell classification (C-NMC 2019).")
    parser.add_argument("--home", help="workspace folder (default: $LEUKTUI_HOME or ./leuktui-home)")
    parser.add_argument("--no-scheduler", action="store_true", help="open the app without starting the scheduler")
    commands = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    run = commands.add_parser("run", help="train a run in the foreground and record it")
    add_config_flags(run)
    run.add_argument("--name", help="run name (default: made from the config)")
    run.add_argument("--tag", action="append", default=[], help="tag the run (repeatable)")
    run.add_argument("--notes", default="", help="free-text notes")
    run.set_defaults(handler=cmd_run)

    queue = commands.add_parser("queue", help="queue a run or a sweep (`queue ls` lists the queue)")
    queue.add_argument("action", nargs="?", choices=["ls"], help="ls: show queued and running work in order")
    add_config_flags(queue)
    queue.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                       help="a sweep factor; repeat for the cartesian product (any config field)")
    queue.add_argument("--name", help="run name, or the sweep's name with --grid")
    queue.add_argument("--tag", action="append", default=[], help="tag the run(s) (repeatable)")
    queue.add_argument("--notes", default="", help="free-text notes")
    queue.add_argument("--force", action="store_true", help="queue even if a completed run has this exact config")
    queue.add_argument("--no-start", action="store_true", help="do not start the scheduler")
    queue.add_argument("--json", action="store_true", help="print JSON for scripts")
    queue.set_defaults(handler=cmd_queue)

    for name, help_text in (
        ("cancel", "cancel a queued run, or stop a running one (it checkpoints first)"),
        ("hold", "keep a queued run from starting"),
        ("release", "let a held run start again"),
        ("prioritize", "move a waiting run to the front of the queue"),
        ("retry", "queue a new run with the same config, linked to this one"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("run", type=run_id_arg, metavar="RUN")
        if name == "retry":
            sub.add_argument("--no-start", action="store_true", help="do not start the scheduler")
        sub.set_defaults(handler=cmd_queue_op, operation=name)

    resume = commands.add_parser("resume", help="continue an interrupted or cancelled run from its last checkpoint")
    resume.add_argument("run", type=run_id_arg, metavar="RUN")
    resume.add_argument("--foreground", action="store_true", help="train here instead of through the queue")
    resume.add_argument("--no-start", action="store_true", help="do not start the scheduler")
    resume.set_defaults(handler=cmd_resume)

    scheduler = commands.add_parser("scheduler", help="the background process that works the queue")
    scheduler.add_argument("action", choices=["start", "stop", "status"])
    scheduler.add_argument("--max-parallel", type=positive_int, help="concurrent runs without GPUs (default 1)")
    scheduler.add_argument("--per-gpu", type=positive_int, help="concurrent runs per GPU (default 1)")
    scheduler.add_argument("--idle-timeout", type=positive_int, metavar="SECONDS", help="exit after this long idle (default 300)")
    scheduler.add_argument("--backend", choices=["local", "slurm"], help="where runs go: local processes or Slurm jobs (default local)")
    scheduler.add_argument("--partition", metavar="P", help="Slurm partition for the jobs (default: the cluster's default)")
    scheduler.add_argument("--sbatch-arg", action="append", metavar="ARG", dest="sbatch_args",
                           help="an extra sbatch option, e.g. --sbatch-arg=--time=4:00:00 (repeatable; replaces the saved ones)")
    scheduler.add_argument("--foreground", action="store_true", help="run in this terminal (start only)")
    scheduler.add_argument("--json", action="store_true", help="print JSON for scripts (status only)")
    scheduler.set_defaults(handler=cmd_scheduler)

    ls = commands.add_parser("ls", help="list runs")
    ls.add_argument("--status", action="append", help="only runs with this status (repeatable)")
    ls.add_argument("--limit", type=positive_int, help="at most this many runs (newest first)")
    ls.add_argument("--json", action="store_true", help="print JSON for scripts")
    ls.set_defaults(handler=cmd_ls)

    show = commands.add_parser("show", help="show one run: config, epochs, evaluations")
    show.add_argument("run", type=run_id_arg, metavar="RUN")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(handler=cmd_show)

    evaluate = commands.add_parser("eval", help="re-evaluate a run's checkpoint on the validation set")
    evaluate.add_argument("run", type=run_id_arg, metavar="RUN")
    evaluate.add_argument("--tta", default="single", help="test-time views: single|five|ten (default: single)")
    evaluate.add_argument("--checkpoint", default="best", help="best|last (default: best)")
    evaluate.add_argument("--split", default="valid", help="train|valid (default: valid)")
    evaluate.add_argument("--json", action="store_true", help="print JSON for scripts")
    evaluate.set_defaults(handler=cmd_eval)

    export = commands.add_parser("export", help="write the Kaggle submission CSV (ID,label); several runs make an ensemble")
    export.add_argument("run", type=run_id_arg, nargs="+", metavar="RUN", help="a run, or several: their ALL probabilities are averaged")
    export.add_argument("-o", "--output", help="output CSV (default: WORKSPACE/exports/run-RUN-TTA.csv, ensemble-RUN-RUN-TTA.csv)")
    export.add_argument("--test-csv", help="CSV with a Path column (default: the one matching the model depth)")
    export.add_argument("--tta", default="none", help="none|five|ten (default: none)")
    export.add_argument("--checkpoint", default="best", help="best|last (default: best)")
    export.add_argument("--proba", action="store_true", help="add a prob_all column with P(ALL)")
    export.set_defaults(handler=cmd_export)

    score = commands.add_parser("score", help="score a submission against an answer key")
    score.add_argument("file", metavar="FILE", help="submission CSV (ID,label)")
    score.add_argument("--key", required=True, help="answer key CSV (ID,label or Path,label)")
    score.add_argument("--json", action="store_true", help="print JSON for scripts")
    score.set_defaults(handler=cmd_score)

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", parser_class=Parser, metavar="COMMAND", required=True)
    check = data_commands.add_parser("check", help="validate a dataset and report on it")
    check.add_argument("dir", metavar="DIR")
    check.add_argument("--json", action="store_true", help="print JSON for scripts")
    check.set_defaults(handler=cmd_data_check)
    synth = data_commands.add_parser("synth", help="write a synthetic dataset in the lab's layout")
    synth.add_argument("dir", metavar="DIR")
    synth.add_argument("--n-train", type=positive_int, default=800)
    synth.add_argument("--n-valid", type=positive_int, default=200)
    synth.add_argument("--n-test", type=positive_int, default=200)
    synth.add_argument("--size", type=positive_int, default=128, help="image side in pixels (real images are 450)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=cmd_data_synth)
    add_report_commands(commands)
    return parser


# -- helpers ------------------------------------------------------------------------------------------


def open_workspace(args: argparse.Namespace) -> tuple[Workspace, Database]:
    workspace = Workspace.resolve(args.home).ensure()
    return workspace, Database(workspace.db_url)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def console():
    from rich.console import Console

    return Console()


def metrics_line(metrics: dict[str, Any]) -> str:
    """Every registered metric of a ``{key: value}`` dict, as one line."""
    return "  ".join(f"{m.label} {m.format(metrics.get(m.key))}" for m in METRICS if m.key in metrics)


# -- commands -----------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    workspace, db = open_workspace(args)
    from engine.control import create_run, preflight

    preflight(config.with_absolute_paths(), workspace)
    run = create_run(db, config, name=args.name, tags=args.tag, notes=args.notes, status="running")
    return _train_foreground(workspace, db, run.id, resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from engine import control

    if not args.foreground:
        control.resume(db, args.run)
        print(f"run {args.run} queued to resume from its last checkpoint")
        ensure_scheduler(workspace, args.no_start)
        return 0
    run = db.get_run(args.run)
    if not states.move(db, run.id, "running", only_from=RESUMABLE_STATUSES, error=None, cancel_requested_at=None):
        raise UsageError(f"run {run.id} is {run.status}; only interrupted, cancelled or failed runs resume")
    return _train_foreground(workspace, db, run.id, resume=True)


def ensure_scheduler(workspace: Workspace, no_start: bool) -> None:
    if no_start:
        return
    from engine.scheduler import start_detached

    pid = start_detached(workspace)
    print(f"scheduler running (pid {pid}); log: {workspace.home / 'scheduler.log'}")


def cmd_queue(args: argparse.Namespace) -> int:
    if args.action == "ls":
        return cmd_queue_ls(args)
    from engine.control import parse_grid, queue_runs

    config = config_from_args(args)
    try:
        grid = parse_grid(args.grid)
    except ConfigError as exc:
        raise UsageError(f"--grid: {exc.message}") from None
    workspace, db = open_workspace(args)
    runs, sweep = queue_runs(db, config, grid=grid, name=args.name, tags=args.tag, notes=args.notes, force=args.force,
                             workspace=workspace)
    if args.json:
        print_json({"sweep_id": sweep.id if sweep else None, "run_ids": [r.id for r in runs]})
    else:
        if sweep:
            factors = " x ".join(f"{k} ({len(v)})" for k, v in sweep.factors.items())
            print(f"sweep {sweep.id} '{sweep.name}': {len(runs)} runs over {factors}")
        for run in runs:
            print(f"queued run {run.id} {run.name}")
    ensure_scheduler(workspace, args.no_start)
    return 0


def cmd_queue_ls(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from engine.scheduler import running_pid

    runs = db.queue()
    pid = running_pid(workspace)
    from engine.slurm import job_cell, states_of_runs

    jobs = states_of_runs(runs)
    if args.json:
        print_json({"scheduler_pid": pid, "runs": [
            {**run_to_dict(r), "job": {"state": j.state, "node": j.node, "reason": j.reason} if (j := jobs.get(r.id)) else None}
            for r in runs
        ]})
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("#", "id", "name", "status", "device", "job", "epoch", "priority", "age"):
        table.add_column(column)
    for position, run in enumerate(runs, start=1):
        job_text = f"{run.backend} {job_cell(jobs[run.id])}" if run.id in jobs else "-"
        table.add_row(str(position), str(run.id), run.name, run.status, run.device or "-", job_text,
                      f"{run.epochs_done}/{run.config.get('epochs')}", str(run.priority), age(run.created_at))
    out = console()
    out.print(f"scheduler: running (pid {pid})" if pid else "scheduler: not running")
    out.print(table if runs else "the queue is empty")
    return 0


def cmd_queue_op(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from engine import control

    if args.operation == "cancel":
        outcome = control.cancel(db, args.run)
        print(f"run {args.run} {outcome}" + (" (the scheduler stops it after the current step)" if outcome == "cancelling" else ""))
    elif args.operation == "retry":
        run = control.retry(db, args.run)
        print(f"queued run {run.id} {run.name} (retry of {args.run})")
        ensure_scheduler(workspace, args.no_start)
    else:
        getattr(control, args.operation)(db, args.run)
        print(f"run {args.run}: {args.operation} done")
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from engine import scheduler

    workspace = Workspace.resolve(args.home).ensure()
    if args.action == "status":
        pid = scheduler.running_pid(workspace)
        options = scheduler.Options.load(workspace)
        if args.json:
            print_json({"running": bool(pid), "pid": pid, "options": dataclasses.asdict(options), "gpus": scheduler.detect_gpus()})
        else:
            state = f"running, pid {pid}" if pid else "not running"
            where = options.backend
            if options.backend == "slurm":
                where += f" (partition {options.partition or 'default'}" + (f", sbatch {' '.join(options.sbatch_args)}" if options.sbatch_args else "") + ")"
            print(f"scheduler {state}; backend {where}; max_parallel {options.max_parallel}, "
                  f"per_gpu {options.per_gpu}, idle timeout {options.idle_timeout:.0f} s")
        return 0
    if args.action == "stop":
        pid = scheduler.stop(workspace)
        print(f"scheduler {pid} stopped; running workers carry on" if pid else "scheduler was not running")
        return 0
    options = scheduler.Options.load(workspace)
    for name in ("max_parallel", "per_gpu", "idle_timeout", "backend", "partition", "sbatch_args"):
        if getattr(args, name) is not None:
            setattr(options, name, getattr(args, name))
    if options.backend == "slurm":
        from engine.slurm import check_slurm

        check_slurm(options.partition)
    options.save(workspace)
    if args.foreground:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        return scheduler.serve(workspace, options)
    pid = scheduler.running_pid(workspace)
    if pid:
        print(f"scheduler already running (pid {pid}); new options apply from its next start")
        return 0
    print(f"scheduler started (pid {scheduler.start_detached(workspace)}); log: {workspace.home / scheduler.LOG_FILE}")
    return 0


def _train_foreground(workspace: Workspace, db: Database, run_id: int, *, resume: bool) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = console()
    run = db.get_run(run_id)
    out.print(f"run [bold]{run_id}[/] {run.name}  (log: {workspace.log_path(run_id)})")
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=out, transient=True
    ) as progress:
        task = progress.add_task("loading data", total=None)

        def on_event(event: dict[str, Any]) -> None:
            kind = event["type"]
            if kind == "start":
                progress.update(task, description=f"epoch {event['start_epoch']}/{event['epochs']}", total=event["steps_per_epoch"], completed=0)
            elif kind == "step":
                progress.update(task, description=f"epoch {event['epoch']}", completed=event["step"], total=event["steps"])
            elif kind == "epoch":
                best = "  *best*" if event["best_epoch"] == event["epoch"] else ""
                validation = "  ".join(f"{m.title} {m.format(event[m.epoch_column])}" for m in METRICS)
                progress.console.print(
                    f"epoch {event['epoch']:>3}/{event['epochs']}  loss {number(event['train_loss'])}  "
                    f"acc {percent(event['train_acc'])} | val {validation}  {number(event['images_per_s'], 1)} img/s{best}",
                    highlight=False,
                )
                progress.update(task, description=f"epoch {event['epoch'] + 1}", completed=0)

        import threading

        from engine.worker import execute

        # The worker's own entry point: heartbeats, phases, and a cancel from the app or
        # `leuktui cancel` work as for queued runs.
        try:
            status = execute(db, workspace, run_id, stop=threading.Event(), on_event=on_event, resume=resume)
        except KeyboardInterrupt:
            out.print(f"run {run_id} interrupted; continue it with: leuktui resume {run_id}")
            return 130
    run = db.get_run(run_id)
    out.print(f"run {run_id} {status}: best epoch {run.best_epoch}, val acc {percent(run.best_val_acc)}, weighted F1 {number(run.best_val_f1)}")
    print(run_id)
    return 0 if status == "completed" else 1


def cmd_ls(args: argparse.Namespace) -> int:
    _, db = open_workspace(args)
    runs = db.list_runs(statuses=args.status, limit=args.limit)
    if args.json:
        print_json([run_to_dict(r) for r in runs])
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "model", "status", "epoch", "best val acc", "val F1", "eval", "tags", "age"):
        table.add_column(column, justify="right" if column in ("id", "epoch", "best val acc", "val F1") else "left")
    for run in runs:
        table.add_row(
            str(run.id), run.name, run.model, status_text(run), f"{run.epochs_done}/{run.config.get('epochs')}",
            percent(run.best_val_acc), number(run.best_val_f1), run.config.get("eval_mode", "-"),
            ",".join(run.tags), age(run.created_at),
        )
    console().print(table if runs else "no runs yet: start one with `leuktui run`")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _, db = open_workspace(args)
    run = db.get_run(args.run)
    epochs = db.epochs(run.id)
    evaluations = db.evaluations(run.id)
    if args.json:
        print_json({
            **run_to_dict(run),
            "config": run.config,
            "environment": run.environment,
            "summary": run.summary,
            "epochs": [epoch_to_dict(e) for e in epochs],
            "evaluations": [evaluation_to_dict(e) for e in evaluations],
        })
        return 0
    from rich.table import Table

    out = console()
    out.print(f"[bold]run {run.id}[/] {run.name}  [{run.status}]  {run.model}  epochs {run.epochs_done}/{run.config.get('epochs')}")
    if run.error:
        out.print(f"[red]error:[/] {run.error}")
    if run.environment:
        env = run.environment
        out.print(f"ran on {env.get('host')} · {env.get('device_name')} ({env.get('device')}, {env.get('precision', '')}) · torch {env.get('torch')}")
    out.print("config: " + "  ".join(f"{k}={v}" for k, v in sorted(run.config.items())))
    if run.best_epoch is not None:
        out.print(f"best epoch {run.best_epoch}: " + metrics_line(epoch_metrics(run.summary)), highlight=False)
    if epochs:
        table = Table(title="epochs", box=None, header_style="bold")
        for column in ("epoch", "train loss", "train acc", *(f"val {m.title}" for m in METRICS), "lr", "img/s"):
            table.add_column(column, justify="right")
        for e in epochs:
            table.add_row(str(e.epoch), number(e.train_loss), percent(e.train_acc),
                          *(m.format(getattr(e, m.epoch_column)) for m in METRICS),
                          f"{e.lr:.2g}" if e.lr else "-", number(e.images_per_s, 1))
        out.print(table)
    if evaluations:
        table = Table(title="evaluations", box=None, header_style="bold")
        for column in ("id", "checkpoint", "epoch", "split", "tta", "n", *(m.title for m in METRICS), "file"):
            table.add_column(column)
        for e in evaluations:
            table.add_row(str(e.id), e.checkpoint, str(e.epoch), e.split, e.tta, str(e.n),
                          *(m.format(getattr(e, m.key)) for m in METRICS), e.output_path or "")
        out.print(table)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    if args.split not in ("train", "valid"):
        raise UsageError(f"--split: {args.split!r} is not one of train, valid")
    from engine.predict import evaluate_run

    evaluation, metrics = evaluate_run(db, workspace, args.run, tta=args.tta, checkpoint=args.checkpoint, split=args.split)
    if args.json:
        print_json(evaluation_to_dict(evaluation))
    else:
        print(f"run {args.run} {evaluation.checkpoint} (epoch {evaluation.epoch}) on {evaluation.split}, {evaluation.tta}: {metrics_line(metrics)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from engine.predict import export_submission, tta_mode

    name = f"run-{args.run[0]}" if len(args.run) == 1 else "ensemble-" + "-".join(map(str, args.run))
    output = Path(args.output) if args.output else workspace.exports_dir / f"{name}-{tta_mode(args.tta)}.csv"
    if not args.output:
        output.parent.mkdir(parents=True, exist_ok=True)
    options = {"test_csv": args.test_csv, "tta": args.tta, "checkpoint": args.checkpoint, "proba": args.proba}
    if len(args.run) > 1:
        from engine.ensemble import export_ensemble

        path, rows = export_ensemble(db, workspace, args.run, output, **options)
    else:
        path, rows = export_submission(db, workspace, args.run[0], output, **options)
    print(f"wrote {rows} rows to {path}")
    submission = db.submission_for_path(str(path.resolve()))
    print(f"recorded as submission {submission.id}; add its leaderboard score with: leuktui submissions score {submission.id} SCORE")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from engine.scoring import score_submission

    metrics = score_submission(args.file, args.key)
    if args.json:
        print_json(metrics)
    else:
        (tn, fp), (fn, tp) = metrics["confusion"]
        print(f"{args.file}: {metrics['n']} rows  {metrics_line(metrics)}")
        print(f"confusion (rows true HEM/ALL, columns predicted HEM/ALL): [[{tn}, {fp}], [{fn}, {tp}]]")
    submission_id = record_key_score(args.home, args.file, metrics)
    if submission_id is not None and not args.json:
        print(f"recorded accuracy {metrics['acc']:.5f} as the score of submission {submission_id}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from engine.datasets import check_dataset

    report = check_dataset(Path(args.dir))
    if args.json:
        print_json(report.to_dict())
        return 0 if report.ok else 1
    out = console()
    out.print(f"[bold]{report.root}[/] ({report.layout} layout)")
    for name, stats in report.splits.items():
        balance = f"  ALL {stats['all']}  HEM {stats['hem']} ({percent(stats['hem_fraction'])} HEM)" if "all" in stats else ""
        sizes = ", ".join(f"{size} ({n})" for size, n in stats.get("image_sizes", {}).items())
        out.print(f"  {name:<20} {stats['rows']:>6} rows{balance}  sizes: {sizes or '-'}")
    for warning in report.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for error in report.errors:
        out.print(f"[red]error:[/] {error}", highlight=False)
    out.print("[green]ok[/]: ready to train" if report.ok else f"[red]{len(report.errors)} problem(s)[/] would break training")
    return 0 if report.ok else 1


def cmd_data_synth(args: argparse.Namespace) -> int:
    from engine.synth import make_dataset

    try:
        root = make_dataset(args.dir, n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test, size=args.size, seed=args.seed)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {args.n_train} train, {args.n_valid} valid, {args.n_test} test images ({args.size}px) to {root}")
    return 0


# -- entry point --------------------------------------------------------------------------------------


def open_app(args: argparse.Namespace) -> int:
    """``leuktui`` with no command: the terminal app on the workspace."""
    from leuktui.app import LeuktuiApp

    workspace = Workspace.resolve(args.home).ensure()
    LeuktuiApp(workspace, start_scheduler=not args.no_scheduler).run()
    return 0


def fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = None
    try:
        apply_file_mode()
        args = parser.parse_args(argv)
        if args.command is None:
            return open_app(args)
        return args.handler(args)
    except UsageError as exc:
        return fail(str(exc), 2)
    except ConfigError as exc:
        return fail(f"{flag_name(exc.field)}: {exc.message}", 2)
    except UserError as exc:  # NotFound, WorkspaceError, DatabaseError, DatasetError, ... are user errors
        return fail(str(exc), 1)
    except BrokenPipeError:
        return 0
    except PermissionError as exc:  # a folder or file of another user, or read-only
        return fail(f"{exc.filename or 'a file'}: permission denied", 1)
    except OSError as exc:
        if exc.errno not in USER_OS_ERRORS:
            raise
        return fail(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror}", 1)
    except DBAPIError as exc:  # the database went away, is locked, or is damaged while in use
        if not is_unusable_database(exc):
            raise
        return fail(str(database_error(Workspace.resolve(getattr(args, "home", None)).db_url, exc)), 1)


if __name__ == "__main__":
    sys.exit(main())
