"""The no-LLM word-list baselines: "fires on the tokens it fires on most".

`toptokens` (the classic one): from the explain split's activating examples (top
contexts and quantile samples), count how often the feature fires on each token,
compared as `agent.rules` predicates compare tokens (surrounding whitespace dropped,
lowercased), and keep the most frequent.

`tokenstats`: from the evidence's token firing table, counted over every firing of the
whole explain split (not only the sampled contexts): the tokens the feature fires on at
least MIN_FIRES times and on at least MIN_PRECISION of their occurrences, most fired
first, at most MAX_WORDS of them.

Each explanation carries the matching `TokenIn` predicate, so it can be judged offline.
"""

from __future__ import annotations

import time
from collections import defaultdict

from evals.core import Explained, ExplainerCost
from evals.explainers.base import check_evidence, explain_examples
from predicates.language import TokenIn, as_dict, normal
from probes.evidence.store import FeatureEvidence

N_TOKENS = 10
MIN_FIRES = 3
MIN_PRECISION = 0.2
MAX_WORDS = 20


class TopTokensExplainer:
    """`n` most frequent firing tokens; ties go to the larger total activation."""

    def __init__(self, n: int = N_TOKENS, name: str = "toptokens") -> None:
        if n < 1:
            raise ValueError(f"TopTokensExplainer needs n >= 1, got {n}")
        self.n = n
        self.name = name

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        start = time.perf_counter()
        check_evidence(self.name, feature, evidence)
        return _listed(self.name, feature, top_tokens(evidence, self.n), start)


class TokenStatsExplainer:
    """The reliably firing tokens of the whole explain split (the evidence's token table)."""

    name = "tokenstats"

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        start = time.perf_counter()
        check_evidence(self.name, feature, evidence)
        if evidence.token_firing is None:
            raise ValueError(
                f"{self.name}: evidence {evidence.evidence_id} has no token firing table; "
                "rebuild it with `glossator evidence build`"
            )
        # a feature that fires on no token reliably falls back to its most frequent ones
        words = reliable_tokens(evidence) or top_tokens(evidence, N_TOKENS)
        return _listed(self.name, feature, words, start)


def _listed(name: str, feature: int, words: list[str], start: float) -> Explained:
    predicate = TokenIn(words=tuple(words))
    return Explained(
        feature=feature,
        explainer=name,
        text=f"Fires on {predicate.describe()}.",
        predicate=as_dict(predicate),
        cost=ExplainerCost(seconds=time.perf_counter() - start),
    )


def reliable_tokens(evidence: FeatureEvidence) -> list[str]:
    """The normalised tokens of the evidence's token firing table that the feature fires
    on often and reliably, most fired first (`tokenstats`)."""
    words: list[str] = []
    for seen in evidence.token_firing or []:
        word = normal(seen.token)
        reliable = seen.fires >= max(MIN_FIRES, MIN_PRECISION * seen.occurrences)
        if word and reliable and word not in words:
            words.append(word)
        if len(words) == MAX_WORDS:
            break
    return words


def top_tokens(evidence: FeatureEvidence, n: int) -> list[str]:
    """The `n` normalised tokens the feature fires on most often, most frequent first."""
    count: dict[str, int] = defaultdict(int)
    total: dict[str, float] = defaultdict(float)
    for example in explain_examples(evidence):
        for token, act in zip(example.tokens, example.acts, strict=True):
            if act > 0:
                word = normal(token)
                count[word] += 1
                total[word] += act
    ranked = sorted(count, key=lambda w: (-count[w], -total[w], w))
    return ranked[:n]
