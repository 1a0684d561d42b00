"""Truth (planted features only): how well the explanation recovers the planted rule,
token by token, on the scoring set (where a planted feature's activations ARE its
rule). Score: token-level F1 of where the explanation says the feature fires against
where it fired.

With the predicate judge, the predicate's own verdicts, through `evals.truth`, which
also says whether each sense of a polysemantic feature is named by a part of its own.
With any other judge, "fires" is a simulated activation of at least 5, the middle of
the 0-10 scale (Bills et al. 2023)."""

from __future__ import annotations

import numpy as np

from agent.rules.hypotheses import labeled
from agent.rules.synthesis import Agreement, agreement
from evals.core import Explained, Judge, Score, ScoringSet
from evals.judges.predicate import PredicateJudge
from evals.scorers.base import Outcome, run_scorer
from evals.scorers.simulation import simulated
from evals.truth import truth_score
from probes.planted import PlantedFeatureSpec

FIRES_AT = 5.0  # middle of the 0-10 simulation scale


class TruthScorer:
    name = "truth"

    def __init__(self, spec: PlantedFeatureSpec) -> None:
        self.spec = spec

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            if isinstance(judge, PredicateJudge):
                return self._by_predicate(explained, examples, judge)
            rows = await simulated(explained, examples.examples, judge)
            predicted = np.array([v >= FIRES_AT for row in rows for v in row], dtype=bool)
            truth = np.array([a > 0 for e in examples.examples for a in e.acts], dtype=bool)
            return _outcome(agreement(predicted, truth), {"planted": self.spec.id})

        return await run_scorer(self.name, explained, judge.name, work)

    def _by_predicate(
        self, explained: Explained, examples: ScoringSet, judge: PredicateJudge
    ) -> Outcome:
        found = truth_score(judge.predicate(explained), self.spec, labeled(examples.examples))
        details: dict[str, object] = {"planted": self.spec.id}
        if self.spec.senses:
            details["senses_named"] = found.senses_named
            details["senses"] = [
                {"sense": m.sense, "named": m.named, "label": m.label, "f1": m.f1}
                for m in found.senses
            ]
        return _outcome(found.agreement, details)


def _outcome(a: Agreement, details: dict[str, object]) -> Outcome:
    return Outcome(a.f1, {"precision": a.precision, "recall": a.recall, **details})
