"""Binary classification metrics for ALL (1) vs HEM (0), from labels and probabilities.

numpy only, so scoring a submission never imports torch. Results agree with scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np


def confusion(labels: np.ndarray, predicted: np.ndarray) -> list[list[int]]:
    """``[[tn, fp], [fn, tp]]``: rows are the true class, columns the predicted one."""
    labels = np.asarray(labels, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    counts = np.bincount(labels * 2 + predicted, minlength=4)
    return [[int(counts[0]), int(counts[1])], [int(counts[2]), int(counts[3])]]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); NaN for one class."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average the ranks of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    rank_sum = ranks[labels == 1].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict:
    """Accuracy, sensitivity, specificity, weighted F1, ROC AUC and the confusion matrix.

    ``probabilities`` is P(ALL) per image; an image is predicted ALL when it is >= ``threshold``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = (probabilities >= threshold).astype(np.int64)
    (tn, fp), (fn, tp) = confusion(labels, predicted)
    total = tn + fp + fn + tp
    f1_all = _ratio(2 * tp, 2 * tp + fp + fn)
    f1_hem = _ratio(2 * tn, 2 * tn + fn + fp)
    support_all, support_hem = tp + fn, tn + fp
    return {
        "acc": _ratio(tp + tn, total),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(f1_all * support_all + f1_hem * support_hem, total),
        "auc": roc_auc(labels, probabilities),
        "confusion": [[tn, fp], [fn, tp]],
        "n": total,
    }


def clean_float(value: float | None) -> float | None:
    """NaN and infinities become None so they store and print as "missing"."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
