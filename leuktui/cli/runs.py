"""Commands on runs themselves: ``run`` (train in the foreground), ``resume``, ``ls``, ``show``,
``delete``."""

from __future__ import annotations

import argparse
import contextlib
import signal
from typing import Any

from db import Database, Workspace, states
from db.vocabulary import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    METRICS,
    PRUNED,
    RESUMABLE_STATUSES,
    RUN_STATES,
    RUNNING,
    epoch_metrics,
)
from leuktui.cli.common import (
    UsageError,
    add_command,
    add_config_flags,
    add_json,
    ask,
    check_tags,
    config_from_args,
    console,
    ensure_scheduler,
    metrics_line,
    open_workspace,
    open_workspace_checked,
    positive_int,
    print_json,
    run_id_arg,
    run_name,
    text,
)
from leuktui.formatting import (
    age,
    best_accuracy_text,
    epoch_to_dict,
    evaluation_to_dict,
    is_final_fit,
    number,
    percent,
    run_to_dict,
    status_text,
)
from leuktui.results import LAST_K, best_evaluation, interval_text, last_k_mean


def add_commands(commands: Any) -> None:
    run = add_command(commands, "run", help="train a run in the foreground and record it")
    add_config_flags(run)
    run.add_argument("--name", type=run_name, help="run name (default: made from the config)")
    run.add_argument("--tag", action="append", default=[], help="tag the run (repeatable)")
    run.add_argument("--notes", default="", help="free-text notes")
    run.set_defaults(handler=cmd_run, trains_here=True)

    resume = add_command(commands, "resume", help="continue an interrupted or cancelled run from its last checkpoint")
    resume.add_argument("run", type=run_id_arg, metavar="RUN")
    resume.add_argument("--foreground", action="store_true", help="train here instead of through the queue")
    resume.add_argument("--nproc", type=positive_int, metavar="N",
                        help="continue with N processes (DDP; each takes a share of every epoch's batches)")
    resume.add_argument("--no-start", action="store_true", help="do not start the scheduler")
    resume.set_defaults(handler=cmd_resume, trains_here=True)

    ls = add_command(commands, "ls", help="list runs")
    ls.add_argument("--status", action="append", choices=RUN_STATES, metavar="STATUS",
                    help=f"only runs with this status (repeatable; running includes cancelling): {', '.join(RUN_STATES)}")
    ls.add_argument("--limit", type=positive_int, help="at most this many runs (newest first)")
    ls.add_argument("--last-k", type=positive_int, default=LAST_K, metavar="K",
                    help=f"epochs of the last-k mean shown beside the best epoch (default {LAST_K})")
    add_json(ls)
    ls.set_defaults(handler=cmd_ls)

    show = add_command(commands, "show", help="show one run: config, epochs, evaluations")
    show.add_argument("run", type=run_id_arg, metavar="RUN")
    show.add_argument("--last-k", type=positive_int, default=LAST_K, metavar="K",
                      help=f"epochs of the last-k mean shown beside the best epoch (default {LAST_K})")
    add_json(show)
    show.set_defaults(handler=cmd_show)

    delete = add_command(commands, "delete", help="delete runs, their records and their files (asks first)")
    delete.add_argument("runs", type=run_id_arg, nargs="+", metavar="RUN")
    delete.add_argument("-y", "--yes", action="store_true", help="do not ask (needed without a terminal)")
    delete.set_defaults(handler=cmd_delete)


def cmd_run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    tags = check_tags(args.tag)
    from runner.control import check_labels, create_run, preflight

    def check(workspace) -> None:
        check_labels(args.name, tags, args.notes)
        preflight(config.with_absolute_paths(), workspace, here=True)

    workspace, db = open_workspace_checked(args, check)
    with ctrl_c_held():
        run = create_run(db, config, name=args.name, tags=tags, notes=args.notes, status=RUNNING)
    return train_foreground(workspace, db, run.id, resume=False)


