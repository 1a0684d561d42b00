"""evals.metrics against values worked out by hand (the arithmetic is in each test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr

from evals.metrics import (
    balanced_accuracy,
    bootstrap_mean_ci,
    confusion,
    paired_difference_ci,
    pooled_pearson,
    precision_recall_f1,
    roc_auc,
)

# 6 actual positives, 4 actual negatives.
ACTUAL = [True, True, True, True, True, True, False, False, False, False]
# TP = 4 (first four), FN = 2, FP = 1 (the first negative), TN = 3.
PREDICTED = [True, True, True, True, False, False, True, False, False, False]


def test_confusion_counts() -> None:
    c = confusion(PREDICTED, ACTUAL)
    assert (c.tp, c.fn, c.fp, c.tn) == (4, 2, 1, 3)
    assert (c.positives, c.negatives) == (6, 4)


def test_balanced_accuracy_by_hand() -> None:
    # TP/P = 4/6, TN/N = 3/4 -> (0.6667 + 0.75) / 2 = 17/24
    assert balanced_accuracy(PREDICTED, ACTUAL) == pytest.approx(17 / 24)
    # Plain accuracy would be 7/10; balanced accuracy ignores the class balance:
    # saying "fires" everywhere is 0.5 whatever the balance (1/1 + 0/4) / 2.
    assert balanced_accuracy([True] * 10, ACTUAL) == pytest.approx(0.5)


def test_precision_recall_f1_by_hand() -> None:
    # precision = TP/(TP+FP) = 4/5, recall = TP/(TP+FN) = 4/6,
    # F1 = 2 * 0.8 * 0.6667 / (0.8 + 0.6667) = 1.0667 / 1.4667 = 8/11
    p, r, f1 = precision_recall_f1(PREDICTED, ACTUAL)
    assert (p, r) == (pytest.approx(4 / 5), pytest.approx(2 / 3))
    assert f1 == pytest.approx(8 / 11)


def test_never_predicting_fires_has_zero_precision_and_f1() -> None:
    p, r, f1 = precision_recall_f1([False] * 10, ACTUAL)
    assert (p, r, f1) == (0.0, 0.0, 0.0)


def test_one_class_only_is_refused() -> None:
    with pytest.raises(ValueError, match="0 actual negatives"):
        balanced_accuracy([True, False], [True, True])
    with pytest.raises(ValueError, match="0 actual positives"):
        precision_recall_f1([True, False], [False, False])
    with pytest.raises(ValueError, match="1 positives and 0 negatives"):
        roc_auc([0.3], [True])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: balanced_accuracy([], []), "non-empty"),
        (lambda: balanced_accuracy([True], [True, False]), "lengths differ"),
        (lambda: balanced_accuracy([1, 0], [True, False]), "booleans"),  # type: ignore[list-item]
        (lambda: roc_auc([0.5, float("nan")], [True, False]), "NaN"),
        (lambda: pooled_pearson([], []), "non-empty"),
        (lambda: pooled_pearson([[1.0, 2.0]], [[1.0]]), "sequence 0: 2 predictions for 1"),
        (lambda: bootstrap_mean_ci([]), "non-empty"),
        (lambda: paired_difference_ci([1.0, 2.0], [1.0]), "lengths differ"),
    ],
    ids=["empty", "mismatch", "not-bool", "nan", "empty-pearson", "ragged", "empty-ci", "pairs"],
)
def test_bad_input_raises_a_clear_value_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_auc_by_hand_with_ties() -> None:
    # positives score 0.9, 0.5, 0.4; negatives 0.5, 0.1.
    # Pairs (pos > neg: 1, tie: 1/2): 0.9 beats both (2); 0.5 ties 0.5 and beats 0.1 (1.5);
    # 0.4 loses to 0.5 and beats 0.1 (1). AUC = 4.5 / (3 * 2) = 0.75.
    scores = [0.9, 0.5, 0.4, 0.5, 0.1]
    actual = [True, True, True, False, False]
    assert roc_auc(scores, actual) == pytest.approx(0.75)


def test_auc_from_hard_predictions_equals_balanced_accuracy() -> None:
    # With 0/1 scores the ROC curve has one corner, and its area is (TPR + TNR) / 2.
    scores = [1.0 if p else 0.0 for p in PREDICTED]
    assert roc_auc(scores, ACTUAL) == pytest.approx(17 / 24)


def test_auc_extremes() -> None:
    assert roc_auc([0.9, 0.8, 0.2], [True, True, False]) == 1.0
    assert roc_auc([0.1, 0.8, 0.9], [True, True, False]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5], [True, True, False]) == 0.5  # all ties: chance


def test_pooled_pearson_by_hand() -> None:
    # Two sequences pooled into 4 tokens: predicted x = 0, 2, 4, 6; true y = 0, 1, 3, 4.
    # mean x = 3, mean y = 2; dx = -3, -1, 1, 3; dy = -2, -1, 1, 2.
    # sum dx*dy = 6 + 1 + 1 + 6 = 14; sum dx^2 = 20; sum dy^2 = 10.
    # r = 14 / sqrt(20 * 10) = 14 / 14.1421 = 0.98995
    r = pooled_pearson([[0.0, 2.0], [4.0, 6.0]], [[0.0, 1.0], [3.0, 4.0]])
    assert r == pytest.approx(14 / math.sqrt(200))


def test_pooled_is_not_the_mean_of_per_sequence_correlations() -> None:
    # Within each sequence the prediction is perfectly correlated (r = 1 each), but the
    # second sequence's predictions are far too high, so pooled r is lower:
    # x = 0, 1, 10, 11; y = 0, 1, 0, 1 -> dx = -5.5, -4.5, 4.5, 5.5; dy = -.5, .5, -.5, .5
    # sum dx*dy = 2.75 - 2.25 - 2.25 + 2.75 = 1; sum dx^2 = 101; sum dy^2 = 1
    # r = 1 / sqrt(101) = 0.0995
    predicted = [[0.0, 1.0], [10.0, 11.0]]
    actual = [[0.0, 1.0], [0.0, 1.0]]
    assert pooled_pearson(predicted, actual) == pytest.approx(1 / math.sqrt(101))
    flat = pearsonr([0, 1, 10, 11], [0, 1, 0, 1]).statistic
    assert pooled_pearson(predicted, actual) == pytest.approx(flat)


def test_constant_predictions_score_zero_and_constant_truth_is_refused() -> None:
    assert pooled_pearson([[0.0, 0.0], [0.0]], [[0.0, 3.0], [1.0]]) == 0.0
    with pytest.raises(ValueError, match=r"true activations are constant \(0 on all 3"):
        pooled_pearson([[0.0, 5.0], [1.0]], [[0.0, 0.0], [0.0]])


def test_bootstrap_interval_by_hand() -> None:
    # Values 0, 0, 0, 1: a resample of 4 has k ~ Binomial(4, 1/4) ones and mean k/4.
    # P(k=0) = 0.316, P(k<=2) = 1 - P(3) - P(4) = 1 - 0.0469 - 0.0039 = 0.949, so the
    # 2.5th percentile of the means is 0 and the 97.5th is 3/4 (P(k<=3) = 0.996).
    assert bootstrap_mean_ci([0.0, 0.0, 0.0, 1.0]) == (0.0, 0.75)
    # Values 0, 1: means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4 -> interval [0, 1].
    assert bootstrap_mean_ci([0.0, 1.0]) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    small = rng.normal(0.5, 0.2, size=20).tolist()
    large = rng.normal(0.5, 0.2, size=2000).tolist()
    assert bootstrap_mean_ci(small) == bootstrap_mean_ci(small)
    assert bootstrap_mean_ci(small, seed=1) != bootstrap_mean_ci(small, seed=2)
    lo_s, hi_s = bootstrap_mean_ci(small)
    lo_l, hi_l = bootstrap_mean_ci(large)
    assert lo_s < float(np.mean(small)) < hi_s and lo_l < float(np.mean(large)) < hi_l
    # The interval shrinks like 1/sqrt(n): 10x narrower for 100x the data, roughly;
    # its width is about 2 * 1.96 * 0.2 / sqrt(n).
    assert hi_l - lo_l == pytest.approx(2 * 1.96 * 0.2 / math.sqrt(2000), rel=0.15)
    assert (hi_s - lo_s) > 5 * (hi_l - lo_l)


def test_bootstrap_of_a_constant_or_a_single_value_is_that_value() -> None:
    assert bootstrap_mean_ci([0.7, 0.7, 0.7]) == pytest.approx((0.7, 0.7))
    assert bootstrap_mean_ci([0.4]) == pytest.approx((0.4, 0.4))


def test_paired_difference_by_hand() -> None:
    # X beats the agent by exactly 0.1 on every feature: the difference is 0.1 with no
    # spread, although each explainer's own scores vary widely across features.
    agent = [0.1, 0.9, 0.5, 0.3]
    x = [0.2, 1.0, 0.6, 0.4]
    mean, lo, hi = paired_difference_ci(x, agent)
    assert (mean, lo, hi) == pytest.approx((0.1, 0.1, 0.1))
    # Differences 0, 0, 0, 1 -> the interval worked out in test_bootstrap_interval_by_hand.
    mean, lo, hi = paired_difference_ci([1.0, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0])
    assert (mean, lo, hi) == (0.25, 0.0, 0.75)
