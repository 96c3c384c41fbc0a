"""A backend from outside our packages: a small distribution on ``sys.path`` registers it under
the ``leuktui.backends`` entry-point group, and with no edit of ours the CLI offers it, the
scheduler runs a queued run to completion with it, and ``queue ls`` and the Queue screen show
its word on the job."""

from __future__ import annotations

import json
import textwrap

import pytest
from textual.widgets import DataTable

from conftest import run_cli, wait_for
from db import Database, Workspace
from runner import backends

PLUGIN = '''
"""A third party's leuktui backend: workers as subprocesses, started through env(1), each
with a job id of its own, and a label from its own option."""

import os
import signal
import subprocess
import sys
import time

from runner.backends.base import Backend, BackendOption, Handle


class SpoolBackend(Backend):
    name = "spool"
    summary = "workers through env(1), with spool job ids"
    options = (BackendOption("spool_label", "a label for the spool's jobs", metavar="LABEL"),)

    def start(self, run_id, device, env):
        log = self.workspace.log_path(run_id)
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = ["env", "SPOOLED=1", sys.executable, "-m", "engine.worker", str(run_id), "--home", str(self.workspace.home)]
        with log.open("ab") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       env={**os.environ, **env}, start_new_session=True)
        return Handle(run_id, process.pid, device, time.time(), process,
                      job_id=f"{self.settings.get('spool_label', 'nolabel')}-{run_id}", backend=self.name)

    def poll(self, handle):
        return handle.process.poll() if handle.process else -signal.SIGKILL

    def cancel(self, handle, *, force=False):
        if handle.process and handle.process.poll() is None:
            handle.process.send_signal(signal.SIGKILL if force else signal.SIGTERM)

    def describe(self, runs):
        return {run.id: f"spooled as {run.job_id}" for run in runs}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """A distribution ``leuktui-spool`` with its entry point, on this process's path and its children's."""
    site = tmp_path / "site"
    (site / "leuktui_spool").mkdir(parents=True)
    (site / "leuktui_spool" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "leuktui_spool-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: leuktui-spool\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[leuktui.backends]\nspool = leuktui_spool:SpoolBackend\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    backends._entry_points.cache_clear()
    backends.backend_class.cache_clear()
    yield site
    backends._entry_points.cache_clear()
    backends.backend_class.cache_clear()


def test_a_backend_registered_by_another_package_runs_a_queued_run(plugin, home, tiny_data):
    env = {"PYTHONPATH": str(plugin), "LEUKTUI_GPUS": ""}
    assert "spool" in run_cli("scheduler", "--help", home=home.home, env=env).stdout
    run_cli("scheduler", "start", "--backend", "spool", "--spool-label", "night", "--idle-timeout", "60", home=home.home, env=env)
    saved = json.loads((home.home / "scheduler.json").read_text())
    assert (saved["backend"], saved["spool_label"]) == ("spool", "night")
    assert "backend spool (spool_label night)" in run_cli("scheduler", "status", home=home.home, env=env).stdout

    small = ["--data-dir", str(tiny_data), "--image-size", "16", "--batch-size", "16", "--amp", "off", "--no-start"]
    # Without --no-start, queue finds the running scheduler and says so on stderr: stdout is --json's alone.
    queued = run_cli("queue", *[a for a in small if a != "--no-start"], "--epochs", "1", "--name", "spooled", "--json", home=home.home, env=env)
    done = json.loads(queued.stdout)["run_ids"][0]
    assert "scheduler running (pid" in queued.stderr
    db = Database(home.db_url)
    run = wait_for(lambda: (r := db.get_run(done)).status == "completed" and r, 240, "the spooled run to complete")
    assert (run.backend, run.job_id, run.epochs_done) == ("spool", f"night-{done}", 1)

    long = json.loads(run_cli("queue", *small, "--epochs", "500", "--name", "long", "--force", "--json",
                              home=home.home, env=env).stdout)["run_ids"][0]
    wait_for(lambda: db.get_run(long).status == "running" and db.get_run(long).job_id, 60, "the long run to start")
    listing = run_cli("queue", "ls", home=home.home, env=env).stdout
    assert f"spool spooled as night-{long}" in listing, listing
    assert json.loads(run_cli("queue", "ls", "--json", home=home.home, env=env).stdout)["runs"][0]["job"] == f"spooled as night-{long}"
    run_cli("cancel", str(long), home=home.home, env=env)
    wait_for(lambda: db.get_run(long).status == "cancelled", 60, "the spool backend to stop the run")
    db.close()


async def test_the_queue_screen_shows_a_plugin_backends_column(plugin, tmp_path):
    from tui.conftest import make_app, wait_until

    from leuktui.screens.queue import QueueScreen

    workspace = Workspace(tmp_path / "home").ensure()
    db = Database(workspace.db_url)
    run = db.create_run(config={"epochs": 3}, config_hash="h", model="resnet18", name="spooled")
    from db import states

    assert states.move(db, run.id, "running", backend="spool", job_id="night-1", device="cpu")
    db.close()
    app = make_app(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.loaded, message="the runs")
        await pilot.press("w")
        assert isinstance(app.screen, QueueScreen)
        table = app.screen.query_one("#queue", DataTable)

        def cells() -> str:
            return " ".join(str(cell) for row in range(table.row_count) for cell in table.get_row_at(row))

        await wait_until(pilot, lambda: "spool spooled as night-1" in cells(), message="the spool backend's job cell")
