"""Binary classification metrics for ALL (1) vs HEM (0), computed with scikit-learn.

Every metric of the registry (``db.vocabulary.METRICS``) names the scikit-learn function that
computes it, so the numbers recorded for epochs and evaluations equal scikit-learn's by
construction. scikit-learn loads on the first call, never when the CLI or the app starts.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from db.vocabulary import METRICS, Metric

THRESHOLD = 0.5


def _compute(metric: Metric, labels: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray) -> float | None:
    from sklearn import metrics as sk

    function = getattr(sk, metric.sklearn)
    values = probabilities if metric.on == "probability" else predicted
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one class present: scikit-learn warns, the value says it
            return clean_float(float(function(labels, values, **dict(metric.options))))
    except ValueError:
        return None  # undefined here, e.g. ROC AUC with only one class in the labels


def confusion(labels: np.ndarray, predicted: np.ndarray) -> list[list[int]]:
    """``[[tn, fp], [fn, tp]]``: rows are the true class, columns the predicted one."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, predicted, labels=[0, 1]).tolist()


def classification_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    *,
    predicted: np.ndarray | None = None,
    threshold: float = THRESHOLD,
) -> dict[str, Any]:
    """Every registered metric, the confusion matrix and ``n``.

    ``probabilities`` is P(ALL) per image; an image is predicted ALL when it is >= ``threshold``,
    unless ``predicted`` gives the labels (a submission file's). A metric undefined on these
    labels (AUC with one class) is None.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    if predicted is None:
        predicted = (probabilities >= threshold).astype(np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    out: dict[str, Any] = {metric.key: _compute(metric, labels, predicted, probabilities) for metric in METRICS}
    out["confusion"] = confusion(labels, predicted)
    out["n"] = int(labels.size)
    return out


def clean_float(value: float | None) -> float | None:
    """NaN and infinities become None so they store and print as "missing"."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
