"""What every command of the ``leuktui`` command line shares: the parser's rules, the global
options, argument types, the config flags made from ``RunConfig``, opening the workspace, and
the console that prints tables (never cut to 80 columns when the output is not a terminal).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from db import Database, Workspace
from db.dialect import check_url, sqlite_path
from db.errors import UserError
from db.vocabulary import METRICS
from db.workspace import READERS, can_write_file
from engine.config import ConfigError, RunConfig

PROG = "leuktui"
MAX_ID = 2**31 - 1  # ids are INTEGER columns: 32 bits on PostgreSQL


class UsageError(UserError):
    """A command-line mistake; printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but usage mistakes are one line with the program's name and exit status 2, and
    name the flag as the config's errors do (``--tta: 'seven' is not one of ...``)."""

    def error(self, message: str):
        raise UsageError(re.sub(r"^argument ([^/:\s]+)(/[^:]+)?: ", r"\1: ", message))


def global_options() -> argparse.ArgumentParser:
    """``--home``, accepted after the command as well as before it (a parent of every command).

    Its default is left unset here, so a ``--home`` given before the command is not overwritten."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--home", default=argparse.SUPPRESS,
                        help="workspace folder (default: $LEUKTUI_HOME or ./leuktui-home)")
    return parent


GLOBAL = global_options()


def add_command(commands: Any, name: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand that takes the global options too."""
    return commands.add_parser(name, parents=[GLOBAL], **kwargs)


def add_selection(parser: argparse.ArgumentParser) -> None:
    """``--select best|last`` and ``--last-k K``: which number of each run a table uses."""
    from leuktui.results import LAST_K, SELECTION_HELP, SELECTIONS

    parser.add_argument("--select", default="best", choices=SELECTIONS, help=SELECTION_HELP)
    parser.add_argument("--last-k", type=positive_int, default=LAST_K, metavar="K", help=f"epochs the last-k mean takes (default {LAST_K})")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", default=False, help="print JSON for scripts")


# -- argument types ---------------------------------------------------------------------------------


def run_id_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (a number)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (a positive number)")
    if value > MAX_ID:
        raise argparse.ArgumentTypeError(f"{text!r} is not a run id (ids are below {MAX_ID + 1})")
    return value


def record_id(text: str) -> int:
    """A sweep's or a submission's id: a positive number the database's integer column can hold."""
    value = positive_int(text, most=None)
    if value > MAX_ID:
        raise argparse.ArgumentTypeError(f"{text!r} is not an id (ids are below {MAX_ID + 1})")
    return value


MAX_COUNT = 1_000_000


def positive_int(text: str, most: int | None = MAX_COUNT) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    if most is not None and value > most:  # a count or a size: beyond this it is a slip (ten million images, a million epochs of last-k)
        raise argparse.ArgumentTypeError(f"{text!r} must be at most {most:,}")
    return value


def seconds_arg(text: str) -> int:
    """A number of seconds (an idle timeout): any positive whole number the database can hold."""
    return positive_int(text, most=MAX_ID)