def cmd_resume(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from runner import control

    if args.nproc is not None:
        control.set_processes(db, args.run, args.nproc, workspace=workspace, here=args.foreground)
    if not args.foreground:
        control.resume(db, args.run)
        if workspace.checkpoint_path(args.run, "last").is_file():
            print(f"run {args.run} queued to resume from its last checkpoint")
        else:
            print(f"run {args.run} queued; it stopped before its first checkpoint, so it starts from epoch 1")
        ensure_scheduler(workspace, args.no_start, json=getattr(args, "json", False))
        return 0
    run = db.get_run(args.run)
    with ctrl_c_held():
        moved = states.move(db, run.id, RUNNING, only_from=RESUMABLE_STATUSES, error=None, cancel_requested_at=None)
    if not moved:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        raise UsageError(f"run {run.id} is {run.state}; only interrupted, cancelled or failed runs resume")
    # From its last checkpoint, as a queued resume does; a run stopped before its first starts from epoch 1.
    return train_foreground(workspace, db, run.id, resume=workspace.checkpoint_path(run.id, "last").is_file())


@contextlib.contextmanager
def ctrl_c_held():
    """Record a run running with Ctrl-C held back: it lands once ``train_foreground`` can end the
    run interrupted (never between the record and that), or at once if recording fails."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        raise


def train_foreground(workspace: Workspace, db: Database, run_id: int, *, resume: bool) -> int:
    """Train run ``run_id`` (recorded running) here, showing its epochs. Ctrl-C at any moment, even
    before the trainer starts (importing torch, loading data), ends it interrupted, in one line."""
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # a Ctrl-C held while the run was recorded lands here
        return _train_foreground(workspace, db, run_id, resume=resume)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while this is recorded and said
        states.finish(db, run_id, INTERRUPTED)  # where the trainer had not yet recorded how it stopped
        status = db.get_run(run_id).status
        hint = f"; continue it with: leuktui resume {run_id}" if status in RESUMABLE_STATUSES else ""
        console().print(f"run {run_id} {status}{hint}", markup=False, highlight=False)
        return 130


def _train_foreground(workspace: Workspace, db: Database, run_id: int, *, resume: bool) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = console()
    run = db.get_run(run_id)
    out.print("run ", str(run_id), " ", text(run.name), f"  (log: {workspace.log_path(run_id)})", sep="", markup=False)
    with Progress(
        TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=out, transient=True
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
                    highlight=False, markup=False,
                )
                progress.update(task, description=f"epoch {event['epoch'] + 1}", completed=0)

        import threading

        from engine.worker import execute

        nproc = int(run.config.get("nproc", 1) or 1)
        # The worker's own entry point: heartbeats, phases, and a cancel from the app or
        # `leuktui cancel` work as for queued runs.
        if nproc > 1:
            status = train_processes(workspace, db, run_id, nproc, on_event, resume=resume)
        else:
            status = execute(db, workspace, run_id, stop=threading.Event(), on_event=on_event, resume=resume)
    run = db.get_run(run_id)
    out.print(f"run {run_id} {status}: best epoch {run.best_epoch}, val acc {percent(run.best_val_acc)}, "
              f"weighted F1 {number(run.best_val_f1)}", markup=False, highlight=False)
    print(run_id)
    return 0 if status == COMPLETED else 1


def train_processes(workspace: Workspace, db: Database, run_id: int, nproc: int, on_event, *, resume: bool) -> str:
    """A run of ``nproc`` processes in the foreground: torchrun starts them (their output goes to
    the run's log) and the epochs are shown as rank 0 records them. Ctrl-C stops every rank after
    its step, with a checkpoint (the run is then cancelled, and resumes)."""
    import subprocess
    import time

    from runner.backends.base import NPROC_VARIABLE, worker_argv
    from runner.processes import clean_env

    env = {**clean_env(), NPROC_VARIABLE: str(nproc)}
    argv = worker_argv(workspace, run_id, env)
    run = db.get_run(run_id)
    workspace.claim_run_dir(run_id, run.owner, fresh=run.epochs_done == 0)  # before its log is opened in it
    log_path = workspace.log_path(run_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    shown = run.epochs_done if resume else 0
    on_event({"type": "start", "run_id": run_id, "start_epoch": shown + 1, "epochs": run.config["epochs"], "steps_per_epoch": None})
    with log_path.open("ab") as output:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                code = process.poll()
                for epoch in db.epochs(run_id, after=shown):
                    run = db.get_run(run_id)
                    on_event({"type": "epoch", **{k: getattr(epoch, k) for k in ("epoch", "train_loss", "train_acc", "images_per_s")},
                              **{m.epoch_column: getattr(epoch, m.epoch_column) for m in METRICS},
                              "epochs": run.config["epochs"], "best_epoch": run.best_epoch})
                    shown = epoch.epoch
                if code is not None:
                    break
                time.sleep(0.5)
        except KeyboardInterrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # another Ctrl-C must not leave them writing unseen
            process.wait()  # the ranks saw the same Ctrl-C: they checkpoint and stop, and record how
            raise
    status = db.get_run(run_id).status
    if status == RUNNING:  # torchrun ended without its rank 0 ending the run: a rank died
        states.finish(db, run_id, FAILED, error=f"torchrun exited with status {code} before the run ended; see {log_path}")
        status = db.get_run(run_id).status
    return status


def cmd_ls(args: argparse.Namespace) -> int:
    _, db = open_workspace(args, write=False)
    runs = db.list_runs(statuses=args.status, limit=args.limit)
    means = db.last_k_means(args.last_k, [r.id for r in runs] if len(runs) <= 500 else None) if runs else {}
    last = {r.id: means.get(r.id, {m.key: None for m in METRICS}) for r in runs}
    if args.json:
        print_json([{**run_to_dict(r), "last_k": {"k": args.last_k, **last[r.id]}} for r in runs])
        return 0
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    last_column = f"last-{args.last_k} acc"
    for column in ("id", "name", "model", "status", "epoch", "best val acc", last_column, "val F1", "eval", "tags", "age"):
        table.add_column(column, justify="right" if column in ("id", "epoch", "best val acc", last_column, "val F1") else "left")
    for run in runs:
        table.add_row(
            str(run.id), text(run.name), text(run.model), text(status_text(run)), f"{run.epochs_done}/{run.config.get('epochs')}",
            best_accuracy_text(run), percent(last[run.id]["acc"]), number(run.best_val_f1), text(run.config.get("eval_mode", "-")),
            text(",".join(run.tags)), age(run.created_at),
        )
    if runs:
        console().print(table)
    elif args.status:
        print(f"no runs with status {' or '.join(args.status)}")
    else:
        print("no runs yet: start one with `leuktui run`")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _, db = open_workspace(args, write=False)
    run = db.get_run(args.run)
    epochs = db.epochs(run.id)
    evaluations = db.evaluations(run.id)
    source = best_evaluation(run, evaluations)
    last = {m.key: last_k_mean(epochs, m.key, args.last_k) for m in METRICS}
    if args.json:
        print_json({
            **run_to_dict(run),
            "best_intervals": source.intervals if source is not None else None,
            "last_k": {"k": args.last_k, **last},
            "config": run.config,
            "environment": run.environment,
            "summary": run.summary,
            "epochs": [epoch_to_dict(e) for e in epochs],
            "evaluations": [evaluation_to_dict(e) for e in evaluations],
        })
        return 0
    from rich.table import Table
    from rich.text import Text

    out = console()
    out.print(Text.assemble((f"run {run.id}", "bold"), text(f" {run.name}  [{status_text(run)}]  {run.model}  "
                                                          f"epochs {run.epochs_done}/{run.config.get('epochs')}")))
    if run.error:
        out.print(Text.assemble(("error:", "red"), " ", text(run.error, newlines=True)))
    if run.tags:
        out.print(text(f"tags: {', '.join(run.tags)}"))
    if run.notes:
        out.print(text(f"notes: {run.notes}"))
    if run.trial is not None and run.sweep_id is not None:
        study = db.get_sweep(run.sweep_id)
        ended = {PRUNED: f"; pruned after epoch {run.epochs_done}: the study's {study.study['pruner']} pruner stopped it"}
        out.print(text(f"trial {run.trial} of study '{study.name}' (`leuktui study show {study.name}`){ended.get(run.status, '')}"))
    if is_final_fit(run):
        out.print(text(f"final fit{f' of run {run.parent_id}' if run.parent_id else ''}: trained on train + valid, so it has no "
                       f"validation score; `leuktui finalize {run.parent_id or 'RUN'} --export` writes the submission"))
    if run.environment:
        env = run.environment
        out.print(text(f"ran on {env.get('host')} · {env.get('device_name')} ({env.get('device')}, {env.get('precision', '')}) · torch {env.get('torch')}"))
    out.print(text("config: " + "  ".join(f"{k}={v}" for k, v in sorted(run.config.items()))))
    if run.best_epoch is not None:
        at_best = epoch_metrics(run.summary)
        out.print(text(f"best epoch {run.best_epoch}: " + "  ".join(
            f"{m.label} {m.format(at_best.get(m.key))}" + (f" {interval_text(m.key, source.interval(m.key))}" if source else "")
            for m in METRICS if m.key in at_best)))
        if source is not None and source.intervals:
            out.print(text(f"  [95% bootstrap intervals over the {source.n} validation images, {source.intervals.get('resamples')} "
                           f"resamples, seed {source.intervals.get('seed')}]"))
        out.print(text(f"mean of the last {min(args.last_k, len(epochs))} epochs: " + metrics_line(last)
                       + "  (the best epoch was picked on the same validation set; this mean is not)"))
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
        for column in ("id", "origin", "checkpoint", "epoch", "split", "tta", "n", *(m.title for m in METRICS), "acc 95% CI", "file"):
            table.add_column(column)
        for e in evaluations:
            table.add_row(str(e.id), e.origin, e.checkpoint, str(e.epoch), text(e.split), e.tta, str(e.n),
                          *(m.format(getattr(e, m.key)) for m in METRICS), interval_text("acc", e.interval("acc")) or "-",
                          text(e.output_path or ""))
        out.print(table)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    workspace, db = open_workspace(args)
    from runner import control

    runs = [db.get_run(run_id) for run_id in dict.fromkeys(args.runs)]  # every id is checked before anything goes
    names = ", ".join(f"{run.id} ({run.name})" for run in runs)
    if not args.yes and not ask(f"delete run(s) {names} and their files?"):
        raise UsageError("nothing deleted: confirm on a terminal, or pass --yes")
    for run in runs:
        control.delete(db, workspace, run.id)
        print(f"deleted run {run.id}")
    return 0
