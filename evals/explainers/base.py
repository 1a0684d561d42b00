"""What every explainer of the benchmarks looks like, and how it says it cannot explain."""

from __future__ import annotations

from typing import Protocol

from errors import UserError
from evals.core import Explained
from probes.evidence.store import Example, FeatureEvidence


class Explainer(Protocol):
    """Explains one feature from its explain-split evidence (never the score split)."""

    name: str

    async def explain(self, feature: int, evidence: FeatureEvidence) -> Explained: ...


class NothingToExplainError(UserError):
    """The evidence holds no activation to explain from (the feature never fired in
    the explain split). The explanation is failed, not empty."""


def check_evidence(name: str, feature: int, evidence: FeatureEvidence) -> None:
    """Refuse evidence of another feature, or evidence with nothing that fires."""
    if evidence.feature != feature:
        raise ValueError(
            f"{name}: asked to explain feature {feature} from the evidence of feature "
            f"{evidence.feature}"
        )
    if not any(a > 0 for e in explain_examples(evidence) for a in e.acts):
        raise NothingToExplainError(
            f"{name}: feature {feature} never fired in the explain split of evidence "
            f"{evidence.evidence_id}; there is nothing to explain it from"
        )


def explain_examples(evidence: FeatureEvidence) -> list[Example]:
    """The activating examples an explainer may read: top contexts, then quantile
    samples, each context once (a top context can also be a quantile sample)."""
    seen: set[int] = set()
    out: list[Example] = []
    for e in evidence.top + [e for b in evidence.quantiles for e in b.examples]:
        if e.context not in seen:
            seen.add(e.context)
            out.append(e)
    return out
