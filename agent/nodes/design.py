"""Design: test texts for the least-tested open hypothesis (one round)."""

from __future__ import annotations

from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState, Experiment


async def design(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    target = min(state.open_hypotheses(), key=lambda h: (len(state.tests_of(h.id)), h.id))
    room = state.budget.max_probe_texts - state.cost.probe_texts
    evidence = deps.evidence(state.feature)
    proposed, cost = await deps.think(state, deps.reasoner.design(state, target, evidence))
    start = len(state.experiments)
    new = [
        Experiment(id=f"E{start + i + 1}", hypothesis=target.id, **p.model_dump())
        for i, p in enumerate(proposed[: max(room, 0)])
    ]
    return {
        "experiments": [*state.experiments, *new],
        "round": state.round + 1,
        "testing": target.id,
        "cost": cost,
    }
