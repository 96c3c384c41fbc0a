"""Real training on tiny synthetic data, recorded in a real SQLite workspace."""

import contextlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from conftest import TINY_NET, tiny_config
from db import states
from engine.checkpoint import load_checkpoint
from engine.train import Trainer
from runner.control import create_run


def _train(db, workspace, config, **kwargs):
    run = create_run(db, config, status="queued")
    status = Trainer(db, workspace, run.id, **kwargs).run()
    return db.get_run(run.id), status


def test_a_run_is_recorded_as_it_trains(db, workspace, tiny_data):
    events = []
    run, status = _train(db, workspace, tiny_config(tiny_data), on_event=events.append)
    assert status == "completed" and run.status == "completed"
    epochs = db.epochs(run.id)
    assert [e.epoch for e in epochs] == [1, 2]
    steps_per_epoch = 48 // 16
    assert [s for s, _ in db.steps(run.id)] == list(range(1, 2 * steps_per_epoch + 1))
    assert epochs[-1].step == 2 * steps_per_epoch
    for e in epochs:
        assert e.images_per_s > 0 and e.seconds > 0 and e.lr == pytest.approx(1e-3)
        assert sum(map(sum, e.confusion)) == 24
        assert 0 <= e.val_acc <= 1 and e.val_loss > 0
    best = max(epochs, key=lambda e: e.val_acc)
    assert run.best_epoch == best.epoch and run.best_val_acc == best.val_acc and run.best_val_f1 == best.f1
    assert run.epochs_done == 2 and run.finished_at >= run.started_at
    assert run.environment["torch"] == torch.__version__ and run.environment["host"] == run.host
    assert run.environment["device"] == "cpu"
    last = load_checkpoint(workspace.checkpoint_path(run.id, "last"))
    assert last["epoch"] == 2 and last["step"] == 2 * steps_per_epoch and last["config"]["epochs"] == 2
    assert {"model", "optimizer", "scheduler", "scaler", "generator"} <= set(last)
    assert load_checkpoint(workspace.checkpoint_path(run.id, "best"))["epoch"] == run.best_epoch
    assert "epoch 2/2" in workspace.log_path(run.id).read_text()
    assert [e["type"] for e in events if e["type"] != "step"] == ["start", "epoch", "epoch", "end"]
    # The best epoch's validation predictions, one record however often the best moved, with the
    # same numbers as the epoch row and a bootstrap interval around each.
    (record,) = [e for e in db.evaluations(run.id) if e.origin == "training"]
    assert (record.checkpoint, record.split, record.tta, record.epoch, record.n) == ("best", "valid", "single", run.best_epoch, 24)
    assert record.acc == best.val_acc and record.auc == best.auc and record.confusion == best.confusion
    predictions = db.predictions_of([record.id])[record.id]
    assert len(predictions) == 24 and sum(p == y for _, _, p, y in predictions) / 24 == pytest.approx(best.val_acc)
    assert record.intervals["seed"] == 2019 and record.intervals["resamples"] == 1000 and record.intervals["n"] == 24
    low, high = record.interval("acc")
    assert low <= record.acc <= high


def test_same_seed_same_result_on_cpu(db, workspace, tiny_data):
    config = tiny_config(tiny_data, epochs=1, seed=3)
    a, _ = _train(db, workspace, config)
    b, _ = _train(db, workspace, config)
    c, _ = _train(db, workspace, config.replace(seed=4))
    assert db.steps(a.id) == db.steps(b.id)
    assert db.epochs(a.id)[0].val_loss == db.epochs(b.id)[0].val_loss
    assert db.steps(a.id) != db.steps(c.id)


