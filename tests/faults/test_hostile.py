"""Hostile strings: a user's name, tag, note or path reaches the terminal as text, never as markup
or control codes, in the command line and in the app; fuzzed with Hypothesis."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from textual.widgets import DataTable

from conftest import cli
from db import Database, Workspace, states
from leuktui.formatting import visible

HOSTILE = ["[/]", "[red]lost text[/]", "[bold", "\x1b]0;pwned\x07title", "two\nlines", "\x1b[31mred\x1b[0m", "tab\there", "\x9bcsi"]


def seed(workspace: Workspace, names: list[str]) -> list[int]:
    db = Database(workspace.db_url)
    ids = []
    for name in names:
        run = db.create_run(config={"epochs": 3, "eval_mode": "single", "data_dir": f"/data/{name}"}, config_hash="h",
                            model="resnet18", name=name, tags=[name], notes=name)
        db.add_epoch(run.id, 1, 3, {"val_acc": 0.5, "val_loss": 0.7}, best={"epoch": 1, "val_acc": 0.5})
        ids.append(run.id)
    states.move(db, ids[0], "running", phase=HOSTILE[0], device="cpu")
    db.close()
    return ids


def assert_clean(output: str) -> None:
    bad = [c for c in output if not c.isprintable() and c not in "\n"]
    assert bad == [], f"control characters reached the terminal: {bad!r}"


def test_the_command_line_prints_hostile_names_as_text(tmp_path):
    workspace = Workspace(tmp_path / "home").ensure()
    ids = seed(workspace, HOSTILE)
    listing = cli("ls", home=workspace.home).stdout
    assert_clean(listing)
    rows = listing.splitlines()
    assert len(rows) == 1 + len(HOSTILE), "one row a run: no name splits a row"
    for name in HOSTILE:
        assert visible(name) in listing, name
    queue = cli("queue", "ls", home=workspace.home).stdout
    assert_clean(queue)
    assert visible(HOSTILE[0]) in queue
    for run_id, name in zip(ids, HOSTILE, strict=True):
        shown = cli("show", str(run_id), home=workspace.home).stdout
        assert_clean(shown)
        assert visible(name) in shown and f"notes: {visible(name)}" in shown
    assert json.loads(cli("show", str(ids[1]), "--json", home=workspace.home).stdout)["name"] == HOSTILE[1], \
        "JSON keeps the string exactly"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_any_name_is_printed_as_text_and_in_one_row(tmp_path_factory, name):
    workspace = Workspace(tmp_path_factory.mktemp("fuzz") / "home").ensure()
    seed(workspace, [name, "other"])
    for args in (("ls",), ("show", "1"), ("queue", "ls")):
        result = cli(*args, home=workspace.home, check=False)
        assert result.returncode == 0, (args, result.stderr)
        assert_clean(result.stdout)
    assert len(cli("ls", home=workspace.home).stdout.splitlines()) == 3


@given(text=st.text(max_size=60))
def test_visible_leaves_no_control_character_and_keeps_printable_text(text):
    shown = visible(text)
    assert all(c.isprintable() for c in shown)
    if text.isprintable():
        assert shown == text
    assert visible(text + string.ascii_letters).endswith(string.ascii_letters)


async def test_the_app_shows_hostile_names_as_text(tmp_path):
    from tui.conftest import make_app, wait_until

    workspace = Workspace(tmp_path / "home").ensure()
    (workspace.home / "keymap.json").write_text(json.dumps({"[/]": "x", "[red]": "y"}))
    seed(workspace, HOSTILE)
    app = make_app(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.loaded, message="the runs")
        table = app.screen.query_one("#runs", DataTable)
        await wait_until(pilot, lambda: table.row_count == len(HOSTILE), message="every run listed")
        cells = {str(table.get_row_at(row)[2]) for row in range(table.row_count)}
        assert cells == {visible(name) for name in HOSTILE}
        for row in range(table.row_count):  # open each run: its head, config and evaluations render
            table.move_cursor(row=row)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.screen.id != "runs" and app.screen.__class__.__name__ == "RunDetailScreen",
                             message="the run screen")
            await pilot.pause()
            await pilot.press("escape")
            await wait_until(pilot, lambda: app.screen.query("#runs"), message="back on the runs")
        await pilot.press("t")  # the tags dialog quotes the name
        await pilot.pause()
        await pilot.press("escape")
        await pilot.press("space", "d")  # the confirmation quotes the ids
        await pilot.pause()
        await pilot.press("escape")
        await pilot.pause()
        assert app.is_running, "nothing crashed the app"


def test_a_new_run_never_trains_on_or_resumes_from_an_older_records_folder(tmp_path, tiny_data):
    home = tmp_path / "home"
    home.mkdir()
    for run_id, owner in ((1, "run 1 created 1700000000.0\n"), (2, None)):  # another record's, and one from before owners
        old = home / "runs" / str(run_id) / "checkpoints"
        old.mkdir(parents=True)
        (old / "last.pt").write_bytes(b"another run's checkpoint")
        if owner:
            (old.parent / "owner").write_text(owner)
    small = ["--data-dir", str(tiny_data), "--image-size", "16", "--batch-size", "16", "--epochs", "1", "--amp", "off"]
    for run_id in (1, 2):
        result = cli("run", *small, "--seed", str(run_id), home=home)
        assert result.stdout.strip().splitlines()[-1] == str(run_id)
        shown = json.loads(cli("show", str(run_id), "--json", home=home).stdout)
        assert shown["status"] == "completed" and [e["epoch"] for e in shown["epochs"]] == [1]
        (aside,) = (home / "runs").glob(f"{run_id}.orphan-*")
        assert (aside / "checkpoints" / "last.pt").read_bytes() == b"another run's checkpoint", "nothing lost"
        owner = (home / "runs" / str(run_id) / "owner").read_text().strip()
        assert owner == f"run {run_id} created {shown['created_at']!r}"
    # Its own folder is its own: a resume keeps it.
    cli("resume", "1", "--foreground", home=home, check=False)
    assert len(list((home / "runs").glob("1.orphan-*"))) == 1


def test_an_empty_database_file_is_refused_not_taken_for_a_new_one(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "leuktui.db").write_bytes(b"")
    for args in (("ls",), ("queue", "ls")):
        result = cli(*args, home=home, check=False)
        assert result.returncode == 1, args
        assert result.stderr.strip() == (f"leuktui: error: {home / 'leuktui.db'}: an empty file (0 bytes), not a leuktui "
                                         "database; restore it, or move it away to start anew"), args
    assert (home / "leuktui.db").stat().st_size == 0, "left as it was"


def test_a_run_config_from_the_database_never_makes_the_worker_import_code(tmp_path, tiny_data):
    """A lab member edits a shared database's row: ``model = "tempfile:mkdtemp"``. The worker of
    the user who runs it refuses; the function is never called."""
    import os
    import subprocess
    import sys

    from conftest import tiny_config

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    config = {**tiny_config(tiny_data, fast=True, epochs=1).to_dict(), "model": "tempfile:mkdtemp"}
    run = db.create_run(config=config, config_hash="edited", model="tempfile:mkdtemp", name="planted")
    assert states.move(db, run.id, "running")
    trap = tmp_path / "tmp"
    trap.mkdir()
    env = {**os.environ, "TMPDIR": str(trap), "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONSAFEPATH": "1"}
    env.pop("LEUKTUI_MODELS", None)
    worker = subprocess.run([sys.executable, "-m", "engine.worker", str(run.id), "--home", str(workspace.home)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert worker.returncode == 1
    assert "which you have not allowed" in db.get_run(run.id).error
    assert db.get_run(run.id).status == "failed"
    assert list(trap.iterdir()) == [], "mkdtemp never ran"
    queued = cli("queue", "--data-dir", str(tiny_data), "--model", "tempfile:mkdtemp", "--no-start", home=workspace.home,
                 check=False, env={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert queued.returncode == 2 and "--model: 'tempfile:mkdtemp' runs code from 'tempfile'" in queued.stderr
    db.close()
