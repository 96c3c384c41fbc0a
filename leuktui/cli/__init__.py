"""The ``leuktui`` command line; with no command it opens the terminal app.

One module per group of commands (``runs``, ``queue``, ``studies``, ``scheduler``, ``evaluation``,
``data``, ``report``), what they share in ``common``. Commands that neither train nor predict never import
torch: the heavy modules are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from collections.abc import Sequence

from sqlalchemy.exc import DBAPIError

from db import Workspace
from db.errors import UserError
from db.session import database_error, is_unusable_database
from db.workspace import apply_file_mode
from engine.config import ConfigError
from engine.files import ended_by_signals
from leuktui.cli import data, evaluation, queue, report, results, runs, scheduler, studies
from leuktui.cli.common import (
    PROG,
    Parser,
    UsageError,
    ask,
    flag_name,
    missing_database,
    refuse_unwritable_database,
    workspace_of,
)

# Errors of the machine a user can fix: a full disk or quota, a read-only file system.
USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG}

__all__ = ["PROG", "UsageError", "build_parser", "main"]


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("leuktui")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Experiment manager for leukemia cell classification (C-NMC 2019).")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}")
    parser.add_argument("--home", help="workspace folder (default: $LEUKTUI_HOME or ./leuktui-home)")
    parser.add_argument("--json", dest="global_json", action="store_true",
                        help="print JSON for scripts (the commands that can; also after the command)")
    parser.add_argument("--no-scheduler", action="store_true", help="open the app without starting the scheduler")
    commands = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    for group in (runs, queue, studies, evaluation, results, data, report):
        group.add_commands(commands)
    words = sys.argv[1:] if argv is None else argv
    scheduler.add_commands(commands, backends="scheduler" in words)
    return parser


def open_app(args: argparse.Namespace) -> int:
    """``leuktui`` with no command: the terminal app on the workspace; a folder that does not
    exist yet is made a workspace only once the user says so."""
    refuse_unwritable_database()
    if args.home == "":  # `leuktui --home "$LAB"`, $LAB unset: not the default workspace
        raise UsageError("--home: empty; give the workspace folder")
    workspace = Workspace.resolve(args.home)
    if not workspace.home.exists() and not ask(f"{workspace.home} does not exist; make a new workspace there?"):
        raise UserError(f"{workspace.home}: no such workspace; nothing was created")
    if workspace.home.is_dir() and missing_database(workspace) is not None and any(workspace.home.iterdir()) and \
            not ask(f"{workspace.home} holds files but no leuktui workspace; make one there?"):  # `--home ~`, a dataset
        raise UserError(f"{workspace.home}: not a leuktui workspace; nothing was created")
    from leuktui.terminal_images import Asking

    asking = Asking()  # what the terminal draws images with, asked while the app loads
    try:
        workspace = workspace_of(args, create=True)
        from leuktui.app import LeuktuiApp

        app = LeuktuiApp(workspace, start_scheduler=not args.no_scheduler)
    finally:
        asking.wait()
    app.run()
    # The process ends now. Python's last collection would walk the app's whole heap first (a
    # second and more, after the terminal is already given back): what is left is frozen instead.
    import gc

    gc.freeze()
    return 0


def fail(message: str, status: int) -> int:
    from leuktui.formatting import visible

    print(f"{PROG}: error: {visible(message)}", file=sys.stderr)  # errors quote names and paths: as text
    return status


# Paths given empty (`-o "$OUT"` with $OUT unset) are refused, as `--home ""` is: never taken for
# the default, nor for this folder.
PATH_ARGUMENTS = {"output": "-o", "dir": "DIR", "key": "--key", "file": "FILE", "data_dir": "--data-dir",
                  "test_csv": "--test-csv", "pretrained": "--pretrained"}


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser(argv).parse_args(argv)
    empty = next((flag for dest, flag in PATH_ARGUMENTS.items() if getattr(args, dest, None) == ""), None)
    if empty is not None:
        raise UsageError(f"{empty}: empty; give a path")
    if args.global_json:
        if not hasattr(args, "json"):
            command = " ".join(filter(None, (PROG, args.command)))
            raise UsageError(f"--json: `{command}` has no JSON output")
        args.json = True
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = None
    try:
        apply_file_mode()
        args = parse(argv)
        if args.command is None:
            return open_app(args)
        if getattr(args, "trains_here", False):  # `run` and `resume` end their runs as their own code says
            return args.handler(args)
        with ended_by_signals():  # a kill or a closed SSH session leaves no half-written file or folder
            return args.handler(args)
    except UsageError as exc:
        return fail(str(exc), 2)
    except ConfigError as exc:
        return fail(f"{flag_name(exc.field)}: {exc.message}", 2)
    except UserError as exc:  # NotFound, WorkspaceError, DatabaseError, DatasetError, ... are user errors
        return fail(str(exc), 1)
    except KeyboardInterrupt:  # Ctrl-C where a command has nothing of its own to say: one line, not a traceback
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`| head`): what it wanted it has; the rest goes nowhere
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush has nowhere to fail
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

