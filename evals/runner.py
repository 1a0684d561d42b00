"""Run a benchmark: every explainer explains every feature, every scorer scores every
explanation on the same held-out examples, with each result stored as it comes (so an
interrupted run resumes where it stopped; scorings that failed are tried again).

A score is judged by the first judge that can read the explanation (e.g. a predicate
judge for explanations that carry a predicate, then an LLM judge for prose); the
judge's name is kept with the score. An explainer that fails on a feature is recorded
as a failure with its reason; nothing is scored in its place. With a score corpus
(`Bench.score_store`), a feature that never fires in it has nothing to be scored on:
each of its scores is recorded unscored with that reason, and nothing is explained.
Once every feature is explained, each is scored again with the same explainer's
explanation of another feature (its floor, evals.floors), the same way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from evals.core import (
    Explained,
    Highlighted,
    Judge,
    JudgeUnavailable,
    Score,
    Scorer,
    ScoringSet,
    scoring_set,
)
from evals.explainers.base import Explainer
from evals.floors import borrowed, partners
from evals.results import BenchConfig, BenchResults
from probes.evidence.store import EvidenceStore, Example, FeatureEvidence

log = logging.getLogger(__name__)


@dataclass
class Bench:
    config: BenchConfig
    store: EvidenceStore
    explainers: Sequence[Explainer]
    scorers: Sequence[Scorer]
    judges: Sequence[Judge]
    results: BenchResults
    concurrency: int = 4
    score_store: EvidenceStore | None = None  # the score corpus's evidence, if any
    # Each feature's scoring set, from its scoring until its floor is scored.
    _sets: dict[int, ScoringSet] = field(default_factory=dict, repr=False)


async def run_bench(bench: Bench, on_feature_done: Callable[[int], None] | None = None) -> None:
    """Explain and score every feature of the config; results go to `bench.results`."""
    gate = asyncio.Semaphore(bench.concurrency)

    async def one(feature: int) -> None:
        async with gate:
            await _feature(bench, feature)
        if on_feature_done is not None:
            on_feature_done(feature)

    await asyncio.gather(*(one(f) for f in bench.config.features))
    await _floors(bench)


async def _floors(bench: Bench) -> None:
    """Each feature scored with another feature's explanation by the same explainer
    (evals.floors), once every explanation exists; stored like any score."""
    gate = asyncio.Semaphore(bench.concurrency)

    async def one(feature: int, partner: int) -> None:
        async with gate:
            await _floor(bench, feature, partner)

    pairs = partners(bench.config.features, bench.config.seed)
    await asyncio.gather(*(one(f, p) for f, p in sorted(pairs.items())))


async def _floor(bench: Bench, feature: int, partner: int) -> None:
    if bench.score_store is not None and bench.score_store.stats(feature).fired_tokens == 0:
        return  # nothing to score it on (see _unscorable)
    examples: ScoringSet | None = None
    for explainer in bench.explainers:
        theirs = bench.results.explanation(explainer.name, partner)
        if theirs is None:  # the partner's explainer failed: no floor for this one
            continue
        floor = borrowed(theirs, feature)
        for scorer in bench.scorers:
            done = bench.results.score(floor.explainer, scorer.name, feature)
            if done is not None and done.score is not None:
                continue
            if examples is None:
                examples = _examples(bench, feature)
            judge = pick_judge(bench.judges, floor)
            bench.results.put_score(await scorer.score(floor, examples, judge))
    bench._sets.pop(feature, None)  # its last use


def _examples(bench: Bench, feature: int, evidence: FeatureEvidence | None = None) -> ScoringSet:
    found = bench._sets.get(feature)
    if found is None:
        config = bench.config
        found = bench._sets[feature] = scoring_set(
            bench.store, feature, config.per_quantile, config.non_activating, config.seed,
            evidence, held_out=bench.score_store,
        )  # fmt: skip
    return found


async def _feature(bench: Bench, feature: int) -> None:
    if bench.score_store is not None and bench.score_store.stats(feature).fired_tokens == 0:
        _unscorable(bench, feature)
        return
    evidence = bench.store.feature(feature)  # for tau, and for the explainers
    examples = _examples(bench, feature, evidence)
    for explainer in bench.explainers:
        explained = bench.results.explanation(explainer.name, feature)
        if explained is None:
            try:
                explained = await explainer.explain(feature, evidence)
            except Exception as error:  # one explainer failing must not stop the run
                log.warning("%s failed on feature %d: %s", explainer.name, feature, error)
                bench.results.put_failure(
                    explainer.name, feature, f"{type(error).__name__}: {error}"
                )
                continue
            bench.results.put_explanation(explained)
        for scorer in bench.scorers:
            done = bench.results.score(explainer.name, scorer.name, feature)
            if done is None or done.score is None:  # a failed scoring is tried again
                judge = pick_judge(bench.judges, explained)
                bench.results.put_score(await scorer.score(explained, examples, judge))


def _unscorable(bench: Bench, feature: int) -> None:
    """Every score of a feature the score corpus never fires on: unscored, with why (an
    explanation would be spent on nothing it could be scored by)."""
    reason = (
        f"the feature never fires in the score corpus {bench.config.score_corpus} "
        f"(no held-out examples to score it on); feature {feature}"
    )
    for explainer in bench.explainers:
        for scorer in bench.scorers:
            unscored = Score(
                feature=feature, explainer=explainer.name, scorer=scorer.name,
                judge=NoJudge.name, score=None, error=reason,
            )  # fmt: skip
            bench.results.put_score(unscored)


def pick_judge(judges: Sequence[Judge], explained: Explained) -> Judge:
    """The first judge that can read the explanation, else one that says why none can."""
    for judge in judges:
        if judge.can_judge(explained):
            return judge
    return NoJudge([j.name for j in judges])


class NoJudge:
    """Stands in when no configured judge can read an explanation: every call raises
    JudgeUnavailable, which scorers report as an unscored result with the reason."""

    name = "none"

    def __init__(self, tried: list[str]) -> None:
        self.reason = (
            f"no judge can read this explanation (tried: {', '.join(tried) or 'none'}); "
            "prose needs an LLM judge: configure GLOSSATOR_LLM_BASE_URL and "
            "GLOSSATOR_LLM_MODEL, or add the local judge"
        )

    def can_judge(self, explained: Explained) -> bool:
        return False

    async def detect(self, explained: Explained, examples: Sequence[Example]) -> list[float]:
        raise JudgeUnavailable(self.reason)

    async def fuzz(self, explained: Explained, items: Sequence[Highlighted]) -> list[float]:
        raise JudgeUnavailable(self.reason)

    async def simulate(
        self, explained: Explained, examples: Sequence[Example]
    ) -> list[list[float]]:
        raise JudgeUnavailable(self.reason)

    async def generate(self, explained: Explained, n: int) -> list[str]:
        raise JudgeUnavailable(self.reason)
