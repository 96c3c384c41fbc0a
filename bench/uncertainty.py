"""What the numbers' uncertainty costs: the worker's record of a best epoch (bootstrap intervals of
every metric and the per-image predictions), and an ablation table's verdicts.

Figures, each the median of --repeat tries:

- ``intervals``: ``engine.stats.metric_intervals`` on N validation predictions (1000 resamples,
  every registered metric at once, vectorised), against the reference: the same percentile
  bootstrap computed the plain way, scikit-learn's functions called on each resample (the
  numbers it must equal);
- ``record``: ``Database.add_evaluation`` of those N predictions with their intervals (SQLite,
  one transaction), the worker's extra write at each new best epoch;
- ``ablation``: ``leuktui.ablation.build`` over R runs of a 3 x 2 x 2 grid (model, hist-eq,
  centre crop): exact McNemar verdicts between single runs, their predictions read from the
  database (or Welch's tests, with two seeds a cell).

    python bench/uncertainty.py [--n 2000] [--runs 12] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from db import Database, Workspace  # noqa: E402
from db.vocabulary import COMPLETED, METRICS, RUNNING  # noqa: E402
from engine.config import RunConfig  # noqa: E402
from engine.metrics import classification_metrics  # noqa: E402
from engine.stats import LEVEL, RESAMPLES, SEED, metric_intervals  # noqa: E402


def timed(function, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def plain_bootstrap(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, list[float]]:
    """The reference: resample the images, call scikit-learn on each resample, take percentiles."""
    rng = np.random.default_rng(SEED)
    values: dict[str, list[float]] = {m.key: [] for m in METRICS}
    for _ in range(RESAMPLES):
        index = rng.integers(0, len(labels), len(labels))
        metrics = classification_metrics(labels[index], probabilities[index])
        for m in METRICS:
            values[m.key].append(np.nan if metrics[m.key] is None else metrics[m.key])
    tail = (1 - LEVEL) / 2 * 100
    return {key: [float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail))] for key, v in values.items()}


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    labels = (np.random.default_rng(seed).random(n) < 0.68).astype(np.int64)  # about the lab's share of ALL images
    return labels, predictions_for(labels, seed)


def predictions_for(labels: np.ndarray, seed: int) -> np.ndarray:
    """One model's P(ALL) on these images."""
    return np.clip(labels * 0.35 + np.random.default_rng(seed + 1000).random(len(labels)) * 0.65, 0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="validation images")
    parser.add_argument("--runs", type=int, default=12, help="runs in the ablation grid (12: one per cell; 24: two seeds each)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    labels, probabilities = sample(args.n, 0)

    metric_intervals(labels[:50], probabilities[:50])  # imports and first-call costs out of the figures
    fast, intervals = timed(lambda: metric_intervals(labels, probabilities), args.repeat)
    slow, reference = timed(lambda: plain_bootstrap(labels, probabilities), 1)
    gap = max(abs(a - b) for key in reference for a, b in zip(intervals["metrics"][key], reference[key], strict=True))
    print(f"intervals   n={args.n}, {RESAMPLES} resamples, {len(METRICS)} metrics")
    print(f"  engine.stats.metric_intervals   {fast * 1000:8.1f} ms")
    print(f"  scikit-learn on each resample   {slow * 1000:8.1f} ms   (reference)")
    print(f"  ratio                           {slow / fast:8.1f}x quicker; largest difference between their bounds {gap:.1e} "
          "(the same seed draws the same resamples)")

    with tempfile.TemporaryDirectory() as folder:
        workspace = Workspace(Path(folder) / "home").ensure()
        db = Database(workspace.db_url)
        config = RunConfig.from_dict({"data_dir": "/data/lab3"})
        run = db.create_run(config=config.to_dict(), config_hash=config.config_hash(), model="resnet18", name="r", status=RUNNING)
        metrics = classification_metrics(labels, probabilities)
        rows = [(f"valid/{i}.bmp", float(p), int(p >= 0.5), int(y)) for i, (p, y) in enumerate(zip(probabilities, labels, strict=True))]
        record, _ = timed(lambda: db.add_evaluation(run.id, checkpoint="best", epoch=1, split="valid", tta="single", metrics=metrics,
                                                    n=args.n, predictions=rows, intervals=intervals, origin="training", replaces=True),
                          args.repeat)
        print(f"record      add_evaluation of {args.n} predictions + intervals, SQLite: {record * 1000:.1f} ms")
        print(f"  worker's extra cost at a new best epoch: {(fast + record) * 1000:.0f} ms")

        from leuktui import ablation

        models = ["resnet18", "resnet50", "resnet152"]
        factors = [(model, hist_eq, crop) for model in models for hist_eq in (False, True) for crop in (False, True)]
        for index in range(args.runs):
            model, hist_eq, crop = factors[index % len(factors)]
            values = {"data_dir": "/data/lab3", "model": model, "hist_eq": hist_eq, "center_crop": crop, "epochs": 2,
                      "seed": index // len(factors)}
            config = RunConfig.from_dict(values)
            made = db.create_run(config=config.to_dict(), config_hash=config.config_hash(), model=model, name=f"r{index}", status=COMPLETED)
            run_labels, run_probabilities = labels, predictions_for(labels, index)
            at_best = classification_metrics(run_labels, run_probabilities)
            db.add_epoch(made.id, 1, 10, {**at_best, "val_acc": at_best["acc"], "val_loss": at_best["loss"]},
                         best={"epoch": 1, **at_best, "val_acc": at_best["acc"], "val_loss": at_best["loss"]})
            db.add_evaluation(made.id, checkpoint="best", epoch=1, split="valid", tta="single", metrics=at_best, n=args.n,
                              predictions=[(f"valid/{i}.bmp", float(p), int(p >= 0.5), int(y))
                                           for i, (p, y) in enumerate(zip(run_probabilities, run_labels, strict=True))],
                              origin="training")
        runs = [r for r in db.list_runs() if r.name.startswith("r") and r.name != "r"]
        evaluations = db.evaluations_of([r.id for r in runs])
        built, tables = timed(lambda: ablation.build(runs, evaluations, "model", "hist_eq", "acc", load_predictions=db.predictions_of),
                              args.repeat)
        tests = sum(len(v.tests) for t in tables for v in t.verdicts.values())
        print(f"ablation    {len(runs)} runs -> {len(tables)} tables, {tests} tests, predictions read from SQLite: {built * 1000:.0f} ms")
        db.close()


if __name__ == "__main__":
    main()
