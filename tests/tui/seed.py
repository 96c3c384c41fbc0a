"""A fixed, seeded workspace for the app's tests and snapshots: the same rows every time.

About 80 tests start from it. Its rows are written once per test process and data folder; each
SQLite workspace after the first is a copy of that database file (a millisecond against a third
of a second of some 2,000 writes). A workspace on PostgreSQL (``$LEUKTUI_DB``) is seeded row by row."""

from __future__ import annotations

import atexit
import math
import shutil
import tempfile
from pathlib import Path

from db import Database, Workspace
from db.workspace import DB_FILE
from engine.config import RunConfig

NOW = 1_800_000_000.0  # the tests' clock: ages and ETAs render the same every run
MODELS = ("resnet18", "resnet50", "resnet152")


def _curve(run_index: int, epoch: int, epochs: int) -> dict:
    """Plausible, deterministic learning curves."""
    progress = epoch / epochs
    base = 0.80 + 0.05 * (run_index % 3) * 0.5
    val_acc = round(min(0.97, base + 0.15 * (1 - math.exp(-3 * progress)) - 0.004 * run_index), 4)
    tp = round(68 * (val_acc + 0.01))
    tn = round(32 * (val_acc - 0.02))
    return {
        "train_loss": round(0.65 * math.exp(-2 * progress) + 0.1, 4),
        "train_acc": round(min(0.99, val_acc + 0.02), 4),
        "val_loss": round(0.6 * math.exp(-1.5 * progress) + 0.15, 4),
        "val_acc": val_acc,
        "sensitivity": round(tp / 68, 4),
        "specificity": round(tn / 32, 4),
        "f1": round(val_acc - 0.003, 4),
        "auc": round(min(0.995, val_acc + 0.02), 4),
        "mcc": round((tp * tn - (32 - tn) * (68 - tp)) / math.sqrt((tp + 32 - tn) * 68 * 32 * (tn + 68 - tp)), 4),
        "balanced_acc": round((tp / 68 + tn / 32) / 2, 4),
        "confusion": [[tn, 32 - tn], [68 - tp, tp]],
        "lr": 1e-3,
        "seconds": 12.5,
        "images_per_s": 140.0 + run_index,
    }


_TEMPLATES: dict[str, Path] = {}  # data folder -> a seeded SQLite database file made by this process


def seed_workspace(workspace: Workspace, data_dir: str = "/data/lab3") -> Database:
    """Six runs: an ablation of three models x hist-eq (completed, with 5/10-crop evaluations),
    plus a running, a queued and a failed run. An empty SQLite workspace gets a copy of the rows
    this process wrote the first time; the database is open on return, as a seeded one is."""
    target = workspace.home / DB_FILE
    if workspace.db_url != f"sqlite:///{target}" or target.exists():
        return _seed_rows(Database(workspace.db_url), data_dir)
    template = _TEMPLATES.get(data_dir)
    if template is None:
        folder = Path(tempfile.mkdtemp(prefix="leuktui-seed-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _seed_rows(Database(f"sqlite:///{folder / DB_FILE}"), data_dir).close()
        assert not (folder / f"{DB_FILE}-wal").exists(), "closed, the database's -wal is folded into its file"
        template = _TEMPLATES[data_dir] = folder / DB_FILE
    shutil.copyfile(template, target)
    return Database(workspace.db_url)


def _seed_rows(db: Database, data_dir: str) -> Database:
    sweep = db.create_sweep("models x hist_eq", {"epochs": 5}, {"model": list(MODELS), "hist_eq": [False, True]})
    index = 0
    for model in MODELS:
        for hist_eq in (False, True):
            index += 1
            config = RunConfig.from_dict({"data_dir": data_dir, "model": model, "hist_eq": hist_eq, "epochs": 5, "image_size": 128})
            run = db.create_run(config=config.to_dict(), config_hash=config.config_hash(), model=model,
                                name=f"{model}{'-histeq' if hist_eq else ''}", status="completed", sweep_id=sweep.id,
                                tags=["ablation"] if not hist_eq else ["ablation", "histeq"])
            best = None
            for epoch in range(1, 6):
                row = _curve(index + (4 if hist_eq else 0), epoch, 5)
                if best is None or row["val_acc"] >= best["val_acc"]:
                    best = {"epoch": epoch, **row}
                    db.add_epoch(run.id, epoch, epoch * 250, row, best=best)
                else:
                    db.add_epoch(run.id, epoch, epoch * 250, row)
            db.add_steps(run.id, [(s, "train_loss", round(0.7 * math.exp(-s / 400) + 0.05 * math.sin(s / 7), 4)) for s in range(1, 1251)])
            if not hist_eq:
                for offset, tta in ((-0.004, "five"), (-0.006, "ten")):
                    acc = round(best["val_acc"] + offset + 0.002 * (model == "resnet50"), 4)
                    db.add_evaluation(run.id, checkpoint="best", epoch=best["epoch"], split="valid", tta=tta, n=100,
                                      metrics={"acc": acc, "f1": acc - 0.002, "auc": 0.97, "sensitivity": 0.95, "specificity": 0.9,
                                               "confusion": [[29, 3], [4, 64]], "loss": 0.2})
            stamp = NOW - 3600 * (10 - index)
            db.update_run(run.id, created_at=stamp, started_at=stamp + 5, finished_at=stamp + 70,
                          device="cpu", host="lab-server", environment={"host": "lab-server", "device_name": "x86_64", "torch": "2.x"})

    def extra(name: str, status: str, epochs_done: int, **config_values) -> int:
        config = RunConfig.from_dict({"data_dir": data_dir, "epochs": 10, **config_values})
        run = db.create_run(config=config.to_dict(), config_hash=config.config_hash(), model=config.model, name=name, status=status)
        for epoch in range(1, epochs_done + 1):
            db.add_epoch(run.id, epoch, epoch * 100, _curve(9, epoch, 10), best={"epoch": epoch, "val_acc": _curve(9, epoch, 10)["val_acc"]})
        return run.id

    running = extra("resnet18-tencrop", "running", 3, eval_mode="ten")
    db.update_run(running, created_at=NOW - 600, started_at=NOW - 590, device="cpu", heartbeat_at=NOW - 1)
    queued = extra("resnet50-centercrop", "queued", 0, model="resnet50", center_crop=True)
    db.update_run(queued, created_at=NOW - 300)
    failed = extra("resnet152-big", "failed", 1, model="resnet152", image_size=450)
    db.update_run(failed, created_at=NOW - 200, error="worker killed by signal SIGKILL")
    return db
