"""Run: the new experiments' texts through the model and SAE (or planted features),
batched with every other run sharing the probe runner."""

from __future__ import annotations

from typing import Any

from agent.deps import AgentDeps
from agent.state import AgentState, Outcome


async def run(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    pending = [e for e in state.experiments if e.outcome is None]
    if not pending:
        return {}
    results = await deps.probe.run([e.text for e in pending], state.feature)
    outcomes = {
        e.id: Outcome(
            max_act=r.max_act,
            peak_token=r.tokens[r.peak] if r.peak is not None else None,
            peak_index=r.peak,
            tokens=list(r.tokens),
            acts=list(r.acts),
            fired=r.max_act >= state.threshold > 0,
        )
        for e, r in zip(pending, results, strict=True)
    }
    experiments = [
        e.model_copy(update={"outcome": outcomes[e.id]}) if e.id in outcomes else e
        for e in state.experiments
    ]
    cost = state.cost.model_copy(update={"probe_texts": state.cost.probe_texts + len(pending)})
    return {"experiments": experiments, "cost": cost}
