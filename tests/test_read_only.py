"""A workspace this process cannot write (a read-only file system here: a bind mount of it, read
only): the commands that only read show it, and write nothing into it, also while a scheduler works
in it elsewhere; a command that would change it says so in one line."""

from __future__ import annotations

import json
import subprocess

import pytest
from tui.seed import seed_workspace

from conftest import cli, run_cli, wait_for
from db import Database, Workspace
from runner import daemon
from runner.options import Options


@pytest.fixture
def view(tmp_path):
    """``(workspace, view)``: a seeded workspace, and the same folder mounted read-only elsewhere."""
    workspace = Workspace(tmp_path / "home").ensure()
    seed_workspace(workspace).close()
    mounted = tmp_path / "view"
    mounted.mkdir()
    subprocess.run(["mount", "--bind", str(workspace.home), str(mounted)], check=True, capture_output=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mounted)], check=True, capture_output=True)
        yield workspace, mounted
    finally:
        subprocess.run(["umount", "-l", str(mounted)], check=False, capture_output=True)


def tree(folder):
    """Every file and folder under ``folder`` with its size and modification time."""
    return {str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns) for path in sorted(folder.rglob("*"))}


def test_the_reading_commands_read_a_read_only_workspace_and_write_nothing(view, tmp_path):
    workspace, mounted = view
    before = tree(workspace.home)
    assert not (workspace.home / "leuktui.db-wal").exists()  # nobody has it open: it is read as it is (immutable)
    listed = json.loads(cli("ls", "--json", home=mounted).stdout)
    assert [r["id"] for r in listed] == list(range(9, 0, -1))
    assert json.loads(cli("show", "1", "--json", home=mounted).stdout)["name"] == "resnet18"
    assert json.loads(cli("queue", "ls", "--json", home=mounted).stdout)["scheduler_pid"] is None
    assert "resnet152" in cli("ablation", "--sweep", "1", "--cols", "hist_eq", home=mounted).stdout
    cli("submissions", home=mounted)
    assert "scheduler not running" in cli("scheduler", "status", home=mounted).stdout
    compared = cli("compare", "1", "2", home=mounted, check=False)  # the seeded runs have no predictions: it says so, reading
    assert compared.returncode == 1 and "no recorded validation predictions" in compared.stderr
    report = tmp_path / "report"
    assert "wrote the report" in cli("report", "1", "2", "-o", str(report), home=mounted).stdout
    assert (report / "report.html").is_file()
    assert tree(workspace.home) == before, "nothing in the workspace was written"

    # What would change it is refused in one line that names the folder and what can read it.
    for args in (("cancel", "7"), ("delete", "9", "--yes"), ("queue", "--data-dir", str(tmp_path), "--no-start"), ("export", "1")):
        result = cli(*args, home=mounted, check=False)
        (line,) = result.stderr.strip().splitlines()
        assert result.returncode == 1 and line == (f"leuktui: error: {mounted}: workspace folder is not writable (Read-only file "
                                                   "system); ls, show, queue ls, scheduler status, compare, ablation, submissions and report -o DIR read it as it is"), args
    for args in (("report", "1", "--evaluate", "-o", str(tmp_path / "r2")), ("submissions", "score", "1", "0.9")):
        result = cli(*args, home=mounted, check=False)
        assert result.returncode == 1 and "workspace folder is not writable" in result.stderr, args  # before any work
    refused = cli("report", "1", home=mounted, check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == (f"leuktui: error: {mounted}: the workspace is read-only here, so the "
                                                                   "report cannot go in its reports/ folder; give -o DIR")
    assert tree(workspace.home) == before


def test_a_read_only_view_reads_what_a_scheduler_writes_elsewhere_as_it_commits(view):
    workspace, mounted = view
    writer = Database(workspace.db_url)  # open where it can be written: the -wal the view reads through exists now
    writer.update_run(1, name="renamed-while-read")
    assert json.loads(cli("show", "1", "--json", home=mounted).stdout)["name"] == "renamed-while-read"
    pid = daemon.start_detached(workspace, Options(idle_timeout=30))
    try:
        queue = json.loads(cli("queue", "ls", "--json", home=mounted).stdout)
        assert queue["scheduler_pid"] == pid  # its lock asked without being created or written
        writer.update_run(2, name="renamed-again")
        assert {r["id"]: r["name"] for r in json.loads(cli("ls", "--json", home=mounted).stdout)}[2] == "renamed-again"
    finally:
        cli("scheduler", "stop", home=workspace.home)
        wait_for(lambda: daemon.running_pid(workspace) is None, 20, "the scheduler stopped")
        writer.close()


def test_a_database_named_by_leuktui_db_that_cannot_be_written_is_read_as_it_is(view, tmp_path):
    """``$LEUKTUI_DB`` names a SQLite file this process cannot write (a read-only view of another's)
    while its own home can be written: the reading commands read the file, and what would write to it
    is refused in one line naming the file, before any work."""
    workspace, mounted = view
    before = tree(workspace.home)
    database = mounted / "leuktui.db"
    env = {"LEUKTUI_DB": f"sqlite:///{database}"}
    home = Workspace(tmp_path / "mine").ensure().home
    assert [r["id"] for r in json.loads(cli("ls", "--json", home=home, env=env).stdout)] == list(range(9, 0, -1))
    assert json.loads(cli("show", "1", "--json", home=home, env=env).stdout)["name"] == "resnet18"
    assert "resnet152" in cli("ablation", "--sweep", "1", "--cols", "hist_eq", home=home, env=env).stdout
    for args in (("cancel", "7"), ("delete", "9", "--yes"), ("queue", "--data-dir", str(tmp_path), "--no-start"), ("export", "1"),
                 ("scheduler", "start"), ("--no-scheduler",)):  # the last: the app, in a process of its own
        result = (run_cli if args == ("--no-scheduler",) else cli)(*args, home=home, env=env, check=False)
        assert result.returncode == 1 and result.stderr.strip() == (
            f"leuktui: error: {database}: the database file cannot be written here; ls, show, queue ls, scheduler status, compare, "
            "ablation, submissions and report -o DIR read it as it is"), args
    # Scoring a file against a key needs no database: it reads this one (is the key a recorded
    # submission?) and prints the score, recording nothing.
    key, answers = tmp_path / "key.csv", tmp_path / "answers.csv"
    key.write_text("ID,label\na.bmp,1\nb.bmp,0\n")
    answers.write_text("ID,label\na.bmp,1\nb.bmp,1\n")
    scored = json.loads(cli("score", str(answers), "--key", str(key), "--json", home=home, env=env).stdout)
    assert scored["n"] == 2 and scored["acc"] == 0.5
    fresh = tmp_path / "not-made"  # a command that makes its home refuses before it makes one for nothing
    result = cli("queue", "--data-dir", str(tmp_path), "--no-start", home=fresh, env=env, check=False)
    assert result.returncode == 1 and "the database file cannot be written here" in result.stderr and not fresh.exists()
    assert tree(workspace.home) == before, "nothing in the database's folder was written"
    assert sorted(path.name for path in home.iterdir()) == [], "nor in the home"
