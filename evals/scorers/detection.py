"""Detection (Paulo et al. 2024, delphi): from the explanation alone, the judge says
which examples of a shuffled mix make the feature fire.

Examples: the scoring set's activating ones (drawn across every activation quantile)
and its non-activating ones. Score: balanced accuracy, (TP/P + TN/N) / 2, of "the judge's
probability >= 0.5" against "it fired"; chance is 0.5 whatever the class balance.
Details: F1; AUC of the probabilities when the judge gave graded ones (None for yes/no
answers); recall per quantile (delphi reports accuracy by activation decile).
"""

from __future__ import annotations

from collections import defaultdict

from evals.core import Explained, Judge, Score, ScoringSet
from evals.scorers.base import (
    THRESHOLD,
    Outcome,
    check_count,
    need_both_classes,
    run_scorer,
    shuffled,
    unshuffled,
    yes_no_outcome,
)


class DetectionScorer:
    name = "detection"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            need_both_classes(examples)
            shown, order = shuffled(examples.examples, f"{self.seed}:{explained.feature}")
            answers = await judge.detect(explained, shown)
            check_count("probabilities", answers, len(shown))
            probs = unshuffled(answers, order)
            truth = [True] * len(examples.activating) + [False] * len(examples.non_activating)
            return yes_no_outcome(
                probs,
                truth,
                recall_by_quantile=_recall_by_quantile(examples, [p >= THRESHOLD for p in probs]),
                n_activating=len(examples.activating),
                n_non_activating=len(examples.non_activating),
            )

        return await run_scorer(self.name, explained, judge.name, work)


def _recall_by_quantile(examples: ScoringSet, predicted: list[bool]) -> dict[str, float]:
    hits: dict[int, list[bool]] = defaultdict(list)
    said = predicted[: len(examples.activating)]  # activating examples come first
    for q, p in zip(examples.quantile_of, said, strict=True):
        hits[q].append(p)
    return {str(q): sum(v) / len(v) for q, v in sorted(hits.items())}
