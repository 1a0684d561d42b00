"""Hypothesize: the reasoner proposes hypotheses (at least one negative control)."""

from __future__ import annotations

from typing import Any

from agent.deps import AgentDeps
from agent.nodes.observe import check_it_fires
from agent.state import AgentState, Hypothesis


async def hypothesize(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    evidence = deps.evidence(state.feature)
    check_it_fires(evidence)  # again: a run checkpointed before observe checked resumes here
    proposed, cost = await deps.think(state, deps.reasoner.hypothesize(state, evidence))
    start = len(state.hypotheses)
    new = [Hypothesis(id=f"H{start + i + 1}", **p.model_dump()) for i, p in enumerate(proposed)]
    return {"hypotheses": [*state.hypotheses, *new], "cost": cost}
