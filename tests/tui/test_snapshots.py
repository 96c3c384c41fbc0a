"""Snapshots of every screen and dialog at 80x24 and 120x40 on the fixed, seeded workspace.

Regenerate after an intended change with: .venv/bin/python -m pytest tests/tui/test_snapshots.py --snapshot-update
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import fixed_folders
from db import Workspace
from tui.conftest import make_app, select_run, wait_until
from tui.seed import seed_workspace

# A fixed path: the export dialog shows the workspace's paths.
SNAPSHOT_HOME = Path("/tmp/leuktui-snapshots/home")
# That one folder: the tests here run one after another, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("snapshots")


@pytest.fixture(scope="module", autouse=True)
def one_suite_at_a_time():
    with fixed_folders(SNAPSHOT_HOME.parent):
        yield
SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def snapshot_app():
    shutil.rmtree(SNAPSHOT_HOME.parent, ignore_errors=True)
    workspace = Workspace(SNAPSHOT_HOME).ensure()
    seed_workspace(workspace).close()
    app = make_app(workspace)
    yield app
    shutil.rmtree(SNAPSHOT_HOME.parent, ignore_errors=True)


def loaded(app):
    async def wait(pilot):
        await wait_until(pilot, lambda: app.loaded and app.screen.query_one("#runs").row_count == 9)
    return wait


def then(app, *keys: str, cursor_run: int | None = None, settle: float = 0.6, until=None):
    """Press ``keys`` on the loaded app; with ``until``, wait for the screen's data first (a read
    in a thread), so the picture never depends on how busy the machine is."""
    async def steps(pilot):
        await loaded(app)(pilot)
        if cursor_run is not None:
            select_run(app, cursor_run)
        for key in keys:
            await pilot.press(key)
            await pilot.pause(0.1)
        if until is not None:
            await wait_until(pilot, lambda: until(app), timeout=20, message="the screen's data")
        for text_input in app.screen.query("Input"):
            text_input.cursor_blink = False  # a blinking cursor would make the picture random
        await pilot.pause(settle)
        await pilot.wait_for_scheduled_animations()
    return steps


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_runs_screen(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_run_detail(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "enter", cursor_run=1, settle=1.0))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_confusion_matrix(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size,
                        run_before=then(snapshot_app, "enter", "right_square_bracket", cursor_run=1, settle=1.0))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_new_run_form(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "n", cursor_run=1))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_compare(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "space", "space", "c", cursor_run=2,
                                                                                   until=lambda app: app.screen.query_one("#compare-metrics").row_count == 2
                                                                                   and app.screen.pairs is not None))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_ablation(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "a", cursor_run=1,
                                                                                   until=lambda app: app.screen.pivot is not None))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_queue(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "w", settle=1.5))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_export_dialog(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "e", cursor_run=1))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_help(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "question_mark"))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_new_sweep_form(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "g", cursor_run=1))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_tags_and_notes_dialog(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "t", cursor_run=1))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_delete_confirmation(snap_compare, snapshot_app, size):
    assert snap_compare(snapshot_app, terminal_size=size, run_before=then(snapshot_app, "space", "space", "d", cursor_run=2))
