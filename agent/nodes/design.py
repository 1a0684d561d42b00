"""Design: test texts for the least-tested open hypothesis (one round), or, with a round
reasoner, for every open hypothesis at once."""

from __future__ import annotations

from typing import Any, cast

from agent.deps import AgentDeps
from agent.reasoner import NewExperiment, RoundReasoner, tests_rounds
from agent.state import AgentState, Experiment
from probes.evidence.store import FeatureEvidence


async def design(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    room = max(state.budget.max_probe_texts - state.cost.probe_texts, 0)
    evidence = deps.evidence(state.feature)
    if tests_rounds(deps.reasoner):
        return await _design_round(state, deps, room, evidence)
    target = min(state.open_hypotheses(), key=lambda h: (len(state.tests_of(h.id)), h.id))
    proposed, cost = await deps.think(state, deps.reasoner.design(state, target, evidence))
    start = len(state.experiments)
    new = [
        Experiment(id=f"E{start + i + 1}", hypothesis=target.id, **p.model_dump())
        for i, p in enumerate(proposed[:room])
    ]
    return {
        "experiments": [*state.experiments, *new],
        "round": state.round + 1,
        "testing": target.id,
        "cost": cost,
    }


async def _design_round(
    state: AgentState, deps: AgentDeps, room: int, evidence: FeatureEvidence
) -> dict[str, Any]:
    reasoner = cast(RoundReasoner, deps.reasoner)
    targets = sorted(state.open_hypotheses(), key=lambda h: (len(state.tests_of(h.id)), h.id))
    proposed, cost = await deps.think(state, reasoner.design_round(state, targets, evidence))
    picked = fair_share([(t.id, proposed.get(t.id, [])) for t in targets], room)
    start = len(state.experiments)
    new = [
        Experiment(id=f"E{start + i + 1}", hypothesis=h, **p.model_dump())
        for i, (h, p) in enumerate(picked)
    ]
    tested = list(dict.fromkeys(e.hypothesis for e in new))
    return {
        "experiments": [*state.experiments, *new],
        "round": state.round + 1,
        "testing": tested[0] if tested else targets[0].id,
        "round_targets": tested,
        "cost": cost,
    }


def fair_share(
    proposals: list[tuple[str, list[NewExperiment]]], room: int
) -> list[tuple[str, NewExperiment]]:
    """At most `room` of the proposed tests, taken in turns from each hypothesis (so a
    short probe budget leaves none untested), grouped by hypothesis in the given order."""
    taken = dict.fromkeys((h for h, _ in proposals), 0)
    depth = 0
    while room > 0 and any(depth < len(p) for _, p in proposals):
        for h, p in proposals:
            if depth < len(p) and room > 0:
                taken[h] += 1
                room -= 1
        depth += 1
    return [(h, e) for h, p in proposals for e in p[: taken[h]]]
