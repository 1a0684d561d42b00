"""Predictive accuracy (SAGE, Han et al. 2025): from the explanation alone, predict how
strongly the feature fires on held-out exemplars drawn from every activation range; the
score is the Pearson correlation of the predicted with the true activations, pooled over
every token of those exemplars (as SAGE's evaluation computes it).

Unlike simulation (Bills et al.), only activating exemplars are read: the question is
whether the explanation tells strong firings from weak ones and which tokens carry
them, not whether the feature fires at all. A constant prediction scores 0.0."""

from __future__ import annotations

from evals.core import Explained, Judge, Score, ScoringSet
from evals.metrics import pooled_pearson
from evals.scorers.base import Outcome, run_scorer
from evals.scorers.simulation import simulated


class PredictiveScorer:
    name = "predictive"

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            if not examples.activating:
                raise ValueError(
                    f"feature {examples.feature} has no held-out activating exemplars to predict"
                )
            predicted = await simulated(explained, examples.activating, judge)
            truth = [e.acts for e in examples.activating]
            return Outcome(
                pooled_pearson(predicted, truth),
                {"n_examples": len(truth), "n_tokens": sum(len(row) for row in truth)},
            )

        return await run_scorer(self.name, explained, judge.name, work)
