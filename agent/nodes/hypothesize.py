"""Hypothesize: the reasoner proposes hypotheses (at least one negative control)."""

from __future__ import annotations

from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState, Hypothesis


async def hypothesize(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    proposed = await deps.reasoner.hypothesize(state, deps.evidence(state.feature))
    start = len(state.hypotheses)
    new = [Hypothesis(id=f"H{start + i + 1}", **p.model_dump()) for i, p in enumerate(proposed)]
    return {"hypotheses": [*state.hypotheses, *new], "cost": deps.llm_cost(state)}
