"""The rules backend's hypotheses: rival predicates synthesised from a feature's evidence,
plus a negative control, each as a `Hypothesis` carrying its executable predicate."""

from __future__ import annotations

from agent.rules.synthesis import Labeled, Synthesis, synthesize_many
from agent.state import Hypothesis
from predicates.language import AllOf, Neighbour, Not, TokenView, as_dict
from probes.evidence.store import Example, FeatureEvidence


def labeled(examples: list[Example]) -> list[Labeled]:
    """Examples as token views (their left context first, unlabelled) with, per token,
    whether the feature fired."""
    return [
        Labeled(TokenView.of(e.before + e.tokens), tuple(a > 0 for a in e.acts), len(e.before))
        for e in examples
    ]


def evidence_data(evidence: FeatureEvidence) -> list[Labeled]:
    """Everything the explainer may see: top contexts, quantile samples, and contexts
    where the feature never fires."""
    quantiles = [e for b in evidence.quantiles for e in b.examples]
    return labeled(evidence.top + quantiles + evidence.non_activating)


RIVALS = 3  # hypotheses synthesised from the evidence, besides the control


def hypotheses_from_evidence(evidence: FeatureEvidence, n: int = RIVALS) -> list[Hypothesis]:
    """Up to n rival hypotheses (best first) and a negative control (`hypotheses_from`)."""
    return hypotheses_from(synthesize_many(evidence_data(evidence), n))


def hypotheses_from(found: list[Synthesis]) -> list[Hypothesis]:
    """The syntheses as hypotheses, best first, and a negative control: "it fires on the
    tokens just before" what the best one names (and not on those), which a feature
    that responds to the tokens themselves refutes."""
    out = [
        Hypothesis(
            id=f"H{i + 1}",
            statement=f"Fires on {s.predicate.describe()}.",
            fires_on=s.predicate.describe(),
            not_on="any other token",
            predicate=as_dict(s.predicate),
        )
        for i, s in enumerate(found)
    ]
    best = found[0].predicate
    control = AllOf(parts=(Neighbour(offset=1, inner=best), Not(inner=best)))
    out.append(
        Hypothesis(
            id=f"H{len(out) + 1}",
            statement=f"Fires on the tokens right before {best.describe()}, not on them.",
            fires_on=f"the tokens right before {best.describe()}",
            not_on=best.describe(),
            negative_control=True,
            predicate=as_dict(control),
        )
    )
    return out
