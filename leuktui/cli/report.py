"""``leuktui report`` and ``leuktui submissions``, and the answer-key score a ``score --key``
attaches to the recorded submission it scored.

Nothing heavy at import: the report's matplotlib and pandas load inside ``report`` only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from db import Database, Workspace
from db.errors import UserError
from db.models import Submission
from db.workspace import DB_FILE
from leuktui.cli.common import (
    GLOBAL,
    Parser,
    UsageError,
    add_command,
    add_json,
    add_selection,
    console,
    open_workspace,
    print_json,
    record_id,
    run_id_arg,
    text,
    unwritable_sqlite,
)
from leuktui.formatting import visible
from leuktui.report_jobs import draw_gallery_maps, evaluate_for_roc

SCORE_METRIC = "acc"  # the lab's leaderboard ranks submissions by test accuracy


def add_commands(commands: Any) -> None:
    report = add_command(commands, "report", help="write the lab report: tables, figures, submissions (Markdown + HTML)")
    report.add_argument("runs", nargs="*", type=run_id_arg, metavar="RUN", help="runs to report on (default: the runs marked in the app, else the best config per model, all its seeds)")
    report.add_argument("--tag", help="the runs with this tag")
    report.add_argument("--sweep", type=record_id, metavar="S", help="the runs of this sweep")
    report.add_argument("-o", "--output", metavar="DIR", help="output folder (default: WORKSPACE/reports/YYYYMMDD-HHMMSS)")
    report.add_argument("--cam", action="store_true",
                        help="first draw the Grad-CAM maps of the mistakes gallery where they are not drawn yet (cached per checkpoint)")
    report.add_argument("--evaluate", action="store_true",
                        help="first evaluate the best checkpoint on the validation set where no predictions are recorded (ROC curves)")
    add_selection(report)
    add_json(report)
    report.set_defaults(handler=cmd_report)

    submissions = add_command(commands, "submissions", help="list recorded submissions; `submissions score ID VALUE` records a score")
    add_json(submissions)
    actions = submissions.add_subparsers(dest="submissions_command", parser_class=Parser, metavar="COMMAND")
    score = actions.add_parser("score", parents=[GLOBAL], help="record a submission's leaderboard score")
    score.add_argument("submission", type=record_id, metavar="ID")
    score.add_argument("value", type=score_value, metavar="VALUE", help="the score, between 0 and 1 (e.g. 0.96907)")
    submissions.set_defaults(handler=cmd_submissions)


def score_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a score (a number between 0 and 1)") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1")
    return value


# -- report -----------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from leuktui.report.build import build_report
    from leuktui.report.data import select_runs

    workspace, db = open_workspace(args, write=args.evaluate or args.cam)  # those record predictions and draw maps
    if not args.output and not workspace.writable():
        raise UserError(f"{workspace.home}: the workspace is read-only here, so the report cannot go in its reports/ folder; "
                        "give -o DIR")
    marked = workspace.marked_runs()
    runs = select_runs(db, args.runs, tag=args.tag, sweep=args.sweep, marked=marked)
    by_default = not args.runs and args.tag is None and args.sweep is None
    why = "" if not by_default else (" (the runs marked in the app; `u` there unmarks them)" if any(run.id in marked for run in runs)
                                     else " (each model's best config, with all its seeds)")
    say = (lambda _line: None) if args.json else print
    if args.evaluate:
        evaluate_for_roc(db, workspace, runs, say=say)
    if args.cam:
        draw_gallery_maps(db, workspace, runs, say=say)
    folder = Path(args.output) if args.output else workspace.home / "reports" / time.strftime("%Y%m%d-%H%M%S")
    if args.json or not sys.stdout.isatty():  # the progress bar on a terminal only: to a pipe it would leave a blank line
        result = build_report(db, workspace, runs, folder, selection=args.select, last_k=args.last_k)
    else:
        from rich.progress import BarColumn, Progress, TextColumn

        with Progress(TextColumn("{task.description}", markup=False), BarColumn(), console=console(), transient=True) as progress:
            task = progress.add_task("report", total=None)
            result = build_report(db, workspace, runs, folder, selection=args.select, last_k=args.last_k,
                                  progress=lambda done, total, what: progress.update(task, description=what, completed=done, total=total))
    if args.json:
        print_json({"folder": str(result.folder), "runs": result.run_ids, "figures": result.figures, "tables": result.tables,
                    "notes": result.notes, "seconds": round(result.timings["total"], 2)})
        return 0
    print(f"wrote the report on run{'s' if len(runs) > 1 else ''} {', '.join(map(str, result.run_ids))}{why} to {visible(result.folder)}")
    print(f"  report.html (self-contained), report.md, {len(result.figures)} figures (PNG + SVG), {len(result.tables)} tables (CSV)")
    for note in result.notes:
        print(f"  note: {note}")
    return 0


# -- submissions ------------------------------------------------------------------------------------


def submission_to_dict(submission: Submission) -> dict[str, Any]:
    return {
        name: getattr(submission, name)
        for name in ("id", "run_ids", "checkpoint", "tta", "test_csv", "path", "rows", "created_at", "score", "score_source", "scored_at", "notes")
    }


def cmd_submissions(args: argparse.Namespace) -> int:
    _, db = open_workspace(args, write=args.submissions_command == "score")
    if args.submissions_command == "score":
        submission = db.score_submission(args.submission, args.value, "leaderboard")
        print(f"submission {submission.id} ({Path(submission.path).name}): leaderboard score {submission.score:.5f} recorded")
        return 0
    submissions = db.submissions()
    if args.json:
        print_json([submission_to_dict(s) for s in submissions])
        return 0
    if not submissions:
        print("no submissions yet: `leuktui export RUN` writes and records one")
        return 0
    from rich.table import Table

    from leuktui.formatting import age

    models = {run.id: run.model for run in db.runs_by_id(sorted({i for s in submissions for i in s.run_ids}))}
    table = Table(box=None, header_style="bold")
    for column in ("id", "runs", "model", "checkpoint", "tta", "test CSV", "rows", "score", "scored by", "age", "file"):
        table.add_column(column, justify="right" if column in ("id", "rows", "score") else "left")
    for s in submissions:
        names = [models.get(run_id, "?") for run_id in s.run_ids]
        table.add_row(
            str(s.id), ",".join(map(str, s.run_ids)), text(names[0] if len(names) == 1 else "ensemble"), s.checkpoint, s.tta,
            text(Path(s.test_csv).name if s.test_csv else "-"), str(s.rows), "-" if s.score is None else f"{s.score:.5f}", s.score_source or "-", age(s.created_at), text(s.path),
        )
    console().print(table)
    return 0


def recorded_database(home: str | None, *, write: bool = False) -> Database | None:
    """The workspace's database if there is one; a workspace that does not exist is not created
    (and one named by ``--home`` that does not exist is refused, as by every command). A SQLite
    file this process cannot write is read as it is, and not there to be written (``write``)."""
    if home == "":  # `--home "$LAB"`, $LAB unset: not the default workspace
        raise UsageError("--home: empty; give the workspace folder")
    workspace = Workspace.resolve(home)
    if home and not workspace.home.exists():
        raise UserError(f"{workspace.home}: no such workspace (--home {home}); `leuktui queue` or `leuktui run` makes one")
    if not os.environ.get("LEUKTUI_DB") and not (workspace.home / DB_FILE).is_file():
        return None
    fixed = unwritable_sqlite(workspace.db_url)
    if fixed is not None and write:
        return None
    return Database(workspace.db_url, read_only=fixed is not None)


def refuse_submission_as_key(home: str | None, key: str) -> None:
    """A recorded submission is not an answer key: scoring against one would record a score it
    never earned."""
    db = recorded_database(home)
    if db is None:
        return
    try:
        path = Path(key).expanduser()
        submission = db.submission_for_path(str(path.parent.resolve() / path.name)) or db.submission_for_path(str(path.resolve()))
    finally:
        db.close()
    if submission is not None:
        raise UserError(f"{key}: is recorded submission {submission.id}, not an answer key")


def record_key_score(home: str | None, submission_file: str, metrics: dict[str, Any]) -> int | None:
    """Attach the answer key's score to the recorded submission written to ``submission_file``
    (the newest one there); returns its id. A workspace that does not exist is not created, nor a
    database this process cannot write written: the score is then printed only."""
    db = recorded_database(home, write=True)
    if db is None:
        return None
    try:
        path = Path(submission_file).expanduser()
        submission = db.submission_for_path(str(path.parent.resolve() / path.name))
        if submission is None or metrics.get(SCORE_METRIC) is None:
            return None
        db.score_submission(submission.id, float(metrics[SCORE_METRIC]), "key")
        return submission.id
    finally:
        db.close()
