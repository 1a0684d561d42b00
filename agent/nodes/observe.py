"""Observe: read the feature's evidence and fix the run's firing threshold."""

from __future__ import annotations

import time
from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState

TOP_FOR_THRESHOLD = 10  # SAGE: tau is half the mean max activation of the top-10 exemplars


async def observe(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    evidence = deps.evidence(state.feature)
    top = [e.max_act for e in evidence.top[:TOP_FOR_THRESHOLD]]
    threshold = 0.5 * sum(top) / len(top) if top else 0.0
    return {"threshold": threshold, "started_at": state.started_at or time.time()}
