"""The scheduler started, stopped and killed over and over while the app watches and the command
line queues, cancels and holds: no write is lost, no error reaches the user, and every run ends
in a state the table allows."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

from tui.conftest import make_app, wait_until

from conftest import TINY_NET, run_cli, tiny_config, wait_for
from db import Database
from db.vocabulary import RUN_STATUSES
from engine.synth import make_dataset
from runner import control, daemon
from runner.options import Options


async def test_the_scheduler_comes_and_goes_while_the_app_and_the_cli_write(home, tmp_path):
    data = make_dataset(tmp_path / "cells", n_train=16, n_valid=8, n_test=4, size=16, seed=9)
    base = tiny_config(data, fast=True, epochs=1, model=TINY_NET)
    writes_done = threading.Event()
    errors: list[BaseException] = []
    queued: list[int] = []

    def cli_writes() -> None:
        db = Database(home.db_url)
        rng = random.Random(1)
        try:
            for i in range(5):
                (run,), _ = control.queue_runs(db, base.replace(seed=i), force=True)
                queued.append(run.id)
                if i % 3 == 1:
                    control.cancel(db, run.id)
                elif i % 5 == 2:
                    try:
                        control.hold(db, run.id)
                        control.release(db, run.id)
                    except control.QueueError:
                        pass  # already started by the scheduler: a one-line refusal, as a user would get
                time.sleep(rng.uniform(0.0, 0.3))
            run_cli("queue", "--data-dir", str(data), "--image-size", "16", "--epochs", "1", "--amp", "off", "--model", TINY_NET, "--no-start",
                    "--force", home=home.home)
        except BaseException as exc:
            errors.append(exc)
        finally:
            writes_done.set()

    app = make_app(home)
    async with app.run_test(size=(120, 40)) as pilot:
        writer = threading.Thread(target=cli_writes)
        writer.start()
        for round_ in range(2):
            pid = daemon.start_detached(home, Options(idle_timeout=30))
            await pilot.pause(1.5)
            if round_ % 2:
                os.kill(pid, signal.SIGKILL)
            else:
                daemon.stop(home)
            await pilot.pause(0.3)
        writer.join(timeout=120)
        assert not errors, errors
        db = Database(home.db_url)
        assert len(db.list_runs()) == 6, "no queued run lost"
        daemon.start_detached(home, Options(idle_timeout=30))
        wait_for(lambda: all(run.status in ("completed", "cancelled") for run in db.list_runs()), 300, "every run finished")
        await wait_until(pilot, lambda: len(app.runs) == 6 and all(r.status in ("completed", "cancelled") for r in app.runs.values()),
                         timeout=15, message="the app shows every run's end")
        assert not [n for n in app._notifications if n.severity == "error"], [n.message for n in app._notifications]
    statuses = {run.status for run in db.list_runs()}
    assert statuses <= set(RUN_STATUSES) and statuses <= {"completed", "cancelled"}
    assert {run.id for run in db.list_runs() if run.status == "cancelled"} <= set(queued), "only what was cancelled"
    for run in db.list_runs(statuses=["completed"]):
        assert [e.epoch for e in db.epochs(run.id)] == [1]
