"""What every scorer, judge and explainer of the benchmarks agrees on.

- `Explained`: one explainer's explanation of one feature, with its cost. Explanations
  that carry a predicate (the rules agent, the top-tokens baseline) can be judged by
  running it; prose needs a scorer LLM.
- `ScoringSet`: the held-out examples a feature is scored on. They come from the score
  split (texts no explainer ever saw) or from a whole other corpus (`--score-corpus`),
  drawn with a fixed seed across every activation quantile, plus contexts where the
  feature never fired and activating contexts of other features (intruders), so every
  explainer of a feature is scored on the very same examples.
- `Judge`: what reads an explanation and predicts from it (which examples activate,
  whether a highlighting fits, per-token activations, texts that should activate, which
  example is the intruder). A predicate judge runs the predicate; an LLM judge asks the
  scorer LLM.
- `Scorer`: turns a judge's predictions on a `ScoringSet` into one number (`Score`).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from errors import GlossatorError
from probes.evidence.store import EvidenceStore, Example, FeatureEvidence

SCORE_VERSION = 1
# Intruder rounds (delphi's intruder detection): k of the feature's examples and one
# intruder from another feature; a scoring set draws one intruder per k activating ones.
INTRUDER_K = 4
# Other features tried per intruder wanted (some have no usable held-out example).
INTRUDER_TRIES = 4


class ExplainerCost(BaseModel):
    """What producing the explanation cost (zeros for imported ones)."""

    llm_calls: int = 0
    llm_cached_calls: int = 0  # answered by the response cache: no request, no tokens
    llm_tokens: int = 0
    probe_texts: int = 0
    seconds: float = 0.0


class Explained(BaseModel):
    """An explanation under test."""

    model_config = ConfigDict(frozen=True)

    feature: int
    explainer: str  # "agent", "oneshot", "toptokens", "neuronpedia", ...
    text: str = Field(min_length=1)
    labels: list[str] = []
    predicate: dict[str, Any] | None = None  # agent.rules predicate, when it has one
    # The output side, when the explainer states one: what the feature does to the next
    # token, in prose and (when executable) as a predicate over the promoted tokens.
    output_text: str | None = None
    output_predicate: dict[str, Any] | None = None
    cost: ExplainerCost = ExplainerCost()
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)  # as the explainer states it


class ScoringSet(BaseModel):
    """Held-out examples of one feature: `activating` (each with its quantile bin) and
    `non_activating`, plus the firing threshold tau from the explain split's top."""

    feature: int
    evidence_id: str
    threshold: float
    activating: list[Example]
    quantile_of: list[int]  # per activating example, its quantile bin (0 = weakest)
    non_activating: list[Example]  # random contexts where it never fires
    # Contexts that look like the feature's where it never fires (evals.hard_negatives),
    # each with its kind ("tokens" or "similar").
    hard_negatives: list[Example] = []
    hard_kind: list[str] = []
    # Held-out activating examples of other features, one feature each, with those
    # features' own activations (for the intruder test); never a context where this
    # feature is known to fire.
    intruders: list[Example] = []

    @property
    def examples(self) -> list[Example]:
        """Activating then non-activating."""
        return self.activating + self.non_activating

    @property
    def max_act(self) -> float:
        return max((e.max_act for e in self.activating), default=0.0)


def scoring_set(
    store: EvidenceStore,
    feature: int,
    per_quantile: int = 2,
    non_activating: int = 20,
    seed: int = 0,
    evidence: FeatureEvidence | None = None,
    held_out: EvidenceStore | None = None,
    hard: int = 20,
    intruders: int | None = None,
) -> ScoringSet:
    """The held-out examples of `feature`: up to `per_quantile` from each activation
    quantile of the score split, `non_activating` quiet contexts, `hard` hard negatives
    and `intruders` intruders (default: one per INTRUDER_K activating examples), drawn
    with `seed` (the same set for every explainer). Tau, the top tokens and the similar
    features come from the explain side of `store`: pass its `evidence` when already
    read. The examples come from `held_out` when given (the evidence of a score corpus,
    same features), else from `store`'s score split."""
    from evals.hard_negatives import hard_negatives
    from probes.evidence.threshold import firing_threshold

    evidence = evidence or store.feature(feature)
    held = (held_out or store).scoring_examples(feature, non_activating=non_activating)
    hard_examples, hard_kind = hard_negatives(held_out or store, evidence, hard)
    rng = random.Random(f"{seed}:{feature}")
    activating: list[Example] = []
    quantile_of: list[int] = []
    for b in held.quantiles:
        picked = rng.sample(b.examples, min(per_quantile, len(b.examples)))
        activating += picked
        quantile_of += [b.index] * len(picked)
    own = {e.context for b in held.quantiles for e in b.examples}
    wanted = len(activating) // INTRUDER_K if intruders is None else intruders
    return ScoringSet(
        feature=feature,
        evidence_id=held.evidence_id,
        threshold=firing_threshold(evidence),
        activating=activating,
        quantile_of=quantile_of,
        non_activating=held.non_activating[:non_activating],
        hard_negatives=hard_examples,
        hard_kind=hard_kind,
        intruders=draw_intruders(held_out or store, feature, wanted, seed, own),
    )