def test_cancel_then_resume_continues_without_duplicates(db, workspace, tiny_data):
    stop = threading.Event()

    def stop_after_first_epoch(event):
        if event["type"] == "epoch" and event["epoch"] == 1:
            stop.set()

    config = tiny_config(tiny_data, epochs=3, scheduler="cosine", model=TINY_NET)
    run, status = _train(db, workspace, config, on_event=stop_after_first_epoch, stop=stop)
    assert status == "cancelled" and run.status == "cancelled"
    assert [e.epoch for e in db.epochs(run.id)] == [1]

    uninterrupted, _ = _train(db, workspace, config)
    assert states.move(db, run.id, "running")
    assert Trainer(db, workspace, run.id).run(resume=True) == "completed"
    resumed = db.get_run(run.id)
    assert [e.epoch for e in db.epochs(run.id)] == [1, 2, 3]
    steps = [s for s, _ in db.steps(run.id)]
    assert steps == list(range(1, 3 * 3 + 1))
    assert resumed.epochs_done == 3
    # Resuming restores model, optimizer, scheduler and sampler state: the result is the same
    # as a run that never stopped.
    assert np.allclose([v for _, v in db.steps(run.id)], [v for _, v in db.steps(uninterrupted.id)], atol=1e-5)
    assert [e.lr for e in db.epochs(run.id)] == pytest.approx([e.lr for e in db.epochs(uninterrupted.id)])


def test_a_cancel_that_arrives_after_the_last_epoch_leaves_the_run_completed(db, workspace, tiny_data):
    stop = threading.Event()
    run, status = _train(db, workspace, tiny_config(tiny_data, fast=True, epochs=2),
                         on_event=lambda event: event["type"] == "epoch" and event["epoch"] == 2 and stop.set(), stop=stop)
    assert stop.is_set() and status == "completed" and run.status == "completed"
    assert [e.epoch for e in db.epochs(run.id)] == [1, 2]


def test_early_stopping_ends_after_patience_epochs_without_improvement(db, workspace, tiny_data):
    run, _ = _train(db, workspace, tiny_config(tiny_data, epochs=6, early_stop=1, best_metric="val_loss", lr=0.05))
    losses = [e.val_loss for e in db.epochs(run.id)]
    for i in range(1, len(losses) - 1):
        assert losses[i] < min(losses[:i]), "training went on after an epoch without improvement"
    if len(losses) < 6:
        assert losses[-1] >= min(losses[:-1])


def test_cross_entropy_two_logits_and_a_pretrained_file(db, workspace, tiny_data, tmp_path):
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    run, status = _train(db, workspace, tiny_config(tiny_data, epochs=1, loss="ce", pretrained=str(weights), optimizer="sgd"))
    assert status == "completed"
    state = load_checkpoint(workspace.checkpoint_path(run.id, "last"))
    assert state["model"]["fc.weight"].shape == (2, 512)
    assert "loaded" in workspace.log_path(run.id).read_text()


def test_preprocessing_options_train(db, workspace, tiny_data):
    config = tiny_config(tiny_data, epochs=1, hist_eq=True, center_crop=True, crop_to_cell=True, eval_mode="ten", balance=True)
    run, status = _train(db, workspace, config)
    assert status == "completed" and db.epochs(run.id)[0].val_acc is not None


def test_a_missing_image_fails_the_run_with_its_name(db, workspace, tiny_data, tmp_path):
    import shutil

    from engine.datasets import DatasetError

    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    (root / "new_dataset" / "train" / "5.bmp").unlink()
    run = create_run(db, tiny_config(root), status="queued")
    with pytest.raises(DatasetError, match="5.bmp"):
        Trainer(db, workspace, run.id).run()
    failed = db.get_run(run.id)
    assert failed.status == "failed" and "5.bmp" in failed.error


