"""The run engine: how an agent run is named, driven (started, resumed, or found
finished) on the checkpointed graph, and stored. The CLI, the workers and the HTTP runs
share it."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from identifiers.runs import RunId
from runtime.settings import Settings

if TYPE_CHECKING:
    from agent.state import AgentState, Budget
    from runtime.agent import AgentSetup


def thread_namer(
    settings: Settings, setup: AgentSetup, budget: Budget, suffix: str = ""
) -> Callable[[int], str]:
    """Feature -> the thread id of its run: the same (subject, evidence, feature, run
    configuration) always names the same run, so the same command (or a redelivered job
    message) resumes it, or finds it finished and stores nothing twice. `suffix` names a
    fresh run instead (`--new`; a job's id)."""
    key = run_key(budget, setup.deps.reasoner.name, settings)
    evidence = setup.deps.store.manifest.evidence_id  # a run depends on the evidence it read
    subject = setup.subject.key

    def thread_of(index: int) -> str:
        return str(RunId(subject, evidence, index, f"{key}{suffix}"))

    return thread_of


def run_key(budget: Budget, reasoner: str, settings: Settings) -> str:
    """8 hex digits naming a run's configuration: another budget, reasoner or LLM model
    makes another run, never this one resumed (or, when finished, returned)."""
    model = settings.llm_model if settings.llm_base_url else None
    recipe = f"{budget.model_dump_json()}|{reasoner}|{model or ''}"
    return hashlib.blake2b(recipe.encode(), digest_size=4).hexdigest()


def store_run(
    settings: Settings,
    setup: AgentSetup,
    state: AgentState,
    thread: str,
    budget: Budget,
    client: Any = None,
) -> str:
    """Record the run's explanation (through `client`, else a new connection); returns
    what the store decided."""
    from agent.explanations import ExplanationRecord, ExplanationStore
    from runtime.redis_server import connect

    if state.explanation is None:
        raise ValueError(f"the run {thread} ended without an explanation")
    outcome = ExplanationStore(client or connect(settings), setup.subject).record(
        ExplanationRecord(
            explanation=state.explanation,
            run_id=thread,
            explainer=setup.deps.reasoner.name,
            config=budget.model_dump(),
        )
    )
    return outcome.reason


async def drive(
    graph: Any, start: AgentState, thread: str, on_state: Callable[[AgentState], None] | None
) -> AgentState:
    """Run (or resume, or return the finished state of) one thread of the graph."""
    from agent.checkpointer import DURABILITY
    from agent.state import AgentState

    config: Any = {"configurable": {"thread_id": thread}, "recursion_limit": 500}
    saved = await graph.aget_state(config)
    if finished(saved):
        return AgentState.model_validate(saved.values)
    # A node is next: resume from the checkpoint (input None). Else start (again: a run
    # killed before its first step's checkpoint did nothing yet).
    resume = bool(saved.values and saved.next)
    state = AgentState.model_validate(saved.values) if resume else start
    given = None if resume else start
    async for values in graph.astream(given, config, stream_mode="values", durability=DURABILITY):
        state = AgentState.model_validate(values)
        if on_state is not None:
            on_state(state)
    return state


def finished(saved: Any) -> bool:
    """Whether a thread's state snapshot (`graph.aget_state`) is a finished run. Not just
    "nothing next": a run killed right after its input checkpoint shows values and no
    next node too, with its start task still listed (measured with SIGKILL), and
    LangGraph does not resume that one."""
    return bool(saved.values) and not saved.next and not saved.tasks


@contextlib.asynccontextmanager
async def checkpointed_graph(settings: Settings, setup: AgentSetup) -> AsyncIterator[Any]:
    """The agent graph with its Redis checkpointer; the run's connections close after."""
    from agent.checkpointer import async_redis_checkpointer
    from agent.graph import build_graph
    from runtime.redis_server import redis_url

    async with async_redis_checkpointer(redis_url(settings)) as saver:
        try:
            yield build_graph(setup.deps).compile(checkpointer=saver)
        finally:
            await setup.deps.aclose()
