"""The checkpointer revives the agent's state types because they are registered, not by
LangGraph's permissive default (issue 16, item 11): that default warns that it will
block unregistered types in a future version, which would break resuming runs after an
upgrade. A run is interrupted and resumed with that future in effect (strict mode), and
any serde warning fails the test."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterator
from enum import Enum
from typing import Any

import pytest
from langgraph.checkpoint.serde import _msgpack
from langgraph.checkpoint.serde.event_hooks import SerdeEvent, register_serde_event_listener
from pydantic import BaseModel

import agent.state
from agent.checkpointer import CHECKPOINTED_TYPES, DURABILITY, async_redis_checkpointer
from agent.deps import AgentDeps
from agent.graph import build_graph
from agent.rules.pool import retrieval_pool
from agent.rules.reasoner import RulesReasoner
from agent.state import AgentState, Cost, Explanation, Hypothesis, Status
from probes.evidence.build import build_evidence
from probes.evidence.sources import SourceChunkReader
from probes.evidence.store import EvidenceStore
from probes.planted import PlantedFeatures, default_spec_path
from probes.probe_runner import ProbeRunner
from runtime.redis_server import EmbeddedRedis

PARTS = [
    "I love long walks by the sea",
    "she loved the old garden",
    "the red computer hums",
    "two cats sat on a mat",
    "what time is it now?",
    "In 1984 version 42 shipped",
]


@pytest.fixture(scope="module")
def planted_deps(
    tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer: Any
) -> tuple[EvidenceStore, PlantedFeatures]:
    """Planted evidence over 300 short texts: enough for the rules agent to run."""
    planted = PlantedFeatures.from_file(default_spec_path(), smollm2_tokenizer)
    texts = [f"{PARTS[i % 6]}, and {PARTS[(3 * i + 1) % 6]}. Note {i}." for i in range(300)]
    folder = tmp_path_factory.mktemp("serde-evidence")
    build_evidence(
        SourceChunkReader(planted, smollm2_tokenizer), texts, folder, {"kind": "planted"}
    )
    return EvidenceStore(folder, smollm2_tokenizer), planted


@pytest.fixture
def serde_events() -> Iterator[list[SerdeEvent]]:
    """Every allowlist event LangGraph's serializer emits (each unregistered or blocked
    type it meets: its log warning is only written once per process)."""
    events: list[SerdeEvent] = []
    unregister = register_serde_event_listener(events.append)
    yield events
    unregister()


async def interrupted_then_resumed(
    url: str, store: EvidenceStore, planted: PlantedFeatures, thread: str
) -> tuple[AgentState, Any]:
    """Start a run that stops after its first design step, then resume it (input None)
    from its checkpoint until it ends, as `glossator explain` resumes a killed run."""
    deps = AgentDeps(RulesReasoner(retrieval_pool(store, 300)), ProbeRunner(planted), store)
    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 200}
    start = AgentState(feature=planted.feature_index("word-love"))
    try:
        async with async_redis_checkpointer(url) as saver:
            graph = build_graph(deps).compile(checkpointer=saver, interrupt_after=["design"])
            await graph.ainvoke(start, config, durability=DURABILITY)
            stopped = await graph.aget_state(config)
            assert stopped.next, "the run should stop after design, unfinished"
            while (await graph.aget_state(config)).next:
                await graph.ainvoke(None, config, durability=DURABILITY)
            saved = await graph.aget_state(config)
    finally:
        await deps.aclose()
    return AgentState.model_validate(saved.values), saved.values


def test_a_run_resumes_with_unregistered_types_blocked(
    planted_deps: tuple[EvidenceStore, PlantedFeatures],
    redis_server: EmbeddedRedis,
    serde_events: list[SerdeEvent],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # LANGGRAPH_STRICT_MSGPACK=true, read when a serializer is made: the future default
    monkeypatch.setattr(_msgpack, "STRICT_MSGPACK_ENABLED", True)
    store, planted = planted_deps
    with caplog.at_level(logging.WARNING, logger="langgraph"):
        state, values = asyncio.run(
            interrupted_then_resumed(redis_server.url, store, planted, "serde-strict")
        )
    assert not serde_events, serde_events  # nothing unregistered, nothing blocked
    serde_warnings = [r for r in caplog.records if "serde" in r.name]
    assert not serde_warnings, [r.getMessage() for r in serde_warnings]
    # revived as the agent's own types, not as the payloads a blocked type leaves
    assert isinstance(values["cost"], Cost) and isinstance(values["explanation"], Explanation)
    assert all(isinstance(h, Hypothesis) for h in values["hypotheses"])
    assert all(isinstance(h.status, Status) for h in values["hypotheses"])
    assert state.explanation is not None and state.round >= 1
    assert state.cost.probe_texts == len(state.experiments) > 0


def test_a_resumed_run_warns_about_no_type(
    planted_deps: tuple[EvidenceStore, PlantedFeatures],
    redis_server: EmbeddedRedis,
    serde_events: list[SerdeEvent],
) -> None:
    """LangGraph's default today: every unregistered type it revives is an event."""
    store, planted = planted_deps
    asyncio.run(interrupted_then_resumed(redis_server.url, store, planted, "serde-default"))
    assert not serde_events, serde_events


def test_every_state_type_is_registered() -> None:
    """A model or enum added to agent.state is checkpointed too: register it."""
    defined = {
        value
        for value in vars(agent.state).values()
        if inspect.isclass(value)
        and value.__module__ == agent.state.__name__
        and issubclass(value, BaseModel | Enum)
    }
    assert defined == set(CHECKPOINTED_TYPES)
