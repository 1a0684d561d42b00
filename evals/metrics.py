"""The metric math of the benchmarks: pure numpy/scipy, no I/O.

Classification (detection, fuzzing; Paulo et al. 2024, delphi): balanced accuracy,
precision/recall/F1 from boolean predictions, ROC AUC from probabilities.
Simulation (Bills et al. 2023): Pearson correlation pooled over every token of every
sequence. Reports: percentile-bootstrap confidence intervals of a mean, and of the mean
paired difference of two explainers over the same features.

Rules for undefined cases, so no metric silently returns a made-up number:
- empty input, mismatched lengths or NaN values raise ValueError;
- balanced accuracy, recall, F1 and AUC need at least one positive and one negative
  example (ValueError otherwise: such a scoring set cannot tell explanations apart);
- precision with no predicted positives is 0.0 (a judge that never says "fires" found
  nothing; scikit-learn's `zero_division=0`), and F1 is 0.0 when precision and recall
  are both 0;
- pooled Pearson raises ValueError when the true activations are constant (the scoring
  set is degenerate), and is 0.0 when the *predictions* are constant: the explanation
  told the simulator nothing about where the feature fires. OpenAI's
  automated-interpretability (and delphi after it) call `np.corrcoef` there, which
  gives NaN; a NaN would drop the feature from the mean and flatter the explainer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.stats import rankdata

BOOTSTRAP_RESAMPLES = 2000  # Efron & Tibshirani (1993): 1000-2000 for percentile intervals
_CHUNK_ELEMENTS = 1_000_000  # resample this many values at a time (bounded memory)


@dataclass(frozen=True)
class Confusion:
    """Counts of a binary classification: predicted vs actual."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def positives(self) -> int:
        return self.tp + self.fn

    @property
    def negatives(self) -> int:
        return self.tn + self.fp

    @property
    def precision(self) -> float:
        predicted = self.tp + self.fp
        return self.tp / predicted if predicted else 0.0

    @property
    def recall(self) -> float:
        self._need_both_classes("recall", negatives=False)
        return self.tp / self.positives

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def balanced_accuracy(self) -> float:
        """(TP/P + TN/N) / 2: chance is 0.5 whatever the class balance."""
        self._need_both_classes("balanced accuracy")
        return (self.tp / self.positives + self.tn / self.negatives) / 2

    def _need_both_classes(self, metric: str, negatives: bool = True) -> None:
        if self.positives == 0 or (negatives and self.negatives == 0):
            raise ValueError(
                f"{metric} is undefined with {self.positives} actual positives and "
                f"{self.negatives} actual negatives: score on a set with both "
                "activating and non-activating examples"
            )


def confusion(predicted: Sequence[bool], actual: Sequence[bool]) -> Confusion:
    """The confusion counts of `predicted` against `actual` (same length, not empty)."""
    pred = _bools(predicted, "predicted")
    true = _bools(actual, "actual")
    _same_length(pred, true)
    return Confusion(
        tp=int(np.sum(pred & true)),
        fp=int(np.sum(pred & ~true)),
        tn=int(np.sum(~pred & ~true)),
        fn=int(np.sum(~pred & true)),
    )


def balanced_accuracy(predicted: Sequence[bool], actual: Sequence[bool]) -> float:
    return confusion(predicted, actual).balanced_accuracy


def precision_recall_f1(
    predicted: Sequence[bool], actual: Sequence[bool]
) -> tuple[float, float, float]:
    c = confusion(predicted, actual)
    return c.precision, c.recall, c.f1


def roc_auc(scores: Sequence[float], actual: Sequence[bool]) -> float:
    """Area under the ROC curve of `scores` (higher = more likely positive): the
    probability that a random positive outscores a random negative, ties counting half
    (the Mann-Whitney U statistic over average ranks)."""
    values = _floats(scores, "scores")
    true = _bools(actual, "actual")
    _same_length(values, true)
    n_pos, n_neg = int(true.sum()), int((~true).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"AUC is undefined with {n_pos} positives and {n_neg} negatives: score on a set "
            "with both activating and non-activating examples"
        )
    ranks = rankdata(values)  # ties get their average rank
    u = float(ranks[true].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def pooled_pearson(
    predicted: Sequence[Sequence[float]], actual: Sequence[Sequence[float]]
) -> float:
    """Pearson r between predicted and true activations, pooled over every token of
    every sequence (Bills et al. 2023: one correlation over all tokens, not a mean of
    per-sequence ones). See the module notes for constant inputs."""
    if len(predicted) != len(actual):
        raise ValueError(f"{len(predicted)} predicted sequences for {len(actual)} true ones")
    for i, (p, a) in enumerate(zip(predicted, actual, strict=True)):
        if len(p) != len(a):
            raise ValueError(f"sequence {i}: {len(p)} predictions for {len(a)} tokens")
    pred = _floats([x for seq in predicted for x in seq], "predicted")
    true = _floats([x for seq in actual for x in seq], "actual")
    if np.all(true == true[0]):
        raise ValueError(
            "Pearson correlation is undefined: the true activations are constant "
            f"({true[0]:g} on all {true.size} tokens); score on examples where the "
            "feature fires and where it does not"
        )
    if np.all(pred == pred[0]):
        return 0.0
    return float(np.corrcoef(pred, true)[0, 1])


def bootstrap_mean_ci(
    values: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high): the percentile-bootstrap `level` interval of the mean of `values`
    (seeded, so a report is reproducible). One value gives (value, value): the report
    shows n beside it."""
    data = _floats(values, "values")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, not {resamples}")
    means = _resampled_means(data, resamples, np.random.default_rng(seed))
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def paired_difference_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high) of a[i] - b[i], pairs aligned by the caller (e.g. explainer X
    and the agent on the same features): resampling pairs keeps what the features
    share (some are harder for everyone) out of the interval."""
    x, y = _floats(a, "a"), _floats(b, "b")
    _same_length(x, y)
    diff = x - y
    low, high = bootstrap_mean_ci(diff.tolist(), level=level, resamples=resamples, seed=seed)
    return float(diff.mean()), low, high


def _resampled_means(
    data: NDArray[np.float64], resamples: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    n = data.size
    rows = max(1, _CHUNK_ELEMENTS // n)
    chunks = []
    for start in range(0, resamples, rows):
        idx = rng.integers(0, n, size=(min(rows, resamples - start), n))
        chunks.append(data[idx].mean(axis=1))
    return np.concatenate(chunks)


def _floats(values: Sequence[float], name: str) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers (got {arr.size} values)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _bools(values: Sequence[bool], name: str) -> NDArray[np.bool_]:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty list of booleans (got {arr.size} values)")
    if arr.dtype != np.bool_:
        raise ValueError(f"{name} must hold booleans, not {arr.dtype}")
    return arr


def _same_length(a: NDArray[np.generic], b: NDArray[np.generic]) -> None:
    if a.size != b.size:
        raise ValueError(f"lengths differ: {a.size} vs {b.size}")
