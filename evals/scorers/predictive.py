"""Predictive accuracy (SAGE, Han et al. 2025): from the explanation alone, predict how
strongly the feature fires on held-out examples from every activation range; the
score is the Pearson correlation of the predicted with the true per-example maximum.

The prediction is the maximum of the judge's per-token simulation (0-10); the truth is
each example's max activation. Examples: every quantile of the scoring set plus its
non-activating contexts (true maximum 0). A constant prediction scores 0.0."""

from __future__ import annotations

from evals.core import Explained, Judge, Score, ScoringSet
from evals.metrics import pooled_pearson
from evals.scorers.base import Outcome, run_scorer
from evals.scorers.simulation import simulated


class PredictiveScorer:
    name = "predictive"

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            rows = await simulated(explained, examples.examples, judge)
            predicted = [max(row, default=0.0) for row in rows]
            truth = [e.max_act for e in examples.examples]
            # One "sequence" of per-example maxima: pooled Pearson is then plain Pearson.
            return Outcome(pooled_pearson([predicted], [truth]), {"n_examples": len(truth)})

        return await run_scorer(self.name, explained, judge.name, work)
