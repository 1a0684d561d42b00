"""Conclude: the explanation, its evidence, confidence and cost; a budget stop says so."""

from __future__ import annotations

import time
from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState, Explanation


async def conclude(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    evidence = deps.evidence(state.feature)
    conclusion, cost = await deps.think(state, deps.reasoner.conclude(state, evidence))
    seconds = round(time.time() - state.started_at, 3) if state.started_at else 0.0
    cost = cost.model_copy(update={"seconds": seconds})
    stopped_by = state.stop_reason or "decided"
    return {
        "cost": cost,
        "explanation": Explanation(
            feature=state.feature,
            text=conclusion.text,
            labels=conclusion.labels,
            evidence=conclusion.evidence,
            confidence=conclusion.confidence,
            cost=cost,
            stopped_by=stopped_by,
            predicate=conclusion.predicate,
        ),
    }
