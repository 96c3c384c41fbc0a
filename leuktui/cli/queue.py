"""Commands on the queue: ``queue`` (a run or a sweep), ``queue ls``, ``cancel``, ``hold``,
``release``, ``prioritize``, ``retry``."""

from __future__ import annotations

import argparse
from typing import Any

from db.vocabulary import CANCELLING
from engine.config import ConfigError
from leuktui.cli.common import (
    UsageError,
    add_command,
    add_config_flags,
    add_json,
    config_from_args,
    console,
    ensure_scheduler,
    open_workspace,
    print_json,
    run_id_arg,
    text,
)
from leuktui.formatting import age, run_to_dict, status_text


def add_commands(commands: Any) -> None:
    queue = add_command(commands, "queue", help="queue a run or a sweep (`queue ls` lists the queue)")
    queue.add_argument("action", nargs="?", choices=["ls"], help="ls: show queued and running work in order")
    add_config_flags(queue)
    queue.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                       help="a sweep factor; repeat for the cartesian product (any config field)")
    queue.add_argument("--name", help="run name, or the sweep's name with --grid")
    queue.add_argument("--tag", action="append", default=[], help="tag the run(s) (repeatable)")
    queue.add_argument("--notes", default="", help="free-text notes")
    queue.add_argument("--force", action="store_true", help="queue even if a completed run has this exact config")
    queue.add_argument("--no-start", action="store_true", help="do not start the scheduler")
    add_json(queue)
    queue.set_defaults(handler=cmd_queue)

    for name, help_text in (
        ("cancel", "cancel a queued run, or stop a running one (it checkpoints first)"),
        ("hold", "keep a queued run from starting"),
        ("release", "let a held run start again"),
        ("prioritize", "move a waiting run to the front of the queue"),
        ("retry", "queue a new run with the same config, linked to this one"),
    ):
        sub = add_command(commands, name, help=help_text)
        sub.add_argument("run", type=run_id_arg, metavar="RUN")
        if name == "retry":
            sub.add_argument("--no-start", action="store_true", help="do not start the scheduler")
        sub.set_defaults(handler=cmd_queue_op, operation=name)


def cmd_queue(args: argparse.Namespace) -> int:
    if args.action == "ls":
        return cmd_queue_ls(args)
    from runner.control import parse_grid, queue_runs

    config = config_from_args(args)
    try:
        grid = parse_grid(args.grid)
    except ConfigError as exc:
        raise UsageError(f"--grid: {exc.message}") from None
    workspace, db = open_workspace(args, create=True)
    runs, sweep = queue_runs(db, config, grid=grid, name=args.name, tags=args.tag, notes=args.notes, force=args.force,
                             workspace=workspace)
    if args.json:
        print_json({"sweep_id": sweep.id if sweep else None, "run_ids": [r.id for r in runs]})
    else:
        out = console()
        if sweep:
            factors = " x ".join(f"{k} ({len(v)})" for k, v in sweep.factors.items())
            out.print(text(f"sweep {sweep.id} '{sweep.name}': {len(runs)} runs over {factors}"))
        for run in runs:
            out.print(text(f"queued run {run.id} {run.name}"))
    ensure_scheduler(workspace, args.no_start)
    return 0


def cmd_queue_ls(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from runner.daemon import running_pid
    from runner.jobs import describe_jobs

    runs = db.queue()
    pid = running_pid(workspace)
    jobs = describe_jobs(workspace, runs)
    if args.json:
        print_json({"scheduler_pid": pid, "runs": [{**run_to_dict(r), "job": jobs.get(r.id)} for r in runs]})
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("#", "id", "name", "status", "device", "job", "epoch", "priority", "age"):
        table.add_column(column)
    for position, run in enumerate(runs, start=1):
        job_text = f"{run.backend} {jobs[run.id]}" if run.id in jobs else "-"
        table.add_row(str(position), str(run.id), text(run.name), text(status_text(run)), text(run.device or "-"), text(job_text),
                      f"{run.epochs_done}/{run.config.get('epochs')}", str(run.priority), age(run.created_at))
    out = console()
    out.print(f"scheduler: running (pid {pid})" if pid else "scheduler: not running")
    out.print(table if runs else "the queue is empty")
    return 0


def cmd_queue_op(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from runner import control

    if args.operation == "cancel":
        outcome = control.cancel(db, args.run)
        print(f"run {args.run} {outcome}" + (" (the scheduler stops it after the current step)" if outcome == CANCELLING else ""))
    elif args.operation == "retry":
        run = control.retry(db, args.run)
        console().print(text(f"queued run {run.id} {run.name} (retry of {args.run})"))
        ensure_scheduler(workspace, args.no_start)
    else:
        getattr(control, args.operation)(db, args.run)
        print(f"run {args.run}: {args.operation} done")
    return 0