DIVERGING_MODELS = '''
import os

import torch
from torch import nn


class Diverging(nn.Module):
    """A small network that goes wrong in one way: NaN logits from the third training step
    ("loss"), an infinite buffer after the second ("weights"), or NaN outputs when evaluated
    though every weight is finite ("outputs")."""

    way = ""

    def __init__(self, num_classes):
        super().__init__()
        self.head = nn.Linear(3, num_classes)
        self.register_buffer("scale", torch.ones(1))
        self.steps = 0

    def forward(self, x):
        logits = self.head(x.mean(dim=(2, 3)))
        if self.training:
            self.steps += 1
            if self.way == "loss" and self.steps > 2:
                return logits * float("nan")
            if self.way == "weights" and self.steps == 2:
                self.scale.fill_(float("inf"))
        elif self.way == "outputs" or os.environ.get("DIVERGING_MODELS_NAN"):
            return logits * float("nan")
        return logits


class Loss(Diverging):
    way = "loss"


class Weights(Diverging):
    way = "weights"


class Outputs(Diverging):
    way = "outputs"
'''


@pytest.mark.parametrize(("way", "says"), [
    ("loss", "the training loss became nan at step 3"),  # the steps before it are recorded, none after
    ("weights", "the weights became inf by step 6, the end of epoch 1 (scale)"),  # every loss finite, a weight not
    ("outputs", "the model's outputs became nan for 24 of 24 validation images after epoch 1 (step 6)"),  # weights finite, outputs not
    ("final", "the model's outputs became nan for 8 of 8 training images after epoch 1 (step 9)"),  # a final fit has no validation
    ("resnet18", ""),  # a real network at lr 10 goes one of these ways
])
def test_a_diverging_run_fails_with_advice_and_records_nothing_that_is_not_a_number(db, workspace, tiny_data, tmp_path, monkeypatch,
                                                                                   way, says):
    import re

    from engine.loop import TrainingDiverged

    (tmp_path / "diverging_models.py").write_text(DIVERGING_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LEUKTUI_MODELS", "diverging_models")
    model = {"resnet18": "resnet18", "final": "diverging_models:Outputs"}.get(way, f"diverging_models:{way.title()}")
    config = tiny_config(tiny_data, fast=True, epochs=20, optimizer="sgd", lr=10, momentum=0.99, batch_size=8 if says else 4, model=model,
                         fit_on="train+valid" if way == "final" else "train")
    run = create_run(db, config, status="queued")
    with pytest.raises(TrainingDiverged, match="; try a lower --lr, --amp off, or a larger --image-size$"):
        Trainer(db, workspace, run.id).run()
    failed = db.get_run(run.id)
    assert failed.status == "failed" and says in failed.error, failed.error
    assert re.match(r"the (training loss|weights|model's outputs) became (nan|-?inf) (at|by|for) ", failed.error), failed.error
    values = [v for _, v in db.steps(run.id)]
    assert values and all(np.isfinite(values)), "only finite losses are recorded"
    if way == "loss":
        assert [s for s, _ in db.steps(run.id)] == [1, 2]
    if way in ("weights", "outputs", "final"):
        assert not db.epochs(run.id) and not db.evaluations(run.id), "no epoch and no prediction of a diverged model is recorded"
        assert not workspace.checkpoint_path(run.id, "last").exists(), "no checkpoint of a diverged model is saved"


def test_an_eval_or_export_whose_outputs_are_not_numbers_is_one_line_and_writes_nothing(db, workspace, tiny_data, tmp_path,
                                                                                        monkeypatch):
    from conftest import cli

    (tmp_path / "diverging_models.py").write_text(DIVERGING_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LEUKTUI_MODELS", "diverging_models")
    run = create_run(db, tiny_config(tiny_data, fast=True, epochs=1, model="diverging_models:Diverging"), status="queued")
    assert Trainer(db, workspace, run.id).run() == "completed"
    evaluations = len(db.evaluations(run.id))
    monkeypatch.setenv("DIVERGING_MODELS_NAN", "1")
    for command, says in ((["export", str(run.id), "-o", str(tmp_path / "out.csv")], "for 16 of 16 images of resnet_18_test.csv with run 1's best checkpoint (epoch 1)"),
                          (["eval", str(run.id)], "for 24 of 24 valid images with run 1's best checkpoint (epoch 1)")):
        result = cli(*command, home=workspace.home, check=False)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert f"the model's outputs became nan {says}; its training diverged: retrain with a lower --lr" in result.stderr, result.stderr
    assert not (tmp_path / "out.csv").exists() and not list(tmp_path.glob("out.csv*"))
    assert len(db.evaluations(run.id)) == evaluations and not db.submissions()


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_on_the_cpu_is_fused_and_updates_the_weights_as_torchs_default_does(tmp_path, optimizer):
    """Given the same gradients, the fused update moves every weight as torch's default does."""
    import copy

    from engine.loop import build_optimizer
    from engine.models import build_model

    torch.manual_seed(0)
    engine_model = build_model("resnet18", num_classes=2)
    default_model = copy.deepcopy(engine_model)
    initial = copy.deepcopy(engine_model)
    config = tiny_config(tmp_path, optimizer=optimizer, lr=0.01, weight_decay=1e-4)
    default = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer]
    engine_step = build_optimizer(engine_model, config)
    default_step = default(default_model.parameters(), lr=0.01, weight_decay=1e-4)
    assert engine_step.defaults["fused"] is True and default_step.defaults["fused"] is None
    for seed in range(3):
        gradients = torch.Generator().manual_seed(seed)
        for engine_weight, default_weight in zip(engine_model.parameters(), default_model.parameters(), strict=True):
            engine_weight.grad = torch.randn(engine_weight.shape, generator=gradients)
            default_weight.grad = engine_weight.grad.clone()
        engine_step.step()
        default_step.step()
    for weight, default_weight, before in zip(engine_model.parameters(), default_model.parameters(), initial.parameters(), strict=True):
        assert (weight - before).abs().max() > 0.01  # three steps of lr 0.01 moved it
        torch.testing.assert_close(weight, default_weight, rtol=1e-5, atol=1e-6)


def test_only_an_epochs_last_batch_of_steps_waits_for_the_disk(db, workspace, tiny_data, monkeypatch):
    """Inside an epoch step rows may skip the wait for the disk; the epoch's last batch may not,
    since the checkpoint saved after it says the epoch is done (Database.add_steps)."""
    import engine.loop

    monkeypatch.setattr(engine.loop, "STEP_FLUSH_EVERY", 2)
    monkeypatch.setattr(engine.loop, "STEP_FLUSH_SECONDS", 1e9)  # by count alone here, however slow the machine
    batches = []
    add_steps = db.add_steps
    monkeypatch.setattr(db, "add_steps", lambda run_id, rows, *, durable=True: (batches.append(([s for s, _, _ in rows], durable)),
                                                                               add_steps(run_id, rows, durable=durable)))
    run, status = _train(db, workspace, tiny_config(tiny_data, batch_size=8, model=TINY_NET))  # 6 steps an epoch
    assert status == "completed"
    assert batches == [([1, 2], False), ([3, 4], False), ([5, 6], True), ([7, 8], False), ([9, 10], False), ([11, 12], True)]
    assert [s for s, _ in db.steps(run.id)] == list(range(1, 13))


def test_slow_steps_reach_the_live_chart_within_seconds_not_25_steps(db, workspace, tiny_data, monkeypatch):
    """Where 25 steps take long (a CPU, a large model) the steps are written every couple of
    seconds too, so the live loss chart does not stay empty through the first epoch."""
    import engine.loop

    monkeypatch.setattr(engine.loop, "STEP_FLUSH_SECONDS", 0.0)  # every step is "slow"
    batches = []
    add_steps = db.add_steps
    monkeypatch.setattr(db, "add_steps", lambda run_id, rows, *, durable=True: (batches.append([s for s, _, _ in rows]),
                                                                               add_steps(run_id, rows, durable=durable)))
    run, status = _train(db, workspace, tiny_config(tiny_data, batch_size=8, model=TINY_NET))  # 6 steps an epoch
    assert status == "completed" and batches == [[step] for step in range(1, 13)]
    assert [s for s, _ in db.steps(run.id)] == list(range(1, 13))


def test_a_weight_average_is_what_validation_scores_checkpoints_hold_and_a_resume_continues(db, workspace, tiny_data):
    from engine.predict import evaluate_run

    stop = threading.Event()

    def stop_after_first_epoch(event):
        if event["type"] == "epoch" and event["epoch"] == 1:
            stop.set()

    config = tiny_config(tiny_data, fast=True, epochs=2, ema=0.9, model=TINY_NET)
    whole, _ = _train(db, workspace, config)
    last = load_checkpoint(workspace.checkpoint_path(whole.id, "last"))
    assert last["ema_updates"] == 2 * 6 and set(last["model"]) == set(last["trained_model"])
    assert any(not torch.equal(last["model"][k], last["trained_model"][k]) for k in last["model"] if last["model"][k].is_floating_point())
    # The best checkpoint's averaged weights score what training recorded for that epoch.
    evaluation, _ = evaluate_run(db, workspace, whole.id)
    assert evaluation.acc == pytest.approx(whole.best_val_acc) and evaluation.loss == pytest.approx(whole.summary["val_loss"], abs=1e-5)

    run, status = _train(db, workspace, config, on_event=stop_after_first_epoch, stop=stop)
    assert status == "cancelled"
    assert states.move(db, run.id, "running")
    assert Trainer(db, workspace, run.id).run(resume=True) == "completed"
    resumed = load_checkpoint(workspace.checkpoint_path(run.id, "last"))
    assert resumed["ema_updates"] == last["ema_updates"]
    for key, value in last["model"].items():
        assert torch.allclose(resumed["model"][key].float(), value.float(), atol=1e-5), key


def test_the_final_fit_trains_on_train_and_valid_and_exports_its_ensemble(tmp_path, tiny_data):
    import json

    from conftest import cli
    from db import Database, Workspace

    home = tmp_path / "home"
    flags = ("--data-dir", str(tiny_data), "--image-size", "16", "--batch-size", "8", "--rotation", "0", "--amp", "off",
             "--epochs", "3", "--workers", "1", "--model", TINY_NET)
    source = int(cli("run", *flags, home=home).stdout.strip().splitlines()[-1])
    workspace = Workspace(home)
    db = Database(workspace.db_url)
    best_epoch = db.get_run(source).best_epoch
    refused = cli("finalize", str(source), "--export", home=home, check=False)
    assert refused.returncode == 1 and "no finished final fit yet" in refused.stderr

    queued = json.loads(cli("finalize", str(source), "--seeds", "2", "--no-start", "--json", home=home).stdout)
    assert queued["epochs"] == best_epoch and queued["seeds"] == [0, 1]
    for run_id in queued["run_ids"]:
        assert Trainer(db, workspace, run_id).run() == "completed"
        run = db.get_run(run_id)
        assert run.parent_id == source and "final" in run.tags and run.config["fit_on"] == "train+valid"
        assert run.best_epoch is None and run.best_val_acc is None  # no validation score, and none pretended
        epochs = db.epochs(run_id)
        assert len(epochs) == best_epoch and all(e.val_acc is None for e in epochs)
        assert db.steps(run_id)[-1][0] == best_epoch * (48 + 24) // 8  # every step saw train and valid images
        assert not [e for e in db.evaluations(run_id) if e.split == "valid"]

    exported = json.loads(cli("finalize", str(source), "--export", "--json", home=home).stdout)
    assert exported["run_ids"] == queued["run_ids"] and exported["rows"] == 16
    assert exported["path"].endswith(f"exports/final-{source}-single.csv")
    submission = db.get_submission(exported["submission_id"])
    assert submission.run_ids == queued["run_ids"] and submission.checkpoint == "last"
    assert "no validation score" in submission.notes and f"final fit of run {source}" in submission.notes
    listed = {r["id"]: r for r in json.loads(cli("ls", "--json", home=home).stdout)}
    assert listed[queued["run_ids"][0]]["final_fit"] and not listed[source]["final_fit"]
    assert "final fit" in cli("ls", home=home).stdout
    assert "no validation score" in cli("show", str(queued["run_ids"][0]), home=home).stdout
    again = cli("finalize", str(queued["run_ids"][0]), home=home, check=False)
    assert again.returncode == 1 and "is itself a final fit" in again.stderr
    best = cli("export", str(queued["run_ids"][0]), home=home, check=False)
    assert (best.returncode, best.stderr.strip()) == (1, f"leuktui: error: run {queued['run_ids'][0]}: a final fit keeps no best "
                                                         "checkpoint (it has no validation score to choose one by); give --checkpoint "
                                                         f"last, or export its run's fits with `leuktui finalize {source} --export`")
    db.close()


def test_a_kill_between_the_best_checkpoint_and_its_predictions_loses_neither(db, workspace, tiny_data, monkeypatch):
    """The best checkpoint is saved, then its validation predictions recorded: a kill between the
    two is made good by the resume, from the predictions the checkpoint carries."""
    run = create_run(db, tiny_config(tiny_data, fast=True, epochs=1), status="queued")  # nothing left to train: only the repair records
    record = Trainer._record_validation

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_record_validation", killed)
    with pytest.raises(KeyboardInterrupt):
        Trainer(db, workspace, run.id).run()
    monkeypatch.setattr(Trainer, "_record_validation", record)
    assert not [e for e in db.evaluations(run.id) if e.origin == "training"]
    assert load_checkpoint(workspace.checkpoint_path(run.id, "best"))["valid_probabilities"].shape == (24,)
    for status in ("interrupted", "running"):
        states.move(db, run.id, status)
    assert Trainer(db, workspace, run.id).run(resume=True) == "completed"
    done = db.get_run(run.id)
    (recorded,) = [e for e in db.evaluations(run.id) if e.origin == "training"]
    assert recorded.epoch == done.best_epoch and recorded.acc == done.best_val_acc and recorded.interval("acc") is not None
    assert len(db.predictions_of([recorded.id])[recorded.id]) == 24


def test_mistakes_are_the_confusion_matrix_off_diagonal_and_their_grad_cams_follow_the_checkpoint(tmp_path, tiny_data):
    import json

    from PIL import Image

    from conftest import cli

    home = tmp_path / "home"
    # 64 px: the maps are of layer3, 4x4 cells (engine.cam.target_layer); a map of a 16 px image is of layer1.
    cli("run", "--data-dir", str(tiny_data), "--image-size", "64", "--batch-size", "8", "--rotation", "0", "--amp", "off",
        "--epochs", "1", "--workers", "1", home=home)
    found = json.loads(cli("mistakes", "1", "--json", home=home).stdout)
    (tn, fp), (fn, tp) = found["confusion"]
    assert len(found["false_negatives"]) == fn and len(found["false_positives"]) == fp and fn + fp > 0
    assert all(item["label"] == 1 and item["probability"] < 0.5 for item in found["false_negatives"])
    assert all(item["label"] == 0 and item["probability"] >= 0.5 for item in found["false_positives"])
    assert [i["probability"] for i in found["false_positives"]] == sorted((i["probability"] for i in found["false_positives"]), reverse=True)
    assert [i["probability"] for i in found["false_negatives"]] == sorted(i["probability"] for i in found["false_negatives"])
    assert all(Path(item["image"]).is_file() for item in found["false_negatives"] + found["false_positives"])
    report = json.loads(cli("report", "1", "--cam", "-o", str(tmp_path / "report"), "--json", home=home).stdout)
    assert "mistakes-run-1" in report["figures"] and not [note for note in report["notes"] if "not drawn" in note]
    gallery = [item["id"] for kind in ("false_negatives", "false_positives") for item in found[kind][:3]]
    drawn_by_report = sorted(p.name for p in (home / "runs" / "1" / "cam").rglob("*.png"))
    assert len(drawn_by_report) == len(gallery) + 4, "the report drew the maps of its gallery and its 4 example cells, no more"
    from db import Database, Workspace
    from leuktui.report.build import example_images
    from leuktui.report.data import collect

    with contextlib.closing(Database(Workspace(home).db_url)) as database:
        originals, columns, _ = example_images(collect(database, [database.get_run(1)]).records, Workspace(home))
    assert columns[-1][0] == "Grad-CAM of its class\n(run 1)" and len(columns[-1][1]) == len(originals) == 4
    first = json.loads(cli("mistakes", "1", "--limit", "1", "--json", home=home).stdout)
    assert [first[k] for k in ("false_negatives", "false_positives")] == [found[k][:1] for k in ("false_negatives", "false_positives")]

    drawn = json.loads(cli("mistakes", "1", "--cam", "--json", home=home).stdout)
    maps = [Path(item["cam"]) for item in drawn["false_negatives"] + drawn["false_positives"]]
    assert all(path.is_file() and Image.open(path).size == (64, 64) for path in maps)
    stamps = [path.stat().st_mtime_ns for path in maps]
    again = json.loads(cli("mistakes", "1", "--cam", "--json", home=home).stdout)
    assert [Path(i["cam"]).stat().st_mtime_ns for i in again["false_negatives"] + again["false_positives"]] == stamps  # cached
    import csv

    cli("mistakes", "1", "--cam", "-o", str(tmp_path / "wrong"), home=home)
    with (tmp_path / "wrong" / "mistakes.csv").open() as handle:
        listed = list(csv.DictReader(handle))
    assert len(listed) == fn + fp and all((tmp_path / "wrong" / row["image"]).is_file() and (tmp_path / "wrong" / row["cam"]).is_file()
                                         for row in listed)
    from db import Database, Workspace

    database = Database(Workspace(home).db_url)
    before = len(database.evaluations(1))
    refused = cli("mistakes", "1", "--checkpoint", "last", "-o", str(tmp_path / "wrong"), home=home, check=False)
    assert refused.returncode == 2 and "not an empty folder" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert len(database.evaluations(1)) == before, "refused before any work: no evaluation recorded"
    among = cli("mistakes", "1", "-o", str(tiny_data / "mistakes"), home=home, check=False)
    assert (among.returncode, among.stderr.strip()) == (2, f"leuktui: error: {tiny_data / 'mistakes'}: inside the dataset folder "
                                                           f"{tiny_data}; the mistakes' copies never go among its files")
    assert not (tiny_data / "mistakes").exists()
    unwritable = Path("/proc/leuktui-mistakes")  # /proc takes no new folder, even for root
    refused = cli("mistakes", "1", "--checkpoint", "last", "-o", str(unwritable), home=home, check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert f"{unwritable}: cannot be written in /proc" in refused.stderr and ".tmp-" not in refused.stderr, refused.stderr
    assert len(database.evaluations(1)) == before, "refused before any work: no evaluation recorded"
    last = json.loads(cli("mistakes", "1", "--checkpoint", "last", "--json", home=home).stdout)
    assert json.loads(cli("mistakes", "1", "--checkpoint", "last", "--json", home=home).stdout)["evaluation"] == last["evaluation"]
    assert len(database.evaluations(1)) == before + 1, "the last checkpoint's evaluation is recorded once, then reused"
    # Each map explains the class the model predicted: the other class's map is another picture.
    from engine.cam import grad_cams
    from engine.datasets import load_split

    samples = {s.ident: s for s in load_split(tiny_data, "valid").samples}
    items = drawn["false_negatives"] + drawn["false_positives"]
    assert all(item["cam"].endswith(f"-{item['predicted']}.png") for item in items)
    other = grad_cams(database, Workspace(home), 1, [samples[i["id"]] for i in items], [1 - i["predicted"] for i in items])
    assert any(not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(i["cam"]))) for a, i in zip(other, items, strict=True))
    database.close()

    # Another checkpoint (its last block's weights changed): new maps, and they differ.
    best = home / "runs" / "1" / "checkpoints" / "best.pt"
    state = load_checkpoint(best)
    for key, value in state["model"].items():
        if key.startswith("layer4") and value.is_floating_point():
            state["model"][key] = value + torch.randn_like(value)
    best.unlink()  # best.pt is a hard link to last.pt: a file of its own now
    torch.save(state, best)
    moved = json.loads(cli("mistakes", "1", "--cam", "--json", home=home).stdout)
    first = {i["id"]: i["cam"] for i in drawn["false_negatives"] + drawn["false_positives"]}
    changed = [(first[i["id"]], i["cam"]) for i in moved["false_negatives"] + moved["false_positives"] if i["id"] in first]
    assert changed and all(old != new for old, new in changed)
    assert any(not np.array_equal(np.asarray(Image.open(old)), np.asarray(Image.open(new))) for old, new in changed)


