"""Intruder detection (delphi's intruder scorer; Paulo et al.): the judge sees k of the
feature's held-out activating examples and one activating example of another feature
(the intruder), each with its own feature's firing tokens highlighted, and says which
is the intruder.

Two modes:
- `intruder` ignores the explanation: it measures the dictionary (are the feature's
  contexts coherent enough to tell another feature's apart?), the same number for
  every explainer of the feature;
- `intruder-explained` gives the judge the explanation: it measures the explainer.

Rounds: as many as the scoring set allows, one intruder each (`ScoringSet.intruders`)
and k activating examples each, dealt from the examples sorted by quantile so each round
spans the activation range; order within a round and the intruder's place are drawn
with a fixed seed. Score: accuracy, the share of rounds where the judge's most probable
item is the intruder (a tie among m items counts 1/m, so a judge that cannot tell gets
chance); chance is 1 / (k + 1). Details: chance, n_rounds, k, per-round credit, and the
mean probability the judge put on the intruder.
"""

from __future__ import annotations

import math
import random
from statistics import mean

from evals.core import INTRUDER_K, Explained, Highlighted, Judge, Score, ScoringSet
from evals.scorers.base import Outcome, check_count, run_scorer
from probes.evidence.store import Example


class IntruderScorer:
    def __init__(self, explained: bool, seed: int = 0, k: int = INTRUDER_K) -> None:
        if k < 1:
            raise ValueError(f"an intruder round needs k >= 1 examples of the feature, not {k}")
        self.name = "intruder-explained" if explained else "intruder"
        self.needs_explanation = explained  # see evals.core.needs_explanation
        self.seed = seed
        self.k = k

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            rounds, at = intruder_rounds(examples, self.k, f"{self.seed}:{explained.feature}")
            answers = await judge.intruder(explained if self.needs_explanation else None, rounds)
            check_count("rounds", answers, len(rounds))
            for probs, items in zip(answers, rounds, strict=True):
                check_count("probabilities in a round", probs, len(items))
                if not all(math.isfinite(p) and p >= 0 for p in probs):
                    raise ValueError(f"the judge returned probabilities {probs}")
            pairs = list(zip(answers, at, strict=True))
            found = [credit(probs, i) for probs, i in pairs]
            return Outcome(
                mean(found),
                {
                    "chance": 1 / (self.k + 1),
                    "n_rounds": len(rounds),
                    "k": self.k,
                    "found": found,
                    "p_intruder": mean(_share(probs, i) for probs, i in pairs),
                },
            )

        return await run_scorer(self.name, explained, judge.name, work)


def intruder_rounds(
    examples: ScoringSet, k: int, seed: str
) -> tuple[list[list[Highlighted]], list[int]]:
    """The rounds (k activating examples and one intruder, each highlighted where its
    own feature fires) and the intruder's place in each. Raises ValueError when the set
    has not enough for one round."""
    n = min(len(examples.activating) // k, len(examples.intruders))
    if n == 0:
        raise ValueError(
            f"feature {examples.feature}'s scoring set has {len(examples.activating)} "
            f"activating examples and {len(examples.intruders)} intruders; an intruder "
            f"round needs {k} and 1"
        )
    rng = random.Random(seed)
    # By quantile (random within one), then dealt: round r gets ranks r, r + n, ...
    ranked = sorted(
        range(len(examples.activating)), key=lambda i: (examples.quantile_of[i], rng.random())
    )
    rounds: list[list[Highlighted]] = []
    at: list[int] = []
    for r in range(n):
        members = [own_marks(examples.activating[i]) for i in ranked[r::n][:k]]
        rng.shuffle(members)
        place = rng.randrange(k + 1)
        members.insert(place, own_marks(examples.intruders[r]))
        rounds.append(members)
        at.append(place)
    return rounds, at


def own_marks(example: Example) -> Highlighted:
    """The example with the tokens its own feature fires on highlighted."""
    return Highlighted(example=example, marked=[a > 0 for a in example.acts])


def credit(probs: list[float], intruder: int) -> float:
    """1 when the intruder alone has the highest probability, 1/m when it ties with
    m - 1 others there (a guess among them), else 0."""
    top = max(probs)
    tied = [i for i, p in enumerate(probs) if p == top]
    return 1 / len(tied) if intruder in tied else 0.0


def _share(probs: list[float], intruder: int) -> float:
    total = sum(probs)
    return probs[intruder] / total if total else 1 / len(probs)
