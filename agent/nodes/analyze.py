"""Analyze: the reasoner's verdict on the hypothesis this round tested (or, with a round
reasoner, on each hypothesis it tested)."""

from __future__ import annotations

from typing import Any, cast

from agent.deps import AgentDeps
from agent.reasoner import RoundReasoner, Verdict, tests_rounds
from agent.state import AgentState, Hypothesis, Status


async def analyze(state: AgentState, deps: AgentDeps) -> dict[str, Any]:
    if state.testing is None:
        return {}
    evidence = deps.evidence(state.feature)
    update: dict[str, Any] = {}
    if state.round_targets and tests_rounds(deps.reasoner):
        targets = [state.hypothesis(h) for h in state.round_targets]
        reasoner = cast(RoundReasoner, deps.reasoner)
        verdicts, cost = await deps.think(state, reasoner.analyze_round(state, targets, evidence))
        decided = any(v.status is not Status.OPEN for v in verdicts.values())
        update["stalled_rounds"] = 0 if decided else state.stalled_rounds + 1
    else:
        target = state.hypothesis(state.testing)
        verdict, cost = await deps.think(state, deps.reasoner.analyze(state, target, evidence))
        verdicts = {target.id: verdict}
    hypotheses = [judged(h, verdicts[h.id]) if h.id in verdicts else h for h in state.hypotheses]
    return {"hypotheses": hypotheses, "cost": cost, **update}


def judged(hypothesis: Hypothesis, verdict: Verdict) -> Hypothesis:
    update: dict[str, Any] = {"status": verdict.status, "decided_by": verdict.cites}
    if verdict.status is Status.REFINED and verdict.refined_statement:
        update |= {
            "statement": verdict.refined_statement,
            "earlier": [*hypothesis.earlier, hypothesis.statement],
            "predicate": verdict.refined_predicate,
        }
    return hypothesis.model_copy(update=update)
