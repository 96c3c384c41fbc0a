"""The numbers behind every interval and test: the vectorised metrics equal scikit-learn's, the
intervals are reproducible, the paired test is statsmodels' own, replicates are summarised as
scipy does."""

from __future__ import annotations

import numpy as np
import pytest

from db.vocabulary import METRICS
from engine import stats
from engine.metrics import classification_metrics


def _sample(seed: int, n: int = 120, skill: float = 0.3):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    probabilities = np.clip(labels * skill + rng.random(n) * (1 - skill), 0, 1).round(2)  # rounded: ties in the ranks
    probabilities[:3] = [0.0, 1.0, 0.5]  # the clipped ends and the threshold itself
    return labels, probabilities


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_bootstrap_statistics_are_scikit_learns_metrics(seed):
    labels, probabilities = _sample(seed)
    expected = classification_metrics(labels, probabilities)
    values = stats.metric_values(labels, (probabilities >= 0.5).astype(int), probabilities)
    assert set(values) == {m.key for m in METRICS}
    for key, value in values.items():
        assert float(value) == pytest.approx(expected[key], abs=1e-12), key


def test_the_statistics_of_one_class_and_of_all_right_are_scikit_learns():
    labels = np.ones(10, dtype=int)
    probabilities = np.linspace(0.1, 0.9, 10)
    expected = classification_metrics(labels, probabilities)
    values = stats.metric_values(labels, (probabilities >= 0.5).astype(int), probabilities)
    assert np.isnan(values["auc"]) and expected["auc"] is None
    for key in ("acc", "f1", "sensitivity", "specificity", "mcc", "balanced_acc", "loss"):
        assert float(values[key]) == pytest.approx(expected[key]), key


def test_intervals_are_reproducible_and_hold_the_estimate():
    labels, probabilities = _sample(3, n=200)
    first = stats.metric_intervals(labels, probabilities)
    assert first == stats.metric_intervals(labels, probabilities)  # a fixed seed: the same interval every time
    assert first["seed"] == stats.SEED and first["resamples"] == stats.RESAMPLES and first["n"] == 200
    assert first["method"] == "bootstrap-percentile" and first["level"] == 0.95
    point = classification_metrics(labels, probabilities)
    for key, (low, high) in first["metrics"].items():
        assert low <= point[key] <= high and low < high, key
    other = stats.metric_intervals(labels, probabilities, seed=1)
    assert other["metrics"]["acc"] != first["metrics"]["acc"]
    wider = stats.metric_intervals(labels, probabilities, level=0.99)
    assert wider["metrics"]["acc"][0] <= first["metrics"]["acc"][0] and wider["metrics"]["acc"][1] >= first["metrics"]["acc"][1]


def test_the_paired_comparison_is_mcnemars_and_the_accuracies():
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(5)
    a = rng.random(300) < 0.85
    b = rng.random(300) < 0.75
    result = stats.paired_comparison(a, b)
    (both, only_a), (only_b, neither) = result.table
    assert both + only_a + only_b + neither == 300
    assert (both + only_a) / 300 == pytest.approx(a.mean()) == pytest.approx(result.acc_a)
    assert (both + only_b) / 300 == pytest.approx(b.mean()) == pytest.approx(result.acc_b)
    assert result.mcnemar_p == mcnemar(np.array(result.table), exact=True).pvalue
    assert result.diff == pytest.approx(a.mean() - b.mean())
    assert result.diff_ci[0] <= result.diff <= result.diff_ci[1]
    assert result.significant == (result.mcnemar_p < 0.05)
    same = stats.paired_comparison(a, a)
    assert same.mcnemar_p == 1.0 and same.diff == 0 and same.diff_ci == [0.0, 0.0] and not same.significant
    with pytest.raises(ValueError):
        stats.paired_comparison(a, b[:10])


def test_replicates_are_mean_sample_std_and_the_t_interval():
    from scipy import stats as scipy_stats

    values = [0.91, 0.88, 0.93]
    summary = stats.replicates(values)
    assert summary.n == 3 and summary.mean == pytest.approx(np.mean(values))
    assert summary.std == pytest.approx(np.std(values, ddof=1))
    low, high = scipy_stats.t.interval(0.95, 2, loc=np.mean(values), scale=scipy_stats.sem(values))
    assert summary.ci == pytest.approx([low, high])
    one = stats.replicates([0.9])
    assert one.std is None and one.ci is None and one.mean == 0.9


def test_welch_and_holm():
    from scipy import stats as scipy_stats

    a, b = [0.90, 0.91, 0.92], [0.70, 0.72, 0.71]
    assert stats.welch_p(a, b) == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert stats.welch_p(a, [0.8]) is None  # one run: no spread to test against
    assert stats.welch_p([0.9, 0.9], [0.8, 0.8]) is None
    assert stats.holm([0.01, 0.04, 0.03]) == [True, False, False]  # 0.03 > 0.05 / 2
    assert stats.holm([0.01, 0.02]) == [True, True]
    assert stats.holm([0.2]) == [False]
