from __future__ import annotations

import pytest

from db import Workspace
from leuktui.app import LeuktuiApp
from tui.seed import NOW, seed_workspace


def fixed_devices():
    from rich.text import Text

    return Text("CPU ████░░░░░░  40%   RAM ███░░░░░░░ 7.0/24 GiB")


def make_app(workspace: Workspace, **kwargs) -> LeuktuiApp:
    return LeuktuiApp(workspace, start_scheduler=False, clock=lambda: NOW, poll_seconds=0.1, device_reader=fixed_devices, **kwargs)


@pytest.fixture
def seeded(tmp_path) -> Workspace:
    workspace = Workspace(tmp_path / "home").ensure()
    seed_workspace(workspace).close()
    return workspace


def select_run(app: LeuktuiApp, run_id: int):
    """The runs table with its cursor on run ``run_id``, as the arrow keys would leave it."""
    table = app.screen.query_one("#runs")
    table.move_cursor(row=table.get_row_index(str(run_id)))
    return table


async def wait_until(pilot, predicate, timeout: float = 10.0, message: str = "condition") -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {message}")
