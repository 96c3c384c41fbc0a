import numpy as np
import pytest
from sklearn import metrics as sk

from engine.metrics import classification_metrics, roc_auc


@pytest.mark.parametrize("seed", range(5))
def test_metrics_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(301) < 0.68).astype(int)
    # Rounded scores create ties, which AUC must average like scikit-learn does.
    probabilities = np.round(np.clip(labels * 0.3 + rng.random(301) * 0.7, 0, 1), 1)
    predicted = (probabilities >= 0.5).astype(int)
    ours = classification_metrics(labels, probabilities)
    assert ours["acc"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert ours["sensitivity"] == pytest.approx(sk.recall_score(labels, predicted, pos_label=1))
    assert ours["specificity"] == pytest.approx(sk.recall_score(labels, predicted, pos_label=0))
    assert ours["f1"] == pytest.approx(sk.f1_score(labels, predicted, average="weighted"))
    assert ours["auc"] == pytest.approx(sk.roc_auc_score(labels, probabilities))
    assert ours["confusion"] == sk.confusion_matrix(labels, predicted, labels=[0, 1]).tolist()


def test_degenerate_inputs():
    assert np.isnan(roc_auc(np.ones(4), np.linspace(0, 1, 4)))
    perfect = classification_metrics(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.8]))
    assert perfect["acc"] == 1.0 and perfect["auc"] == 1.0 and perfect["confusion"] == [[1, 0], [0, 2]]
    all_wrong = classification_metrics(np.array([1, 1]), np.array([0.0, 0.2]))
    assert all_wrong["sensitivity"] == 0.0 and all_wrong["specificity"] == 0.0 and all_wrong["f1"] == 0.0