def test_ranks_share_the_batch_order_and_draw_their_own_augmentation():
    from engine.config import RunConfig
    from engine.distributed import Ranks, augmentation_generator, shard_batches
    from engine.pipeline import BatchTransform

    ranks = [Ranks(rank=r, world=2, local_rank=r) for r in (0, 1)]
    batches = [np.arange(i * 4, i * 4 + 4) for i in range(5)]
    shares = [shard_batches(batches, r) for r in ranks]
    assert [len(s) for s in shares] == [2, 2] and not set(np.concatenate(shares[0])) & set(np.concatenate(shares[1]))
    transform = BatchTransform.for_training(RunConfig.from_dict({"hflip": True, "vflip": True, "rotation": 30}))
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))

    def drawn(rank: int, epoch: int) -> torch.Tensor:
        return transform(images, augmentation_generator(7, epoch, ranks[rank]))

    assert torch.equal(drawn(0, 1), drawn(0, 1)), "the same draw again (a resume at that epoch)"
    assert not torch.equal(drawn(0, 1), drawn(1, 1)), "another rank, other flips and rotations"
    assert not torch.equal(drawn(0, 1), drawn(0, 2)), "another epoch, other flips and rotations"


@pytest.mark.parametrize(("size", "stage"), [(128, "layer4"), (64, "layer3"), (32, "layer2")])
def test_grad_cam_explains_a_small_image_with_the_last_stage_whose_map_is_4x4(size, stage):
    """At 32 px a ResNet's layer4 is one cell: its Grad-CAM is the same whatever the image. The
    map is taken from the last stage of at least 4x4 cells, so it shows where the network looked."""
    from pytorch_grad_cam import GradCAM

    from engine.cam import ClassScore, target_layer
    from engine.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=1).eval()
    batch = torch.rand(1, 3, size, size)
    layer = target_layer(model, batch)
    assert layer is getattr(model, stage)[-1]
    with GradCAM(model=model, target_layers=[layer]) as cam:
        heat = cam(input_tensor=batch, targets=[ClassScore(1, True)])[0]
    assert heat.shape == (size, size) and float(np.nanstd(heat)) > 0.05, "a map with somewhere to look"
    with GradCAM(model=model, target_layers=[model.layer4[-1]]) as cam:
        flat = np.nan_to_num(cam(input_tensor=batch, targets=[ClassScore(1, True)])[0])
    if size == 32:
        assert float(flat.std()) == 0.0, "layer4's one cell: the flat map this choice avoids"
