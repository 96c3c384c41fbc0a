"""The run screen's feed: everything on the first read, then only what changed, on real SQLite."""

from __future__ import annotations

from leuktui.feed import DetailFeed


def make_run(db):
    return db.create_run(config={"epochs": 5}, config_hash="h", model="resnet18", name="feed")


def test_first_read_has_everything_then_only_changes(db, workspace):
    run = make_run(db)
    for epoch in (1, 2):
        db.add_epoch(run.id, epoch, epoch * 1500, {"train_loss": 1.0 / epoch, "val_acc": 0.5 + epoch / 10, "confusion": [[1, 0], [0, 1]]})
    db.add_steps(run.id, [(s, "train_loss", 1.0) for s in range(1, 3001)])
    log = workspace.log_path(run.id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("epoch 1 done\nepoch 2 done\nepoch 3 start")  # the last line is still being written
    feed = DetailFeed(db, log, run.id)

    first = feed.read()
    assert first.reset and first.run.id == run.id
    assert [e.epoch for e in first.epochs] == [1, 2]
    assert len(first.steps) <= 2000 and first.steps[-1][0] == 3000, "an overview of a long run, ending on its newest step"
    assert first.evaluations == []
    assert first.log_lines == ["epoch 1 done", "epoch 2 done"]

    assert feed.read() is None, "nothing changed"

    db.add_epoch(run.id, 3, 4500, {"train_loss": 0.3, "val_acc": 0.8})
    db.add_steps(run.id, [(s, "train_loss", 0.5) for s in range(3001, 3011)])
    db.add_evaluation(run.id, checkpoint="best", epoch=3, split="valid", tta="ten", metrics={"acc": 0.8}, n=10)
    with log.open("a") as handle:
        handle.write(" now\nepoch 3 done\n")
    later = feed.read()
    assert not later.reset
    assert [e.epoch for e in later.epochs] == [3]
    assert later.steps == [(s, 0.5) for s in range(3001, 3011)], "new steps one by one"
    assert [e.tta for e in later.evaluations] == ["ten"]
    assert later.log_lines == ["epoch 3 start now", "epoch 3 done"]


def test_a_resume_from_an_earlier_checkpoint_reads_the_run_again(db, workspace):
    run = make_run(db)
    for epoch in (1, 2, 3):
        db.add_epoch(run.id, epoch, epoch * 10, {"val_acc": 0.7})
    db.add_steps(run.id, [(s, "train_loss", 1.0) for s in range(1, 31)])
    feed = DetailFeed(db, workspace.log_path(run.id), run.id)
    assert [e.epoch for e in feed.read().epochs] == [1, 2, 3]
    db.truncate_after(run.id, epoch=1, step=10)
    again = feed.read()
    assert again.reset and [e.epoch for e in again.epochs] == [1] and again.steps[-1][0] == 10


def test_a_log_rewritten_shorter_is_read_from_its_tail_again(db, workspace):
    run = make_run(db)
    log = workspace.log_path(run.id)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("a long first attempt\n" * 10)
    feed = DetailFeed(db, log, run.id)
    assert len(feed.read().log_lines) == 10
    log.write_text("second attempt\n")
    assert feed.read().log_lines == ["second attempt"]
