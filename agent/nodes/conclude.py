"""Conclude: the explanation, its evidence, confidence and cost; a budget stop says so.
The output side, when steering confirmed a claim, is stated beside the input side."""

from __future__ import annotations

import time
from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState, Explanation, Status


async def conclude(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    evidence = deps.evidence(state.feature)
    conclusion, cost = await deps.think(state, deps.reasoner.conclude(state, evidence))
    seconds = round(time.time() - state.started_at, 3) if state.started_at else 0.0
    cost = cost.model_copy(update={"seconds": seconds})
    stopped_by = state.stop_reason or "decided"
    # The output side: the first claim steering confirmed (reasoners propose best first).
    output = next(
        (h for h in state.hypotheses if h.side == "output" and h.status is Status.CONFIRMED),
        None,
    )
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
            output_text=output.statement if output else None,
            output_predicate=output.predicate if output else None,
        ),
    }
