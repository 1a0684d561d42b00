"""Simulation (Bills et al. 2023): the judge predicts every token's activation (0-10)
from the explanation alone; the score is the Pearson correlation of the predictions
with the true activations, pooled over every token of every example (activating and
non-activating). A constant prediction scores 0.0 (see `evals.metrics`)."""

from __future__ import annotations

from collections.abc import Sequence

from evals.core import Explained, Judge, Score, ScoringSet
from evals.metrics import pooled_pearson
from evals.scorers.base import Outcome, check_count, run_scorer
from probes.evidence.store import Example


class SimulationScorer:
    name = "simulation"

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            predicted = await simulated(explained, examples.examples, judge)
            truth = [e.acts for e in examples.examples]
            return Outcome(
                pooled_pearson(predicted, truth),
                {"n_examples": len(truth), "n_tokens": sum(len(row) for row in truth)},
            )

        return await run_scorer(self.name, explained, judge.name, work)


async def simulated(
    explained: Explained, examples: Sequence[Example], judge: Judge
) -> list[list[float]]:
    """The judge's per-token predictions, checked to cover every token of every example."""
    predicted = await judge.simulate(explained, examples)
    check_count("simulated sequences", predicted, len(examples))
    for i, (row, e) in enumerate(zip(predicted, examples, strict=True)):
        if len(row) != len(e.tokens):
            raise ValueError(
                f"the judge simulated {len(row)} activations for example {i}, "
                f"which has {len(e.tokens)} tokens"
            )
    return predicted
