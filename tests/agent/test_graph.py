"""The whole agent loop, offline: the rules reasoner on planted features, probes run for
real through the shared runner, state kept by the plain-Redis checkpointer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.checkpointer import DURABILITY, async_redis_checkpointer
from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.rules.pool import retrieval_pool
from agent.rules.reasoner import RulesReasoner
from agent.state import AgentState, Budget, Status
from probes.evidence.config import EXPLAIN
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures
from probes.probe_runner import ProbeRunner
from runtime.redis_server import EmbeddedRedis

Planted = tuple[EvidenceStore, PlantedFeatures]


@pytest.fixture(scope="module")
def deps(planted_evidence: Planted) -> AgentDeps:
    store, planted = planted_evidence
    return AgentDeps(RulesReasoner(retrieval_pool(store, 1500)), ProbeRunner(planted), store)


def run_all(deps: AgentDeps, states: list[AgentState]) -> list[AgentState]:
    graph = build_graph(deps).compile()

    async def main() -> list[AgentState]:
        outs = await asyncio.gather(*(graph.ainvoke(s, {"recursion_limit": 200}) for s in states))
        return [AgentState.model_validate(o) for o in outs]

    return asyncio.run(main())


def test_concurrent_runs_explain_planted_features(
    deps: AgentDeps, planted_evidence: Planted
) -> None:
    store, planted = planted_evidence
    names = ["digits", "word-love", "ing-words"]
    before = deps.probe.forward_calls
    states = run_all(deps, [AgentState(feature=planted.feature_index(n)) for n in names])
    for name, state in zip(names, states, strict=True):
        explanation = state.explanation
        assert explanation is not None and explanation.stopped_by == "decided", name
        assert explanation.confidence > 0.8 and explanation.evidence
        assert {e.id for e in state.experiments} >= set(explanation.evidence)
        assert all(e.outcome is not None for e in state.experiments)
        control = [h for h in state.hypotheses if h.negative_control]
        assert len(control) == 1 and control[0].status is Status.REFUTED
        assert len([h for h in state.hypotheses if not h.negative_control]) >= 3
        assert state.cost.probe_texts == len(state.experiments) > 0
        assert state.cost.llm_calls == state.cost.llm_tokens == 0  # rules: no LLM
        # Experiments come from the explain side only.
        explain_texts = {store.context_text(c) for c in store.contexts_in_split(EXPLAIN).tolist()}
        for e in state.experiments:
            if e.expect.value == "high":
                assert any(e.text.strip() in t for t in explain_texts)
    assert "digits" in states[0].explanation.text if states[0].explanation else False
    assert "ing" in states[2].explanation.text if states[2].explanation else False
    rounds = sum(s.round for s in states)
    assert deps.probe.forward_calls - before < rounds  # probes of concurrent runs coalesced


@pytest.mark.parametrize(
    ("budget", "stop"),
    [(Budget(max_rounds=1), "budget: rounds"), (Budget(max_probe_texts=3), "budget: probe texts")],
    ids=["rounds", "probe-texts"],
)
def test_budget_stop_concludes_and_says_so(
    deps: AgentDeps, planted_evidence: Planted, budget: Budget, stop: str
) -> None:
    _, planted = planted_evidence
    tight = AgentState(feature=planted.feature_index("word-love"), budget=budget)
    (state,) = run_all(deps, [tight])
    assert state.round == 1 and state.explanation is not None
    assert state.explanation.stopped_by == stop
    assert [h.status for h in state.hypotheses].count(Status.OPEN) >= 2
    assert state.cost.probe_texts == len(state.experiments) <= budget.max_probe_texts


def test_state_lives_in_redis_by_thread(
    deps: AgentDeps, planted_evidence: Planted, redis_server: EmbeddedRedis
) -> None:
    _, planted = planted_evidence
    feature = planted.feature_index("digits")

    async def main() -> tuple[Any, Any]:
        async with async_redis_checkpointer(redis_server.url) as saver:
            graph = build_graph(deps).compile(checkpointer=saver)
            config: Any = {"configurable": {"thread_id": "graph-test-digits"}}
            first = await graph.ainvoke(AgentState(feature=feature), config, durability=DURABILITY)
            stored = await graph.aget_state(config)
            return first, stored

    first, stored = asyncio.run(main())
    assert stored.next == ()  # finished: nothing left to run for this thread
    saved = AgentState.model_validate(stored.values)
    assert saved.explanation == AgentState.model_validate(first).explanation
