"""Report build time: `leuktui report` on 10 runs of 50 epochs each, seeded into a temporary
SQLite workspace, with a small synthetic dataset for the preprocessing examples.

    .venv/bin/python bench/report_build.py              # 10 runs x 50 epochs
    .venv/bin/python bench/report_build.py --runs 20 --epochs 300

Prints the total time of a fresh process's first report (imports included) and the share spent
importing (matplotlib, pandas, and the pipeline for the examples), drawing and saving figures,
querying and writing. Target: under 15 s for 10 x 50.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import Database, Workspace  # noqa: E402
from db.vocabulary import COMPLETED
from engine.config import RunConfig  # noqa: E402

MODELS = ("resnet18", "resnet50", "resnet152")
VALID_IMAGES = 400


def seed(db: Database, data_dir: Path, runs: int, epochs: int) -> list[int]:
    """``runs`` completed runs (models x hist_eq x centre crop), each with ``epochs`` epoch rows,
    five-/ten-crop evaluations and a single-view evaluation with per-image predictions."""
    rng = random.Random(0)
    sweep = db.create_sweep("bench", {"epochs": epochs}, {"model": list(MODELS), "hist_eq": [False, True]})
    ids = []
    for index in range(runs):
        config = RunConfig.from_dict({
            "data_dir": str(data_dir), "model": MODELS[index % 3], "hist_eq": index % 2 == 1,
            "center_crop": index % 4 == 3, "epochs": epochs, "image_size": 128,
        })
        run = db.create_run(config=config.to_dict(), config_hash=config.config_hash(), model=config.model,
                            name=f"{config.model}-{index}", status=COMPLETED, sweep_id=sweep.id)
        best = None
        for epoch in range(1, epochs + 1):
            progress = epoch / epochs
            acc = min(0.985, 0.78 + 0.17 * (1 - math.exp(-4 * progress)) - 0.004 * index + rng.uniform(-0.01, 0.01))
            tp, tn = round(272 * (acc + 0.01)), round(128 * (acc - 0.02))
            row = {
                "train_loss": 0.6 * math.exp(-3 * progress) + 0.05, "train_acc": min(0.995, acc + 0.02),
                "val_loss": 0.55 * math.exp(-2 * progress) + 0.12, "val_acc": acc, "sensitivity": tp / 272,
                "specificity": tn / 128, "f1": acc - 0.003, "auc": min(0.999, acc + 0.02), "mcc": 2 * acc - 1.1,
                "balanced_acc": acc - 0.01, "confusion": [[tn, 128 - tn], [272 - tp, tp]], "lr": 1e-3,
                "seconds": 30.0, "images_per_s": 300.0,
            }
            if best is None or acc > best["val_acc"]:
                best = {"epoch": epoch, **{k: row[k] for k in ("val_loss", "val_acc", "sensitivity", "specificity", "f1", "auc", "confusion")}}
                db.add_epoch(run.id, epoch, epoch * 100, row, best=best)
            else:
                db.add_epoch(run.id, epoch, epoch * 100, row)
        for tta in ("five", "ten"):
            db.add_evaluation(run.id, checkpoint="best", epoch=best["epoch"], split="valid", tta=tta, n=VALID_IMAGES,
                              metrics={"acc": best["val_acc"] - 0.003, "f1": best["f1"], "auc": best["auc"]})
        labels = [1] * 272 + [0] * 128
        predictions = [
            (f"valid/{i}.bmp", p, int(p >= 0.5), y)
            for i, y in enumerate(labels)
            for p in [min(1.0, max(0.0, rng.gauss(0.8 if y else 0.2, 0.18)))]
        ]
        db.add_evaluation(run.id, checkpoint="best", epoch=best["epoch"], split="valid", tta="single", n=VALID_IMAGES,
                          metrics={"acc": best["val_acc"]}, predictions=predictions)
        db.update_run(run.id, started_at=time.time() - 3600, finished_at=time.time(),
                      environment={"host": "bench", "device": "cpu", "device_name": "x86_64", "precision": "bf16", "torch": "2.x"})
        ids.append(run.id)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    from engine.synth import make_dataset

    with tempfile.TemporaryDirectory() as temp:
        data_dir = make_dataset(Path(temp) / "data", n_train=24, n_valid=8, n_test=8, size=128, seed=0)
        workspace = Workspace(Path(temp) / "home").ensure()
        db = Database(workspace.db_url)
        run_ids = seed(db, data_dir, args.runs, args.epochs)
        from leuktui.report.build import build_report
        from leuktui.report.data import select_runs

        runs = select_runs(db, run_ids)
        result = build_report(db, workspace, runs, Path(temp) / "report")
        size = sum(f.stat().st_size for f in (Path(temp) / "report").rglob("*") if f.is_file())
        timings = result.timings
        total = timings["total"]
        print(f"report of {args.runs} runs x {args.epochs} epochs: {len(result.figures)} figures, "
              f"{len(result.tables)} tables, {size / 1e6:.1f} MB")
        print(f"total {total:.2f} s (target < 15 s)")
        for key in ("import", "draw", "query", "write"):
            print(f"  {key:<7} {timings[key]:6.2f} s  {100 * timings[key] / total:5.1f}%")
        other = total - sum(timings[k] for k in ("import", "draw", "query", "write"))
        print(f"  {'other':<7} {other:6.2f} s  {100 * other / total:5.1f}%")
        db.close()


if __name__ == "__main__":
    main()
