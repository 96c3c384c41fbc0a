"""Every screen of the app shows the same picture whether its workspace's database is SQLite or
PostgreSQL: the seeded workspace is rendered on each and the screenshots compared."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import fixed_folders
from db import Workspace
from tui.conftest import make_app
from tui.seed import seed_workspace
from tui.test_snapshots import then

# One path for both databases: the export dialog shows the workspace's paths.
HOME = Path("/tmp/leuktui-postgres-screens/home")
# That one folder: the tests here run one after another, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("postgres-screens")


@pytest.fixture(scope="module", autouse=True)
def one_suite_at_a_time():
    with fixed_folders(HOME.parent):
        yield

SCREENS = {
    "runs": dict(),
    "run detail": dict(keys=("enter",), cursor_run=1, settle=1.0),
    "confusion matrix": dict(keys=("enter", "right_square_bracket"), cursor_run=1, settle=1.0),
    "compare": dict(keys=("space", "space", "c"), cursor_run=2,
                    until=lambda app: app.screen.query_one("#compare-metrics").row_count == 2),
    "ablation": dict(keys=("a",), cursor_run=1, until=lambda app: app.screen.pivot is not None),
    "queue": dict(keys=("w",), settle=1.5, until=lambda app: app.screen.query_one("#queue").row_count > 0),
    "export dialog": dict(keys=("e",), cursor_run=1),
    "help": dict(keys=("question_mark",)),
}


async def screenshot(database_url: str | None, monkeypatch, screen: dict) -> str:
    shutil.rmtree(HOME.parent, ignore_errors=True)
    if database_url:
        monkeypatch.setenv("LEUKTUI_DB", database_url)
    else:
        monkeypatch.delenv("LEUKTUI_DB", raising=False)
    workspace = Workspace(HOME).ensure()
    seed_workspace(workspace).close()
    assert (HOME / "leuktui.db").exists() == (database_url is None), "the seed went to the database under test"
    app = make_app(workspace)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            steps = then(app, *screen.get("keys", ()), cursor_run=screen.get("cursor_run"), settle=screen.get("settle", 0.6),
                         until=screen.get("until"))
            await steps(pilot)
            picture = app.export_screenshot()
    finally:
        shutil.rmtree(HOME.parent, ignore_errors=True)
    return re.sub(r"terminal-\d+", "terminal", picture)


@pytest.mark.parametrize("name", list(SCREENS))
async def test_each_screen_is_the_same_on_postgresql_as_on_sqlite(name, pg_url, monkeypatch):
    on_sqlite = await screenshot(None, monkeypatch, SCREENS[name])
    on_postgresql = await screenshot(pg_url, monkeypatch, SCREENS[name])
    assert "resnet" in on_sqlite, "the screen shows the seeded runs"
    assert on_postgresql == on_sqlite
