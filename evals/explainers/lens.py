"""The logit-lens baseline of the output side (Gur-Arieh et al.'s VocabProj): "promotes
the tokens its decoder direction points at". The explanation is the top promoted tokens
of the evidence's logit lens (the unembedding of the feature's decoder direction),
normalised as predicates compare tokens; it claims nothing about when the feature fires.
"""

from __future__ import annotations

import time

from agent.rules.outputs import claim_statement, word_list
from evals.core import Explained, ExplainerCost
from predicates.language import as_dict
from probes.evidence.store import FeatureEvidence

N_TOKENS = 10


class LogitLensExplainer:
    name = "logitlens"

    def __init__(self, n: int = N_TOKENS) -> None:
        if n < 1:
            raise ValueError(f"LogitLensExplainer needs n >= 1, got {n}")
        self.n = n

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained:
        start = time.perf_counter()
        if evidence.feature != feature:
            raise ValueError(
                f"{self.name}: asked to explain feature {feature} from the evidence of "
                f"feature {evidence.feature}"
            )
        if not evidence.promoted:
            raise ValueError(
                f"{self.name}: evidence {evidence.evidence_id} has no logit lens (a "
                "dictionary without an output side, or evidence built without it)"
            )
        claim = word_list([lens.token for lens in evidence.promoted], self.n)
        if claim is None:
            raise ValueError(f"{self.name}: the logit lens of feature {feature} names no word")
        text = claim_statement(claim)
        return Explained(
            feature=feature,
            explainer=self.name,
            text=text,
            output_text=text,
            output_predicate=as_dict(claim),
            cost=ExplainerCost(seconds=time.perf_counter() - start),
        )
