"""Checkpoints: one saver owns their layout and best tracking; loading never runs a file's code;
a resume neither loses an epoch's row nor silently starts over."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from sqlalchemy import text

from conftest import tiny_config
from db import states
from engine.checkpoint import CheckpointError, CheckpointSaver, load_checkpoint
from engine.train import ResumeError, Trainer
from runner.control import create_run

STATE = {"model": {"w": torch.ones(2)}, "epoch": 1, "step": 3, "config": {"epochs": 2}}


def test_the_saver_tracks_the_best_epoch_by_its_metrics_direction(tmp_path):
    saver = CheckpointSaver(tmp_path / "checkpoints", "val_loss")
    assert saver.save({**STATE, "epoch": 1}, {"epoch": 1, "val_loss": 0.5}) is True
    assert saver.save({**STATE, "epoch": 2}, {"epoch": 2, "val_loss": 0.7}) is False
    assert saver.bad_epochs == 1
    assert load_checkpoint(saver.path("best"))["epoch"] == 1 and load_checkpoint(saver.path("last"))["epoch"] == 2
    assert saver.save({**STATE, "epoch": 3}, {"epoch": 3, "val_loss": 0.4}) is True
    assert os.path.samefile(saver.path("best"), saver.path("last")), "best is a link to the last of the best epoch"
    resumed = CheckpointSaver(tmp_path / "checkpoints", "val_loss")
    assert resumed.load("last")["epoch"] == 3 and resumed.best == {"epoch": 3, "val_loss": 0.4} and resumed.bad_epochs == 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "last.pt"], "no temporary files left"


class Planted:
    """An object whose unpickling would create a file: what a planted checkpoint could run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_a_checkpoint_that_would_run_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    planted = tmp_path / "last.pt"
    torch.save({**STATE, "extra": Planted(marker)}, planted)
    with pytest.raises(CheckpointError, match=f"{planted}: refused, it holds more than tensors and plain values"):
        load_checkpoint(planted)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_a_truncated_or_foreign_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "best.pt"
    if content is None:  # a real checkpoint cut short, as by a full disk
        torch.save(STATE, path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}: not a readable checkpoint"):
        load_checkpoint(path)


def test_an_epoch_row_lost_between_checkpoint_and_commit_is_written_on_resume(db, workspace, tiny_data):
    stop = threading.Event()
    config = tiny_config(tiny_data, epochs=3)
    run = create_run(db, config, status="queued")

    def stop_after_second_epoch(event):
        if event["type"] == "epoch" and event["epoch"] == 2:
            stop.set()

    assert Trainer(db, workspace, run.id, on_event=stop_after_second_epoch, stop=stop).run() == "cancelled"
    recorded = {e.epoch: e for e in db.epochs(run.id)}
    # A SIGKILL after `last` (epoch 2) was saved but before its row was committed.
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM epoch WHERE run_id = :id AND epoch = 2"), {"id": run.id})
    assert states.move(db, run.id, "running")
    assert Trainer(db, workspace, run.id).run(resume=True) == "completed"
    epochs = db.epochs(run.id)
    assert [e.epoch for e in epochs] == [1, 2, 3], "every epoch exactly once"
    assert epochs[1].val_acc == recorded[2].val_acc and epochs[1].mcc == recorded[2].mcc, "from the checkpoint's metrics"
    steps = [s for s, _ in db.steps(run.id)]
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] == epochs[-1].step


def test_a_best_checkpoint_left_behind_by_a_kill_before_its_link_is_the_best_epoch_after_resume(db, workspace, tiny_data):
    import torch

    stop = threading.Event()
    run = create_run(db, tiny_config(tiny_data, fast=True, epochs=3), status="queued")
    assert Trainer(db, workspace, run.id, stop=stop,
                   on_event=lambda event: event["type"] == "epoch" and event["epoch"] == 2 and stop.set()).run() == "cancelled"
    last_path, best_path = workspace.checkpoint_path(run.id, "last"), workspace.checkpoint_path(run.id, "best")
    # A SIGKILL after epoch 2's `last` (the new best) was written, before `best` was linked to it
    # and before its row was committed: `best` still holds an older epoch.
    last = torch.load(last_path, weights_only=True)
    last["best"] = {**last["metrics"], "epoch": 2, "val_acc": 1.0, "val_loss": 0.0}  # one epoch 3 cannot beat
    torch.save(last, last_path)
    best_path.unlink()
    torch.save({**last, "epoch": 1}, best_path)
    with db.engine.begin() as connection:
        connection.execute(text("DELETE FROM epoch WHERE run_id = :id AND epoch = 2"), {"id": run.id})
    assert states.move(db, run.id, "running")
    assert Trainer(db, workspace, run.id).run(resume=True) == "completed"
    done = db.get_run(run.id)
    assert done.best_epoch == 2 and load_checkpoint(best_path)["epoch"] == 2, "the database and best.pt name one epoch"


def test_resume_without_a_checkpoint_is_refused_and_keeps_the_history(db, workspace, tiny_data):
    run = create_run(db, tiny_config(tiny_data, epochs=1), status="queued")
    assert Trainer(db, workspace, run.id).run() == "completed"
    workspace.checkpoint_path(run.id, "last").unlink()
    with db.engine.begin() as connection:  # as if the run had been interrupted
        connection.execute(text("UPDATE run SET status = 'interrupted' WHERE id = :id"), {"id": run.id})
    assert states.move(db, run.id, "running")
    with pytest.raises(ResumeError, match=f"run {run.id} has 1 epoch\\(s\\) recorded but no checkpoint at .*last.pt; `leuktui retry {run.id}`"):
        Trainer(db, workspace, run.id).run(resume=False)
    assert [e.epoch for e in db.epochs(run.id)] == [1] and db.count_steps(run.id) > 0, "nothing deleted"
    assert db.get_run(run.id).status == "failed"
