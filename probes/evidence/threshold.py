"""When a feature counts as firing: SAGE's tau, from the feature's evidence. The agent's
runs, its chat and the scoring sets all use it."""

from __future__ import annotations

from probes.evidence.store import FeatureEvidence

TOP_FOR_THRESHOLD = 10  # SAGE: tau is half the mean max activation of the top-10 exemplars


def firing_threshold(evidence: FeatureEvidence) -> float:
    """SAGE's tau: the activation at which the feature counts as firing."""
    top = [e.max_act for e in evidence.top[:TOP_FOR_THRESHOLD]]
    return 0.5 * sum(top) / len(top) if top else 0.0
