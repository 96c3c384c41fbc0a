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
    check_tags,
    config_from_args,
    console,
    ensure_scheduler,
    open_workspace,
    open_workspace_checked,
    positive_int,
    print_json,
    run_id_arg,
    run_name,
    text,
)
from leuktui.cli.evaluation import views_arg
from leuktui.formatting import age, run_to_dict, status_text, visible


def add_commands(commands: Any) -> None:
    queue = add_command(commands, "queue", help="queue a run or a sweep (`queue ls` lists the queue)")
    queue.add_argument("action", nargs="?", choices=["ls"], help="ls: show queued and running work in order")
    add_config_flags(queue)
    queue.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                       help="a sweep factor; repeat for the cartesian product (any config field)")
    queue.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                       help="N replicates that differ only in seed (from --seed up), N per cell of a --grid")
    queue.add_argument("--name", type=run_name, help="run name, or the sweep's name with --grid or --seeds")
    queue.add_argument("--tag", action="append", default=[], help="tag the run(s) (repeatable)")
    queue.add_argument("--notes", default="", help="free-text notes")
    queue.add_argument("--force", action="store_true", help="queue even if a completed run has this exact config")
    queue.add_argument("--no-start", action="store_true", help="do not start the scheduler")
    add_json(queue)
    queue.set_defaults(handler=cmd_queue)

    finalize = add_command(commands, "finalize", help="the final fit: retrain a run's config on train + valid for its best "
                                                      "epoch count (N seeds), then --export their ensemble as the submission")
    finalize.add_argument("run", type=run_id_arg, metavar="RUN")
    finalize.add_argument("--seeds", type=positive_int, default=None, metavar="N", help="seeds to fit (from the run's own up; default 1)")
    finalize.add_argument("--epochs", type=positive_int, help="epochs to train (default: the run's best epoch)")
    finalize.add_argument("--export", action="store_true",
                          help="write the submission from the run's finished final fits (their ensemble) instead of queueing")
    finalize.add_argument("-o", "--output", help="with --export: output CSV (default: WORKSPACE/exports/final-RUN-VIEWS.csv)")
    finalize.add_argument("--tta", "--eval-mode", dest="tta", type=views_arg, default=None, metavar="VIEWS",
                          help="with --export: test-time views (default: the run's own)")
    finalize.add_argument("--force", action="store_true", help="with --export: replace an existing -o file; without: queue a "
                          "seed's final fit again although the run has it")
    finalize.add_argument("--no-start", action="store_true", help="do not start the scheduler")
    add_json(finalize)
    finalize.set_defaults(handler=cmd_finalize)

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
    from runner.control import with_seeds

    try:
        with_seeds(grid, config, args.seeds)
    except ConfigError as exc:
        raise UsageError(f"--seeds: {exc.message}") from None
    tags = check_tags(args.tag)
    from runner.control import check_queue

    workspace, db = open_workspace_checked(args, lambda workspace: check_queue(
        config, grid=grid, name=args.name, tags=tags, notes=args.notes, seeds=args.seeds, workspace=workspace))
    runs, sweep = queue_runs(db, config, grid=grid, name=args.name, tags=tags, notes=args.notes, force=args.force,
                             workspace=workspace, seeds=args.seeds, checked=True)
    if args.json:
        print_json({"sweep_id": sweep.id if sweep else None, "run_ids": [r.id for r in runs]})
    else:
        out = console()
        if sweep:
            factors = " x ".join(f"{k} ({len(v)})" for k, v in sweep.factors.items())
            out.print(text(f"sweep {sweep.id} '{sweep.name}': {len(runs)} runs over {factors}"))
        for run in runs:
            out.print(text(f"queued run {run.id} {run.name}"))
    ensure_scheduler(workspace, args.no_start, json=getattr(args, "json", False))
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    from runner import control

    # The flags of one use are refused in the other: `finalize 3 -o final.csv` without --export
    # would queue three more trainings and drop the path.
    wrong = [flag for flag, given in (("--seeds", args.seeds is not None), ("--epochs", args.epochs is not None),
                                      ("--no-start", args.no_start)) if given] if args.export else \
        [flag for flag, given in (("-o", args.output is not None), ("--tta", args.tta is not None)) if given]
    if wrong:
        raise UsageError(f"{wrong[0]}: only {'without' if args.export else 'with'} --export "
                         f"({'it exports the finished fits' if args.export else 'without it, finalize queues the fits'})")
    workspace, db = open_workspace(args)
    if args.export:
        return export_final(args, workspace, db)
    runs, _, kept = control.finalize(db, args.run, seeds=args.seeds or 1, epochs=args.epochs, workspace=workspace, again=args.force)
    if args.json:
        print_json({"run_ids": [r.id for r in runs], "epochs": runs[0].config["epochs"], "seeds": [r.config["seed"] for r in runs],
                    "kept_run_ids": [fit.id for fit in kept]})
    else:
        out = console()
        for fit in kept:
            out.print(text(f"run {fit.id} fits seed {fit.config['seed']} already ({fit.status}); not queued again"))
        for run in runs:
            out.print(text(f"queued run {run.id} {run.name}: train + valid, {run.config['epochs']} epochs, seed {run.config['seed']}"))
        out.print(text(f"when they finish: leuktui finalize {args.run} --export (they have no validation score)"))
    ensure_scheduler(workspace, args.no_start, json=getattr(args, "json", False))
    return 0


def export_final(args: argparse.Namespace, workspace, db) -> int:
    """The submission of a run's finished final fits: their ensemble (or the one), from ``last``."""
    from pathlib import Path

    from engine.ensemble import export_final as write

    path, rows, submission, lineage = write(db, workspace, args.run, Path(args.output) if args.output else None, tta=args.tta,
                                            force=args.force)
    if args.json:
        print_json({"path": str(path), "rows": rows, "submission_id": submission.id, "run_ids": submission.run_ids, "notes": lineage})
    else:
        print(f"wrote {rows} rows to {visible(path)}")
        console().print(text(f"recorded as submission {submission.id}: {lineage}"))
    return 0


def cmd_queue_ls(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args, write=False)
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
        ensure_scheduler(workspace, args.no_start, json=getattr(args, "json", False))
    else:
        getattr(control, args.operation)(db, args.run)
        print(f"run {args.run}: {args.operation} done")
    return 0
