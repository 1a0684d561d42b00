"""Observe: read the feature's evidence and fix the run's firing threshold."""

from __future__ import annotations

import time
from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState
from errors import UserError
from probes.evidence.store import FeatureEvidence
from probes.evidence.threshold import firing_threshold


class NothingToExplainError(UserError, ValueError):
    """The feature fired in the evidence, but never in its explain split's examples
    (a rare feature whose few firings fell in the score split): the run fails with
    why, not a guess. A ValueError too, so a worker records it as a feature's failure."""


def check_it_fires(evidence: FeatureEvidence) -> None:
    """NothingToExplainError when the explain split never shows the feature firing."""
    examples = evidence.top + [e for b in evidence.quantiles for e in b.examples]
    if not any(a > 0 for e in examples for a in e.acts):
        raise NothingToExplainError(
            f"feature {evidence.feature} fired {evidence.stats.fired_tokens} time(s) in the "
            f"evidence, never in its explain split ({evidence.evidence_id}): nothing to "
            "explain it from; build the evidence over more text to catch it firing"
        )


async def observe(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    evidence = deps.evidence(state.feature)
    check_it_fires(evidence)
    threshold = firing_threshold(evidence)
    return {"threshold": threshold, "started_at": state.started_at or time.time()}
