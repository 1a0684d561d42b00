"""Observe: read the feature's evidence and fix the run's firing threshold."""

from __future__ import annotations

import time
from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState
from probes.evidence.store import FeatureEvidence

TOP_FOR_THRESHOLD = 10  # SAGE: tau is half the mean max activation of the top-10 exemplars


def firing_threshold(evidence: FeatureEvidence) -> float:
    """SAGE's tau: the activation at which the feature counts as firing."""
    top = [e.max_act for e in evidence.top[:TOP_FOR_THRESHOLD]]
    return 0.5 * sum(top) / len(top) if top else 0.0


async def observe(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    threshold = firing_threshold(deps.evidence(state.feature))
    return {"threshold": threshold, "started_at": state.started_at or time.time()}
