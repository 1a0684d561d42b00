"""Generative accuracy (SAGE, Han et al. 2025): the judge writes N inputs from the
explanation alone; each is run through the model (a probe run); a success is an
input whose maximum activation of the feature reaches tau, half the mean max of the
feature's top-10 explain-split exemplars (`ScoringSet.threshold`). Score: successes / N,
where a text the judge did not write (it gave fewer) or the runner refuses (blank, too
long) counts as a failure."""

from __future__ import annotations

from evals.core import Explained, Judge, Score, ScoringSet
from evals.scorers.base import Outcome, run_scorer
from probes.probe_runner import MAX_PROBE_CHARS, ProbeRunner

N_TEXTS = 10  # texts asked of the judge per explanation


class GenerativeScorer:
    name = "generative"

    def __init__(self, runner: ProbeRunner, n: int = N_TEXTS) -> None:
        if n < 1:
            raise ValueError(f"GenerativeScorer needs n >= 1, got {n}")
        self.runner = runner
        self.n = n

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score:
        async def work() -> Outcome:
            tau = examples.threshold
            if tau <= 0:
                raise ValueError(
                    f"feature {explained.feature} has no firing threshold (tau = {tau}): "
                    "it never fired in the explain split"
                )
            texts = (await judge.generate(explained, self.n))[: self.n]
            valid = [t for t in texts if t.strip() and len(t) <= MAX_PROBE_CHARS]
            results = await self.runner.run(valid, explained.feature) if valid else []
            maxima = [r.max_act for r in results]
            successes = sum(m >= tau for m in maxima)
            return Outcome(
                successes / self.n,
                {
                    "tau": tau,
                    "asked": self.n,
                    "written": len(texts),
                    "refused": len(texts) - len(valid),
                    "successes": successes,
                    "max_acts": maxima,
                    "texts": valid,
                },
                probe_texts=len(valid),
            )

        return await run_scorer(self.name, explained, judge.name, work)