def seed_int(text: str) -> int:
    """A random seed: a whole number from 0 to 2**32 - 1 (what numpy and torch take)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and {2**32 - 1}")
    return value


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
        flags = [flag_name(f.name), *(flag_name(alias) for alias in f.metadata.get("aliases", ()))]
        if isinstance(default, bool):
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=f"{help_text} (default: {'on' if default else 'off'})")
        else:  # a help that says its default itself (a None's meaning) keeps its own words
            group.add_argument(*flags, dest=f.name, metavar=f.name.upper(), default=None,
                               help=help_text if "(default:" in help_text else f"{help_text} (default: {default})")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    values = {name: getattr(args, name) for name in RunConfig.field_names() if getattr(args, name, None) is not None}
    try:
        return RunConfig.from_dict(values)
    except ConfigError as exc:
        raise UsageError(f"{flag_name(exc.field)}: {exc.message}") from None


# -- the workspace ------------------------------------------------------------------------------------


def workspace_of(args: argparse.Namespace, *, create: bool = False, write: bool = True, database: bool = True) -> Workspace:
    """The workspace the command works on. One that does not exist is made only by commands that
    create work (``create``); for the others it is refused, so a mistyped ``--home`` is never
    taken for a new, empty workspace. A command that only reads (``write=False``) takes a folder
    it cannot write as it is (a read-only file system, a workspace shared to read). A folder with
    no workspace's database in it is refused too, unless the command does not read it
    (``database=False``: the scheduler's pid and lock files)."""
    workspace = workspace_named(args)
    exists = workspace.home.exists()
    if not create and not exists:
        given = getattr(args, "home", None) or os.environ.get("LEUKTUI_HOME")
        where = f"--home {given}" if getattr(args, "home", None) else (f"$LEUKTUI_HOME={given}" if given else "the default workspace")
        raise UserError(f"{workspace.home}: no such workspace ({where}); `leuktui queue` or `leuktui run` makes one")
    path = missing_database(workspace)
    if database and not create and path is not None:  # a folder, but no workspace's database in it
        if path.parent != workspace.home:  # $LEUKTUI_DB names a file elsewhere
            raise UserError(f"{path}: no such database file ($LEUKTUI_DB)")
        raise UserError(f"{workspace.home}: not a leuktui workspace (no {path.name} in it); "
                        "`leuktui queue` or `leuktui run` makes one")
    if not write and workspace.home.is_dir():
        return workspace
    return workspace.ensure()


def workspace_named(args: argparse.Namespace) -> Workspace:
    """The workspace ``--home`` names, made or touched in no way: for the checks a command that
    makes one asks first, so that a refused command leaves no workspace behind. Refused: an empty
    ``--home``, a name too long for the file system, and something there that is not a folder."""
    if getattr(args, "home", None) == "":  # `--home "$LAB"` with $LAB unset: not the default workspace
        raise UsageError("--home: empty; give the workspace folder")
    workspace = Workspace.resolve(getattr(args, "home", None))
    try:
        exists = workspace.home.exists()
    except OSError as exc:  # a name longer than the file system allows
        shown = str(workspace.home)
        raise UserError(f"{shown[:80]}… ({len(shown)} characters): {exc.strerror}, so not a workspace") from None
    if exists and not workspace.home.is_dir():
        raise UserError(f"{workspace.home}: not a folder, so not a workspace")
    return workspace


def open_workspace_checked(args: argparse.Namespace, check) -> tuple[Workspace, Database]:
    """The workspace of a command that may make it, with ``check(workspace)`` (what can refuse the
    command's runs) asked first where the workspace is not there yet, so a refused command makes
    none; an existing one is opened first, its own refusals (read-only, not a workspace) said first."""
    refuse_unwritable_database()
    named = workspace_named(args)
    if named.home.is_dir() and missing_database(named) is None:  # a workspace already: its own refusals first
        workspace, db = open_workspace(args, create=True)
        check(workspace)
        return workspace, db
    check(named)
    return open_workspace(args, create=True)


def missing_database(workspace: Workspace) -> Path | None:
    """The SQLite file ``workspace`` reads where it is not there (None for a server's database, or
    one that is); a malformed ``$LEUKTUI_DB`` is refused in one line."""
    check_url(workspace.db_url)
    path = sqlite_path(workspace.db_url)
    return path if path is not None and not path.exists() else None


def open_workspace(args: argparse.Namespace, *, create: bool = False, write: bool = True) -> tuple[Workspace, Database]:
    """The workspace and its database; ``write=False``: the command only reads, and a workspace
    (or a ``$LEUKTUI_DB`` SQLite file) it cannot write is read without writing anything; a command
    that would write is refused in one line first."""
    if write:
        refuse_unwritable_database()
    workspace = workspace_of(args, create=create, write=write)
    read_only = not write and (not workspace.writable() or unwritable_sqlite(workspace.db_url) is not None)
    return workspace, Database(workspace.db_url, read_only=read_only)


def refuse_unwritable_database() -> None:
    """A ``$LEUKTUI_DB`` SQLite file this process cannot write, refused in one line before a
    command that would write to it starts (and before a new home is made for nothing)."""
    named = os.environ.get("LEUKTUI_DB")
    if named and (fixed := unwritable_sqlite(named)) is not None:
        raise UserError(f"{fixed}: the database file cannot be written here; {READERS} read it as it is")


def unwritable_sqlite(url: str) -> Path | None:
    """The SQLite file ``url`` names where this process cannot write it or the folder its -wal
    goes in (a read-only file system, a file shared to read); None for a server's database, or
    one that can be written (or is not there to say). A malformed URL is refused in one line."""
    check_url(url)
    path = sqlite_path(url)
    if path is None or not path.parent.is_dir() or can_write_file(path):
        return None
    return path


# -- output -------------------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def console():
    """A Rich console on stdout; to a pipe or a file it is as wide as its lines need, so no table
    is wrapped or cut (a terminal keeps its own width)."""
    from rich.console import Console as RichConsole

    class Console(RichConsole):
        def on_broken_pipe(self) -> None:  # `leuktui show 1 | head`: main's one way out (status 0), not Rich's SystemExit(1)
            self.quiet = True
            raise BrokenPipeError

    # No markup anywhere: every string printed may quote a user's (a name, a path, an error).
    if sys.stdout.isatty():
        return Console(markup=False)
    return Console(width=100_000, no_color=True, highlight=False, markup=False)


def text(value: Any, *, newlines: bool = False) -> Any:
    """A user's string (a name, a tag, a path) for Rich: shown as it is, never as markup, its
    control characters visible (``formatting.visible``)."""
    from rich.text import Text

    from leuktui.formatting import visible

    return Text(visible(value, newlines=newlines))


def metrics_line(metrics: dict[str, Any]) -> str:
    """Every registered metric of a ``{key: value}`` dict, as one line."""
    return "  ".join(f"{m.label} {m.format(metrics.get(m.key))}" for m in METRICS if m.key in metrics)


def phase_printer():
    """``on_phase(what, done, total)`` for a long evaluation or export on a terminal: each new phase
    as a line on stderr ("decoding images (600)…"), so a command that takes half a minute is never
    silent; stdout keeps only the result (JSON under ``--json``). To a pipe or a file it says
    nothing (None), so a script's stderr holds only an error's one line."""
    if not sys.stderr.isatty():
        return None
    said: set[str] = set()

    def on_phase(what: str, done: int, total: int) -> None:
        if what not in said:
            said.add(what)
            print(f"{what}{f' ({total})' if total > 1 else ''}…", file=sys.stderr, flush=True)

    return on_phase


def run_name(text: str) -> str:
    """``--name``: any text a line can show, at most ``MAX_NAME`` characters (a table's column)."""
    from runner.control import check_labels

    try:
        check_labels(text, ())
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text


def check_tags(tags: list[str]) -> list[str]:
    """``--tag`` values as the app lists and edits them (comma-separated, one line each): none
    empty, none with a comma or a control character, none longer than a table shows; a repeated one once."""
    from runner.control import check_labels

    for tag in tags:
        if not tag.strip():
            raise UsageError("--tag: a tag is not empty")
        try:
            check_labels(None, [tag])
        except ConfigError as exc:
            raise UsageError(f"--tag: {exc.message}") from None
        if "," in tag:
            raise UsageError(f"--tag: {tag!r} has a comma (tags are listed comma-separated); give each its own --tag")
        if not tag.isprintable():
            raise UsageError(f"--tag: {tag!r} has a control character")
    return list(dict.fromkeys(tag.strip() for tag in tags))


def ensure_scheduler(workspace: Workspace, no_start: bool, *, json: bool = False) -> None:
    """Start the scheduler unless ``no_start`` and say so: on stderr where stdout is ``--json``'s."""
    if no_start:
        return
    from runner.daemon import LOG_FILE, start_detached

    pid = start_detached(workspace)
    print(f"scheduler running (pid {pid}); log: {workspace.home / LOG_FILE}", file=sys.stderr if json else sys.stdout)


def ask(question: str) -> bool:
    """A yes/no question on the terminal; without one, no."""
    from leuktui.formatting import visible

    if not sys.stdin.isatty():
        return False
    try:
        return input(f"{visible(question)} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False