def draw_intruders(
    store: EvidenceStore, feature: int, n: int, seed: int, exclude: Collection[int] = ()
) -> list[Example]:
    """Up to `n` held-out activating examples of other features that fire in `store`,
    one per feature, drawn with `seed` (a random feature, a random quantile of it, a
    random example of that quantile, as delphi spreads intruders over quantiles). A
    context in `exclude` or where `feature` fires in the pool is skipped: an intruder on
    which the feature itself fires would not be one."""
    if n <= 0:
        return []
    rng = random.Random(f"{seed}:{feature}:intruders")
    others = [f for f in store.firing_features() if f != feature]
    skip = set(exclude) | set(store.pool_firing([feature]).tolist())
    found: list[Example] = []
    for other in rng.sample(others, min(len(others), INTRUDER_TRIES * n)):
        quantiles = store.scoring_examples(other, non_activating=0).quantiles
        bins = [usable for b in quantiles if (usable := _firing(b.examples, skip))]
        if bins:
            found.append(rng.choice(rng.choice(bins)))
            if len(found) == n:
                break
    return found


def _firing(examples: list[Example], skip: set[int]) -> list[Example]:
    """The examples outside `skip` with a token their feature fires on (one to mark)."""
    return [e for e in examples if e.context not in skip and any(a > 0 for a in e.acts)]


def needs_explanation(scorer: Scorer) -> bool:
    """Whether `scorer`'s number depends on the explanation. One that does not (the
    explanation-free intruder test) measures the dictionary: every explainer of a
    feature gets the same number, and it has no floor."""
    return bool(getattr(scorer, "needs_explanation", True))


class Score(BaseModel):
    """One scorer's verdict on one explanation. `score` is None only with an `error`
    (a failed scoring is reported as failed, never as a number)."""

    version: int = SCORE_VERSION
    feature: int
    explainer: str
    scorer: str
    judge: str  # "predicate", "llm:<model>", "minilm", ...
    score: float | None
    details: dict[str, Any] = {}
    error: str | None = None
    llm_calls: int = 0
    llm_tokens: int = 0
    probe_texts: int = 0
    seconds: float = 0.0


class Highlighted(BaseModel):
    """An example with some tokens highlighted, for fuzzing."""

    example: Example
    marked: list[bool]  # per token of example.tokens


class Judge(Protocol):
    """Reads an explanation and predicts from it. Every method may raise
    `JudgeUnavailable` when this judge cannot read that explanation (e.g. a predicate
    judge given prose)."""

    name: str

    def can_judge(self, explained: Explained | None) -> bool:
        """Whether this judge can read `explained`; with None, whether it can judge
        without any explanation (the explanation-free intruder test)."""
        ...

    async def detect(self, explained: Explained, examples: Sequence[Example]) -> list[float]:
        """Per example, the probability that the feature fires somewhere in it."""
        ...

    async def fuzz(self, explained: Explained, items: Sequence[Highlighted]) -> list[float]:
        """Per item, the probability that the highlighted tokens are where the
        explanation says the feature fires."""
        ...

    async def simulate(
        self, explained: Explained, examples: Sequence[Example]
    ) -> list[list[float]]:
        """Per example, per token, the predicted activation on a 0-10 scale."""
        ...

    async def generate(self, explained: Explained, n: int) -> list[str]:
        """`n` short texts (<= 200 characters) on which the feature should fire."""
        ...

    async def intruder(
        self, explained: Explained | None, rounds: Sequence[Sequence[Highlighted]]
    ) -> list[list[float]]:
        """Per round, per item, the probability that the item is the intruder: the one
        example of another feature among the round's items, each shown with its own
        feature's firing tokens highlighted. With `explained`, judged by the explanation
        of the feature the others share; with None, from the examples alone."""
        ...

    async def pick_steered(
        self, explained: Explained, prompts: Sequence[str], options: Sequence[Sequence[str]]
    ) -> list[float]:
        """Per option, the probability that it is the feature's: each option holds one
        greedy continuation per prompt, written with some feature steered, and only one
        option's feature is the explained one (its output claim decides)."""
        ...


class JudgeUnavailable(GlossatorError):
    """This judge cannot read this explanation (not a failure of the explanation)."""


class Scorer(Protocol):
    name: str

    async def score(self, explained: Explained, examples: ScoringSet, judge: Judge) -> Score: ...
