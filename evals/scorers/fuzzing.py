"""Fuzzing (Paulo et al. 2024, delphi): the judge sees activating examples with some
tokens highlighted and says whether the highlighting fits the explanation.

Each activating example appears twice: correctly highlighted (exactly its tokens with
activation > 0) and wrongly highlighted (as many other tokens, picked at random with a
fixed seed; fewer when the example has fewer quiet tokens, none when it has none).
Score: balanced accuracy of "the judge's probability >= 0.5" against "the highlighting is
the correct one"; chance is 0.5. Details: F1, and AUC when the probabilities are graded.
"""

from __future__ import annotations

import random

from evals.core import Explained, Highlighted, Judge, Score, ScoringSet
from evals.scorers.base import (
    Outcome,
    check_count,
    run_scorer,
    shuffled,
    unshuffled,
    yes_no_outcome,
)
from probes.evidence.store import Example


class FuzzingScorer:
    name = "fuzzing"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            items, truth = highlighted(examples.activating, f"{self.seed}:{explained.feature}")
            if not any(truth) or all(truth):
                raise ValueError(
                    f"feature {explained.feature}'s activating examples give no correct "
                    "and wrong highlighting to tell apart"
                )
            shown, order = shuffled(items, f"{self.seed}:{explained.feature}:order")
            answers = await judge.fuzz(explained, shown)
            check_count("probabilities", answers, len(shown))
            probs = unshuffled(answers, order)
            return yes_no_outcome(
                probs, truth, n_correct=sum(truth), n_wrong=len(truth) - sum(truth)
            )

        return await run_scorer(self.name, explained, judge.name, work)


def highlighted(activating: list[Example], seed: str) -> tuple[list[Highlighted], list[bool]]:
    """Correct and wrong highlightings of each example, and which are correct."""
    rng = random.Random(seed)
    items: list[Highlighted] = []
    correct: list[bool] = []
    for example in activating:
        marked = [a > 0 for a in example.acts]
        if not any(marked):
            continue
        items.append(Highlighted(example=example, marked=marked))
        correct.append(True)
        quiet = [i for i, m in enumerate(marked) if not m]
        wrong = set(rng.sample(quiet, min(sum(marked), len(quiet))))
        if wrong:
            items.append(
                Highlighted(example=example, marked=[i in wrong for i in range(len(marked))])
            )
            correct.append(False)
    return items, correct
