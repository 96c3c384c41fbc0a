"""Metrics: every registered metric is scikit-learn's, and agrees with the confusion matrix."""

import math

import numpy as np
import pytest

from db.vocabulary import METRICS
from engine.metrics import classification_metrics


def from_confusion(confusion):
    """The metrics a confusion matrix implies, written out by hand."""
    (tn, fp), (fn, tp) = confusion
    n = tn + fp + fn + tp
    sens = tp / (tp + fn) if tp + fn else 0.0
    spec = tn / (tn + fp) if tn + fp else 0.0
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    f1_all = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    f1_hem = 2 * tn / (2 * tn + fn + fp) if tn else 0.0
    return {
        "acc": (tp + tn) / n,
        "sensitivity": sens,
        "specificity": spec,
        "balanced_acc": (sens + spec) / 2,
        "mcc": (tp * tn - fp * fn) / denominator if denominator else 0.0,
        "f1": (f1_all * (tp + fn) + f1_hem * (tn + fp)) / n,
    }


@pytest.mark.parametrize("seed", range(5))
def test_threshold_metrics_agree_with_the_confusion_matrix(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(301) < 0.68).astype(int)
    probabilities = np.round(np.clip(labels * 0.3 + rng.random(301) * 0.7, 0, 1), 1)
    ours = classification_metrics(labels, probabilities)
    predicted = probabilities >= 0.5
    assert ours["confusion"] == [
        [int(((labels == 0) & ~predicted).sum()), int(((labels == 0) & predicted).sum())],
        [int(((labels == 1) & ~predicted).sum()), int(((labels == 1) & predicted).sum())],
    ]
    for key, value in from_confusion(ours["confusion"]).items():
        assert ours[key] == pytest.approx(value), key
    assert set(ours) == {m.key for m in METRICS} | {"confusion", "n"}


def test_ranking_metrics():
    labels = np.array([0, 0, 1, 1])
    # Ties count half: three of the four (HEM, ALL) pairs are ordered rightly and one is tied.
    ours = classification_metrics(labels, np.array([0.1, 0.6, 0.6, 0.9]))
    assert ours["auc"] == pytest.approx((3 + 0.5) / 4)
    expected_loss = -np.mean(np.log([0.9, 0.4, 0.6, 0.9]))
    assert ours["loss"] == pytest.approx(expected_loss)


def test_degenerate_inputs():
    one_class = classification_metrics(np.ones(4, dtype=int), np.linspace(0, 1, 4))
    assert one_class["auc"] is None
    perfect = classification_metrics(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.8]))
    assert perfect["acc"] == 1.0 and perfect["auc"] == 1.0 and perfect["mcc"] == 1.0
    assert perfect["confusion"] == [[1, 0], [0, 2]]
    all_wrong = classification_metrics(np.array([1, 1]), np.array([0.0, 0.2]))
    assert all_wrong["sensitivity"] == 0.0 and all_wrong["specificity"] == 0.0 and all_wrong["f1"] == 0.0
