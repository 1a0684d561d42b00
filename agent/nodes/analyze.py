"""Analyze: the reasoner's verdict on the hypothesis this round tested."""

from __future__ import annotations

from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState, Status


async def analyze(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    if state.testing is None:
        return {}
    target = state.hypothesis(state.testing)
    evidence = deps.evidence(state.feature)
    verdict, cost = await deps.think(state, deps.reasoner.analyze(state, target, evidence))
    update: dict[str, Any] = {"status": verdict.status, "decided_by": verdict.cites}
    if verdict.status is Status.REFINED and verdict.refined_statement:
        update |= {
            "statement": verdict.refined_statement,
            "earlier": [*target.earlier, target.statement],
            "predicate": verdict.refined_predicate,
        }
    hypotheses = [h.model_copy(update=update) if h.id == target.id else h for h in state.hypotheses]
    return {"hypotheses": hypotheses, "cost": cost}
