"""Fuzzing (Paulo et al. 2024, delphi): the judge sees examples with some tokens
highlighted and says whether the highlighting fits the explanation.

Each activating example appears twice: correctly highlighted (exactly its tokens with
activation > 0) and wrongly highlighted (as many other tokens, picked at random with a
fixed seed; fewer when the example has fewer quiet tokens, none when it has none).
Score: balanced accuracy of "the judge's probability >= 0.5" against "the highlighting is
the correct one"; chance is 0.5. Details: F1, and AUC when the probabilities are graded.

With hard negatives in the scoring set (evals.hard_negatives), each is shown too, in the
same shuffled mix, highlighted where it looks most like the feature: on the tokens the
feature fires on in its activating examples, or (when it holds none of them) on as many
random tokens as a correct highlighting typically marks, as delphi highlights its
non-activating examples. Every such highlighting is wrong; the details give the balanced
accuracy against them apart from the headline score.
"""

from __future__ import annotations

import random
import statistics

from evals.core import Explained, Highlighted, Judge, Score, ScoringSet
from evals.scorers.base import (
    THRESHOLD,
    Outcome,
    against_hard,
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
            seed = f"{self.seed}:{explained.feature}"
            items, truth = highlighted(examples.activating, seed)
            if not any(truth) or all(truth):
                raise ValueError(
                    f"feature {explained.feature}'s activating examples give no correct "
                    "and wrong highlighting to tell apart"
                )
            hard = look_alike(examples, f"{seed}:hard")
            shown, order = shuffled(items + hard, f"{seed}:order")
            answers = await judge.fuzz(explained, shown)
            check_count("probabilities", answers, len(shown))
            probs = unshuffled(answers, order)
            probs, hard_probs = probs[: len(items)], probs[len(items) :]
            said = [p >= THRESHOLD for p in probs]
            return yes_no_outcome(
                probs,
                truth,
                n_correct=sum(truth),
                n_wrong=len(truth) - sum(truth),
                **against_hard(
                    [s for s, t in zip(said, truth, strict=True) if t],
                    [s for s, t in zip(said, truth, strict=True) if not t],
                    [p >= THRESHOLD for p in hard_probs],
                    examples.hard_kind,
                ),
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


def look_alike(examples: ScoringSet, seed: str) -> list[Highlighted]:
    """Each hard negative highlighted where it looks most like the feature (see the
    module's docstring), in the scoring set's order."""
    rng = random.Random(seed)
    firing = {
        t for e in examples.activating for t, a in zip(e.token_ids, e.acts, strict=True) if a > 0
    }
    counts = [sum(a > 0 for a in e.acts) for e in examples.activating]
    typical = max(1, round(statistics.median(counts))) if counts else 1
    out: list[Highlighted] = []
    for example in examples.hard_negatives:
        marked = [t in firing for t in example.token_ids]
        if not any(marked) and example.token_ids:
            chosen = set(rng.sample(range(len(marked)), min(typical, len(marked))))
            marked = [i in chosen for i in range(len(marked))]
        out.append(Highlighted(example=example, marked=marked))
    return out
