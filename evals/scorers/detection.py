"""Detection (Paulo et al. 2024, delphi): from the explanation alone, the judge says
which examples of a shuffled mix make the feature fire.

Examples: the scoring set's activating ones (drawn across every activation quantile)
and its non-activating ones. Score: balanced accuracy, (TP/P + TN/N) / 2, of "the judge's
probability >= 0.5" against "it fired"; chance is 0.5 whatever the class balance.
Details: F1; AUC of the probabilities when the judge gave graded ones (None for yes/no
answers); recall per quantile (delphi reports accuracy by activation decile); and, with
hard negatives in the set (shown in the same shuffled mix), the balanced accuracy of the
activating examples against them instead of the random ones, and the share of each kind
of hard negative the judge rightly said no to.
"""

from __future__ import annotations

from collections import defaultdict

from evals.core import Explained, Judge, Score, ScoringSet
from evals.scorers.base import (
    THRESHOLD,
    Outcome,
    against_hard,
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
            every = examples.examples + examples.hard_negatives
            shown, order = shuffled(every, f"{self.seed}:{explained.feature}")
            answers = await judge.detect(explained, shown)
            check_count("probabilities", answers, len(shown))
            probs = unshuffled(answers, order)
            n_random, n_activating = len(examples.examples), len(examples.activating)
            probs, hard = probs[:n_random], probs[n_random:]
            truth = [True] * len(examples.activating) + [False] * len(examples.non_activating)
            said = [p >= THRESHOLD for p in probs]
            return yes_no_outcome(
                probs,
                truth,
                recall_by_quantile=_recall_by_quantile(examples, said),
                n_activating=n_activating,
                n_non_activating=len(examples.non_activating),
                **against_hard(
                    said[:n_activating],
                    said[n_activating:],
                    [p >= THRESHOLD for p in hard],
                    examples.hard_kind,
                ),
            )

        return await run_scorer(self.name, explained, judge.name, work)


def _recall_by_quantile(examples: ScoringSet, predicted: list[bool]) -> dict[str, float]:
    hits: dict[int, list[bool]] = defaultdict(list)
    said = predicted[: len(examples.activating)]  # activating examples come first
    for q, p in zip(examples.quantile_of, said, strict=True):
        hits[q].append(p)
    return {str(q): sum(v) / len(v) for q, v in sorted(hits.items())}
