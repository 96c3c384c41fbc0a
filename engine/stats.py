"""The uncertainty of the numbers: bootstrap intervals of a run's validation metrics, paired tests
between two models on the same images, and the summary of seed replicates.

No torch. numpy here; scipy and statsmodels load inside the functions that need them, so the app
and the CLI start without them. Every resampling uses a fixed seed that is recorded beside the
interval, so the same predictions always give the same interval.

- ``metric_intervals``: a percentile bootstrap (``scipy.stats.bootstrap``, images resampled with
  their labels) of every registered metric at once. The statistics are vectorised twins of the
  scikit-learn functions the registry names; a test holds them equal on the full sample.
- ``paired_comparison``: the 2x2 table of right/wrong of two models on the same images, the exact
  McNemar p-value (``statsmodels``), and a paired bootstrap interval of the accuracy difference.
- ``replicates``: mean, sample std, n and the t-interval of runs that differ only in seed;
  ``welch_p`` compares two such groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from db.vocabulary import METRICS

LEVEL = 0.95
RESAMPLES = 1000
SEED = 2019  # the year of the C-NMC challenge; any fixed number would do
METHOD = "percentile"
ALPHA = 0.05  # a difference is called significant below this p-value (Holm-adjusted in a row)


def _rates(labels: np.ndarray, predicted: np.ndarray, axis: int) -> tuple[np.ndarray, ...]:
    positive = labels == 1
    hit = predicted == 1
    tp = np.sum(positive & hit, axis=axis).astype(np.float64)
    fn = np.sum(positive & ~hit, axis=axis).astype(np.float64)
    fp = np.sum(~positive & hit, axis=axis).astype(np.float64)
    tn = np.sum(~positive & ~hit, axis=axis).astype(np.float64)
    return tp, fn, fp, tn


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """``top / bottom`` with 0 where ``bottom`` is 0 (scikit-learn's ``zero_division=0``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), 0.0)


def metric_values(labels: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray, axis: int = -1) -> dict[str, np.ndarray]:
    """Every registered metric along ``axis`` (one value per resample), as scikit-learn computes
    it: accuracy, weighted F1, ROC AUC (average ranks for ties), recalls of each class, MCC,
    balanced accuracy and log loss (probabilities clipped to machine epsilon)."""
    from scipy.stats import rankdata

    labels = np.asarray(labels)
    tp, fn, fp, tn = _rates(labels, np.asarray(predicted), axis)
    n = tp + fn + fp + tn
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    f1_all = _ratio(2 * tp, 2 * tp + fp + fn)
    f1_hem = _ratio(2 * tn, 2 * tn + fn + fp)
    support_all, support_hem = tp + fn, tn + fp
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    # Balanced accuracy averages the recalls of the classes present (one class: its recall).
    present = (support_all > 0).astype(np.float64) + (support_hem > 0)
    balanced = _ratio(np.where(support_all > 0, sensitivity, 0) + np.where(support_hem > 0, specificity, 0), present)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    ranks = rankdata(probabilities, axis=axis)
    n_all, n_hem = support_all, support_hem
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (np.sum(np.where(labels == 1, ranks, 0.0), axis=axis) - n_all * (n_all + 1) / 2) / (n_all * n_hem)
    auc = np.where((n_all > 0) & (n_hem > 0), auc, np.nan)
    eps = np.finfo(np.float64).eps
    clipped = np.clip(probabilities, eps, 1 - eps)
    loss = -np.mean(np.where(labels == 1, np.log(clipped), np.log1p(-clipped)), axis=axis)
    values = {
        "acc": _ratio(tp + tn, n),
        "f1": _ratio(f1_all * support_all + f1_hem * support_hem, n),
        "auc": auc,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "mcc": _ratio(tp * tn - fp * fn, denominator),
        "balanced_acc": balanced,
        "loss": loss,
    }
    missing = {m.key for m in METRICS} - set(values)
    if missing:  # a metric added to the registry needs its twin here
        raise NotImplementedError(f"no bootstrap statistic for {', '.join(sorted(missing))}")
    return values


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def metric_intervals(
    labels: Sequence[int], probabilities: Sequence[float], predicted: Sequence[int] | None = None, *,
    resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL,
) -> dict[str, Any]:
    """The bootstrap interval of every metric over these predictions, and how it was made:
    ``{"method", "level", "resamples", "seed", "n", "metrics": {key: [low, high] | None}}``.
    A metric undefined on some resamples (AUC when one drew a single class) has no interval."""
    import warnings

    from scipy.stats import bootstrap

    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    predicted = (probabilities >= 0.5).astype(np.int64) if predicted is None else np.asarray(predicted, dtype=np.int64)
    keys = [m.key for m in METRICS]
    record: dict[str, Any] = {"method": f"bootstrap-{METHOD}", "level": level, "resamples": resamples, "seed": seed,
                              "n": int(labels.size), "metrics": {key: None for key in keys}}
    if labels.size < 2:
        return record

    def statistic(y, p, q, axis=-1):
        values = metric_values(y, p, q, axis=axis)
        return np.stack([values[key] for key in keys])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate resamples: the interval says it (None)
        result = bootstrap((labels, predicted, probabilities), statistic, paired=True, vectorized=True, n_resamples=resamples,
                           confidence_level=level, method=METHOD, rng=np.random.default_rng(seed), batch=250)
    low, high = np.atleast_1d(result.confidence_interval.low), np.atleast_1d(result.confidence_interval.high)
    for key, lo, hi in zip(keys, low, high, strict=True):
        lo, hi = _finite(lo), _finite(hi)
        record["metrics"][key] = [lo, hi] if lo is not None and hi is not None else None
    return record


# -- two models on the same images ----------------------------------------------------------------


@dataclass
class Paired:
    """Two models' predictions on the same ``n`` images."""

    n: int
    table: list[list[int]]  # [[both right, only a right], [only b right, both wrong]]
    acc_a: float
    acc_b: float
    mcnemar_p: float
    diff: float  # acc_a - acc_b
    diff_ci: list[float]
    level: float = LEVEL
    resamples: int = RESAMPLES
    seed: int = SEED

    @property
    def significant(self) -> bool:
        return self.mcnemar_p < ALPHA


def mcnemar_p(table: Sequence[Sequence[int]]) -> float:
    """The exact (binomial) McNemar p-value of a 2x2 right/wrong table, by statsmodels."""
    from statsmodels.stats.contingency_tables import mcnemar

    return float(mcnemar(np.asarray(table, dtype=np.int64), exact=True).pvalue)


def paired_comparison(correct_a: Sequence[bool], correct_b: Sequence[bool], *, resamples: int = RESAMPLES, seed: int = SEED,
                      level: float = LEVEL) -> Paired:
    """The paired comparison of two models from whether each got each image right."""
    import warnings

    from scipy.stats import bootstrap

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired predictions need the same, non-empty set of images")
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    difference = a.astype(np.float64) - b.astype(np.float64)
    diff = float(difference.mean())
    if np.all(difference == difference[0]):
        interval = [diff, diff]  # no resample can differ
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = bootstrap((difference,), np.mean, vectorized=True, n_resamples=resamples, confidence_level=level,
                               method=METHOD, rng=np.random.default_rng(seed))
        interval = [float(result.confidence_interval.low), float(result.confidence_interval.high)]
    return Paired(int(a.size), table, float(a.mean()), float(b.mean()), mcnemar_p(table), diff, interval, level, resamples, seed)


def paired_metric_p(key: str, labels: Sequence[int], a: tuple[Sequence[float], Sequence[int]], b: tuple[Sequence[float], Sequence[int]],
                    *, resamples: int = RESAMPLES, seed: int = SEED) -> float | None:
    """The two-sided paired-bootstrap p-value of the difference in metric ``key`` between two
    models on the same images (``a`` and ``b``: each one's P(ALL) and predicted labels): the
    images are resampled together, and p is twice the smaller share of resampled differences
    on either side of zero (at least ``1 / (resamples + 1)``). None when it is undefined."""
    y = np.asarray(labels, dtype=np.int64)
    index = np.random.default_rng(seed).integers(0, y.size, (resamples, y.size))
    prob_a, pred_a = (np.asarray(v) for v in a)
    prob_b, pred_b = (np.asarray(v) for v in b)
    diff = metric_values(y[index], pred_a[index], prob_a[index])[key] - metric_values(y[index], pred_b[index], prob_b[index])[key]
    diff = diff[np.isfinite(diff)]
    if diff.size < resamples // 2:
        return None
    share = min(np.mean(diff <= 0), np.mean(diff >= 0))
    return float(min(1.0, max(2 * share, 1 / (resamples + 1))))


def paired_t_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """The paired t-test p-value of the same runs measured two ways (None without spread)."""
    if len(a) < 2 or len(a) != len(b):
        return None
    difference = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if np.std(difference) == 0:
        return None
    from scipy.stats import ttest_rel

    return float(ttest_rel(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).pvalue)


# -- seed replicates ------------------------------------------------------------------------------


@dataclass
class Replicates:
    values: list[float]
    mean: float
    std: float | None  # the sample standard deviation (n - 1); None for one run
    ci: list[float] | None  # the t-interval of the mean; None for one run

    @property
    def n(self) -> int:
        return len(self.values)


def replicates(values: Sequence[float], level: float = LEVEL) -> Replicates:
    """Mean, std and the ``level`` t-interval of the mean of replicate runs' values."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("no values")
    mean = float(np.mean(data))
    if len(data) < 2:
        return Replicates(data, mean, None, None)
    from scipy.stats import t

    std = float(np.std(data, ddof=1))
    half = float(t.ppf((1 + level) / 2, len(data) - 1)) * std / math.sqrt(len(data))
    return Replicates(data, mean, std, [mean - half, mean + half])


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's t-test p-value of two groups of replicates (None when either has one run, or
    neither group varies)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if np.std(a) == 0 and np.std(b) == 0:
        return None  # no spread to test against
    from scipy.stats import ttest_ind

    return float(ttest_ind(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), equal_var=False).pvalue)


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Which of the hypotheses Holm's step-down procedure rejects at family-wise ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected
