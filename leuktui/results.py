"""Where each number of a run comes from, said once for ``show``, ``ls``, compare, the ablation
tables and the report: the value at the best epoch or the mean of the last k epochs, the
evaluation (checkpoint, epoch, views) that holds its interval and per-image predictions, and the
paired comparison of two runs on the same validation images. No textual, no torch; scipy and
statsmodels load only when a test is computed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from db.errors import UserError
from db.models import Epoch, Evaluation, Run
from db.vocabulary import EVAL_MODE_BY_KEY, epoch_metrics, metric

LAST_K = 5
SELECTIONS = ("best", "last")
SELECTION_HELP = "best: the value at the best epoch; last: the mean over the last k epochs (--last-k, default 5)"
# Config fields that say where or how fast a run ran, not what it computed: runs may differ in
# them and still share a comparison. The seed is the replicate's own field.
NOT_COMPARED = ("workers", "device", "channels_last", "compile", "test_csv")
REPLICATE_FIELD = "seed"


class ComparisonError(UserError):
    """A comparison that cannot be made as asked (no predictions, different images); one line."""


def view_of(run: Run) -> str:
    """The views a run validated with during training (its config's eval mode)."""
    return run.config.get("eval_mode", "single") or "single"


def view_label(mode: str) -> str:
    return EVAL_MODE_BY_KEY[mode].label if mode in EVAL_MODE_BY_KEY else mode


def best_evaluation(run: Run, evaluations: Sequence[Evaluation], mode: str | None = None) -> Evaluation | None:
    """The validation evaluation of ``run``'s best checkpoint *at its best epoch* in views ``mode``
    (default: the run's own), the worker's own record first, else the newest re-evaluation.
    Evaluations of an older best checkpoint (before a resume found a better epoch) never count."""
    mode = mode or view_of(run)
    pool = [e for e in evaluations if e.run_id == run.id and e.split == "valid" and e.checkpoint == "best"
            and e.tta == mode and run.best_epoch is not None and e.epoch == run.best_epoch]
    if not pool:
        return None
    return max(pool, key=lambda e: (e.origin == "training", e.id))


def last_k_mean(epochs: Sequence[Epoch], key: str, k: int = LAST_K) -> float | None:
    """The mean of metric ``key`` over the last ``k`` recorded epochs (fewer if the run has fewer)."""
    column = metric(key).epoch_column
    values = [getattr(e, column) for e in sorted(epochs, key=lambda e: e.epoch)[-k:]]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def best_value(run: Run, key: str) -> float | None:
    return epoch_metrics(run.summary or {}).get(metric(key).key)


def run_value(run: Run, key: str, *, selection: str = "best", epochs: Sequence[Epoch] = (), k: int = LAST_K) -> float | None:
    """A run's number for ``key`` under ``selection``."""
    if selection == "last":
        return last_k_mean(epochs, key, k)
    return best_value(run, key)


def config_diff(configs: dict[int, dict]) -> list[tuple[str, list]]:
    """Fields whose values differ between the runs, each with the values in run order."""
    keys = sorted({key for config in configs.values() for key in config})
    rows = []
    for key in keys:
        values = [config.get(key) for config in configs.values()]
        if len({repr(v) for v in values}) > 1:
            rows.append((key, values))
    return rows


def correct_by_image(predictions: Sequence[tuple[str, float, int, int | None]]) -> dict[str, bool]:
    """``{image: predicted == label}`` of the labelled predictions."""
    return {path: predicted == label for path, _, predicted, label in predictions if label is not None}


# -- two runs on the same images ------------------------------------------------------------------


@dataclass
class Side:
    """One side of a paired comparison: a run, or an ensemble of runs (mean P(ALL))."""

    runs: list[int]
    evaluations: list[Evaluation]
    replicates: bool = False  # seed replicates (RUN,RUN,...): their accuracies, not their mean prediction

    @property
    def label(self) -> str:
        return ("," if self.replicates else "+").join(map(str, self.runs))

    def describe(self) -> str:
        views = ", ".join(dict.fromkeys(f"{view_label(e.tta)} of epoch {e.epoch}" for e in self.evaluations))
        if self.replicates:
            return f"replicates {self.label} ({views})"
        return f"{'ensemble ' if len(self.runs) > 1 else ''}run {self.label} ({views})"

    @property
    def key(self) -> int | list[int]:
        return self.runs[0] if len(self.runs) == 1 else self.runs


def _labels(side: Side, loaded: dict[int, list[tuple[str, float, int, int | None]]]) -> dict[str, int]:
    return {path: label for e in side.evaluations for path, _, _, label in loaded[e.id] if label is not None}


def _side_predictions(side: Side, loaded: dict[int, list[tuple[str, float, int, int | None]]]) -> dict[str, bool]:
    if len(side.evaluations) == 1:
        return correct_by_image(loaded[side.evaluations[0].id])
    probabilities: dict[str, list[float]] = {}
    labels: dict[str, int] = {}
    for evaluation in side.evaluations:
        for path, probability, _, label in loaded[evaluation.id]:
            if label is None:
                continue
            probabilities.setdefault(path, []).append(probability)
            labels[path] = label
    count = len(side.evaluations)
    return {path: int(sum(ps) / count >= 0.5) == labels[path] for path, ps in probabilities.items() if len(ps) == count}


class Replicates(list):
    """A compare spec of seed replicates (``3,4,5``), as opposed to an ensemble (``3+4+5``)."""


def sides_of(db: Any, specs: Sequence[Sequence[int]], mode: str | None = None) -> list[Side]:
    """A ``Side`` per spec (one run id, or several for an ensemble), each run's evaluation at its
    best epoch; a run without recorded validation predictions there is one clear line."""
    run_ids = sorted({run_id for spec in specs for run_id in spec})
    runs = {run.id: run for run in db.runs_by_id(run_ids)}
    for run_id in run_ids:
        if run_id not in runs:
            raise ComparisonError(f"run {run_id}: no such run")
    evaluations = db.evaluations_of(run_ids)
    sides = []
    for spec in specs:
        chosen = []
        for run_id in spec:
            run = runs[run_id]
            if (run.config or {}).get("fit_on") == "train+valid":
                raise ComparisonError(f"run {run_id} is a final fit (trained on train + valid): it has no validation score to compare")
            if run.best_epoch is None:
                raise ComparisonError(f"run {run_id}: no epochs recorded yet (status {run.status}); nothing to compare")
            evaluation = best_evaluation(run, evaluations, mode)
            if evaluation is None:
                views = mode or view_of(run)
                raise ComparisonError(
                    f"run {run_id}: no recorded validation predictions of its best epoch ({run.best_epoch}) in "
                    f"{view_label(views)}; record them with `leuktui eval {run_id} --tta {views}`"
                )
            chosen.append(evaluation)
        sides.append(Side(list(spec), chosen, replicates=isinstance(spec, Replicates)))
    for side in sides:
        if side.replicates:
            configs = {repr(sorted((k, repr(v)) for k, v in runs[r].config.items() if k != REPLICATE_FIELD)) for r in side.runs}
            seeds = [runs[r].config.get(REPLICATE_FIELD) for r in side.runs]
            if len(configs) > 1:
                raise ComparisonError(f"replicates {side.label}: the runs differ in more than the seed; replicates share every other field")
            if len(set(seeds)) != len(seeds):
                raise ComparisonError(f"replicates {side.label}: two runs have the same seed; replicates differ in it")
    grouped = [set(side.runs) for side in sides if side.replicates]
    if any(a & b for i, a in enumerate(grouped) for b in grouped[i + 1:]):
        raise ComparisonError("a run is in two groups of replicates; Welch's test compares independent groups")
    datasets = {runs[run_id].config.get("data_dir") for run_id in run_ids}
    if len(datasets) > 1:
        raise ComparisonError(f"runs {', '.join(map(str, run_ids))} validate on different datasets ({', '.join(sorted(map(str, datasets)))}): "
                              "a paired test needs the same images")
    return sides


def _replicate_pair(a: Side, b: Side, loaded) -> dict[str, Any]:
    """Two groups of seed replicates: their accuracies' means, Welch's test and its interval of the
    difference of the means."""
    from engine.stats import LEVEL, replicates, welch_p

    def accuracies(side: Side) -> list[float]:
        rights = [correct_by_image(loaded[e.id]) for e in side.evaluations]
        return [sum(right.values()) / max(1, len(right)) for right in rights]

    acc_a, acc_b = accuracies(a), accuracies(b)
    if min(len(acc_a), len(acc_b)) < 2:
        raise ComparisonError(f"{a.describe()} and {b.describe()}: replicates need two runs or more on each side (RUN,RUN,...)")
    p = welch_p(acc_a, acc_b)
    interval = None
    if p is not None:
        from scipy.stats import ttest_ind

        bounds = ttest_ind(acc_a, acc_b, equal_var=False).confidence_interval(LEVEL)
        interval = [max(-1.0, float(bounds.low)), min(1.0, float(bounds.high))]  # a difference of accuracies
    ra, rb = replicates(acc_a), replicates(acc_b)
    return {
        "a": a.key, "b": b.key, "a_source": a.describe(), "b_source": b.describe(), "test": "welch",
        "n": [len(acc_a), len(acc_b)], "left_out": 0, "table": None, "mcnemar_p": None, "p": p,
        "acc_a": ra.mean, "acc_b": rb.mean, "std_a": ra.std, "std_b": rb.std, "values_a": acc_a, "values_b": acc_b,
        "diff": ra.mean - rb.mean, "diff_ci": interval, "level": LEVEL,
    }


def compare_pairs(db: Any, specs: Sequence[Sequence[int]], mode: str | None = None) -> list[dict[str, Any]]:
    """Every pair of ``specs``. Runs and ensembles on the images both sides predicted: the right/
    wrong table, the exact McNemar p-value, and the paired-bootstrap interval of the accuracy
    difference (a - b). Seed replicates (``Replicates`` specs) against each other: Welch's test on
    their accuracies and its interval of the difference of the means."""
    from engine.stats import ALPHA, holm, paired_comparison

    sides = sides_of(db, specs, mode)
    loaded = db.predictions_of([e.id for side in sides for e in side.evaluations])
    correct = [_side_predictions(side, loaded) for side in sides]
    labels = [_labels(side, loaded) for side in sides]
    pairs = []
    for (i, a), (j, b) in itertools.combinations(enumerate(sides), 2):
        if a.replicates or b.replicates:
            if not (a.replicates and b.replicates):
                raise ComparisonError(f"{a.describe()} against {b.describe()}: compare replicates with replicates (RUN,RUN,... on both sides)")
            pairs.append(_replicate_pair(a, b, loaded))
            continue
        shared = sorted(set(correct[i]) & set(correct[j]))
        if not shared:
            raise ComparisonError(f"{a.describe()} and {b.describe()} share no validation images")
        if any(labels[i][p] != labels[j][p] for p in shared):
            raise ComparisonError(f"{a.describe()} and {b.describe()} label the same images differently: not the same validation set")
        extra = len(set(correct[i]) ^ set(correct[j]))
        result = paired_comparison([correct[i][p] for p in shared], [correct[j][p] for p in shared])
        pairs.append({
            "a": a.key, "b": b.key,
            "a_source": a.describe(), "b_source": b.describe(), "test": "mcnemar",
            "n": result.n, "left_out": extra,
            "table": result.table,
            "acc_a": result.acc_a, "acc_b": result.acc_b,
            "mcnemar_p": result.mcnemar_p, "p": result.mcnemar_p,
            "diff": result.diff, "diff_ci": result.diff_ci,
            "significant": result.significant,
            "level": result.level, "resamples": result.resamples, "seed": result.seed,
        })
    # Several pairs are several tests: a pair is called significant only under Holm's adjustment.
    testable = [pair for pair in pairs if pair["p"] is not None]
    for pair in pairs:
        pair["significant"] = False
        pair["adjustment"] = None
    for pair, rejected in zip(testable, holm([pair["p"] for pair in testable], ALPHA), strict=True):
        pair["significant"] = rejected
        pair["adjustment"] = f"holm over {len(testable)} pairs" if len(testable) > 1 else None
    return pairs


def interval_text(key: str, interval: Sequence[float] | None) -> str:
    """``[88.10%, 94.20%]`` in the metric's own format, or "" without one."""
    if not interval:
        return ""
    chosen = metric(key)
    return f"[{chosen.format(interval[0])}, {chosen.format(interval[1])}]"
