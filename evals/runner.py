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

A scorer that ignores the explanation (the explanation-free intruder test,
`evals.core.needs_explanation`) measures the feature, not the explainer: it is judged
once per feature, by the first judge that can judge without an explanation, and the
other explainers get a copy (an LLM judge is not paid twice); it has no floor.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from evals.collisions import SCORER as COLLISION_SCORER
from evals.collisions import against_collision, collisions
from evals.core import (
    Explained,
    Highlighted,
    Judge,
    JudgeUnavailable,
    Score,
    Scorer,
    ScoringSet,
    needs_explanation,
    scoring_set,
)
from evals.explainers.base import Explainer
from evals.floors import borrowed, partners
from evals.results import BenchConfig, BenchResults
from lexicon.embeddings import MiniLMEmbedder
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
    await _collisions(bench)


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
            if not needs_explanation(scorer):
                continue  # the same number whatever the explanation: no floor
            if _scored(bench, floor.explainer, scorer.name, feature):
                continue
            if examples is None:
                examples = _examples(bench, feature)
            judge = pick_judge(bench.judges, floor, reads_output(scorer))
            bench.results.put_score(await scorer.score(floor, examples, judge))
    bench._sets.pop(feature, None)  # its last use


async def _collisions(bench: Bench) -> None:
    """Each explanation that collides with another feature's (evals.collisions) scored by
    detection against the contexts of the features it collides with; stored under the
    scorer name `collisions.SCORER`. Only with detection among the run's scorers."""
    detection = next((s for s in bench.scorers if s.name == "detection"), None)
    if detection is None:
        return
    explained = {
        (e.name, f): mine
        for e in bench.explainers
        for f in bench.config.features
        if (mine := bench.results.explanation(e.name, f)) is not None
    }
    prose = any(e.predicate is None for e in explained.values())
    others: dict[tuple[str, int], list[int]] = defaultdict(list)
    for c in collisions(list(explained.values()), MiniLMEmbedder() if prose else None):
        others[(c.explainer, c.feature)].append(c.other)
    for (explainer, feature), theirs in sorted(others.items()):
        if _scored(bench, explainer, COLLISION_SCORER, feature):
            continue
        held = against_collision(
            _examples(bench, feature), bench.score_store or bench.store, theirs,
            bench.config.non_activating,
        )  # fmt: skip
        if held is None:
            continue
        mine = explained[(explainer, feature)]
        score = await detection.score(mine, held, pick_judge(bench.judges, mine))
        details = {**score.details, "collides_with": theirs}
        bench.results.put_score(
            score.model_copy(update={"scorer": COLLISION_SCORER, "details": details})
        )
        bench._sets.pop(feature, None)


def _examples(bench: Bench, feature: int, evidence: FeatureEvidence | None = None) -> ScoringSet:
    found = bench._sets.get(feature)
    if found is None:
        config = bench.config
        intruders = None if any(s.name.startswith("intruder") for s in bench.scorers) else 0
        found = bench._sets[feature] = scoring_set(
            bench.store, feature, config.per_quantile, config.non_activating, config.seed,
            evidence, held_out=bench.score_store, intruders=intruders,
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
            if _scored(bench, explainer.name, scorer.name, feature):
                continue  # a failed scoring is tried again
            if not needs_explanation(scorer):
                shared = _shared(bench, scorer.name, explainer.name, feature)
                if shared is not None:
                    bench.results.put_score(shared)
                    continue
            judge = pick_judge(
                bench.judges,
                explained if needs_explanation(scorer) else None,
                reads_output(scorer),
            )
            bench.results.put_score(await scorer.score(explained, examples, judge))


def _scored(bench: Bench, explainer: str, scorer: str, feature: int) -> bool:
    """Whether a number is stored for it (a failed scoring is not one: it is tried
    again)."""
    done = bench.results.score(explainer, scorer, feature)
    return done is not None and done.score is not None


def _shared(bench: Bench, scorer: str, explainer: str, feature: int) -> Score | None:
    """An explanation-free score another explainer of `feature` already got, as
    `explainer`'s: the same number, its judge calls charged once (to the first)."""
    for other in bench.explainers:
        done = bench.results.score(other.name, scorer, feature)
        if other.name != explainer and done is not None and done.score is not None:
            source = done.details.get("shared_from", other.name)
            return done.model_copy(
                update={
                    "explainer": explainer,
                    "details": {**done.details, "shared_from": source},
                    "llm_calls": 0, "llm_tokens": 0, "probe_texts": 0, "seconds": 0.0,
                }
            )  # fmt: skip
    return None


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


def reads_output(scorer: Scorer) -> bool:
    """Whether `scorer` judges an explanation's output claim (the output scorers)."""
    return bool(getattr(scorer, "reads_output", False))


def pick_judge(judges: Sequence[Judge], explained: Explained | None, output: bool = False) -> Judge:
    """The first judge that can read the explanation (None: that can judge without
    one), else one that says why none can. For an `output` scorer, an output predicate
    goes to the predicate judge, which runs it."""
    if output and explained is not None and explained.output_predicate is not None:
        for judge in judges:
            if judge.name == "predicate":
                return judge
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
        self.tried = tried

    def can_judge(self, explained: Explained | None) -> bool:
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

    async def pick_steered(
        self, explained: Explained, prompts: Sequence[str], options: Sequence[Sequence[str]]
    ) -> list[float]:
        raise JudgeUnavailable(self.reason)

    async def intruder(
        self, explained: Explained | None, rounds: Sequence[Sequence[Highlighted]]
    ) -> list[list[float]]:
        if explained is None:
            raise JudgeUnavailable(
                "no judge can find intruders without an explanation (tried: "
                f"{', '.join(self.tried) or 'none'}); that needs an LLM judge: configure "
                "GLOSSATOR_LLM_BASE_URL and GLOSSATOR_LLM_MODEL, or add the local judge"
            )
        raise JudgeUnavailable(self.reason)
