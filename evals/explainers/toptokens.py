"""The classic no-LLM baseline: "fires on the tokens it fires on most".

From the explain split's activating examples (top contexts and quantile samples), count
how often the feature fires on each token, compared as `agent.rules` predicates compare
tokens (surrounding whitespace dropped, lowercased), and keep the most frequent. The
explanation carries the matching `TokenIn` predicate, so it can be judged offline.
"""

from __future__ import annotations

import time
from collections import defaultdict

from evals.core import Explained, ExplainerCost
from evals.explainers.base import check_evidence, explain_examples
from predicates.language import TokenIn, as_dict, normal
from probes.evidence.store import FeatureEvidence

N_TOKENS = 10


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
        words = top_tokens(evidence, self.n)
        predicate = TokenIn(words=tuple(words))
        return Explained(
            feature=feature,
            explainer=self.name,
            text=f"Fires on {predicate.describe()}.",
            predicate=as_dict(predicate),
            cost=ExplainerCost(seconds=time.perf_counter() - start),
        )


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
